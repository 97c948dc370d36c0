"""The ``goldilocks`` command: ``run``, ``list``, ``plot``, ``diagnose``, ``sweep``,
``collect``."""

from goldilocks_zone.cli.main import main

__all__ = ["main"]
