"""Experiments of the three papers, one module each (catalogue: SCIENCE.md §9).

Importing this package imports every experiment module in this folder, and each registers
itself; see :mod:`.base` for the protocol. Infrastructure modules are listed in ``_INFRA``.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from goldilocks_zone.experiments._shared.base import Experiment, RunContext, get, names, register

__all__ = ["Experiment", "RunContext", "get", "names", "register"]

_INFRA: set[str] = set()  # shared helpers live in the _shared subpackage

for _info in _pkgutil.iter_modules(__path__):
    if _info.name not in _INFRA and not _info.name.startswith("_"):
        _importlib.import_module(f"{__name__}.{_info.name}")
