"""Is a model's initialisation in the Goldilocks zone, and why? Built on the curvature engine
and the theory only."""

from goldilocks_zone.diagnosis.core import Diagnosis, cli_main, diagnose, load_model

__all__ = ["Diagnosis", "cli_main", "diagnose", "load_model"]
