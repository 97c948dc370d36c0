"""The papers' formulas as pure functions on tensors: P1's Gauss-Newton theory (Eq. 9, Eq. 10,
Γ_p) in :mod:`~goldilocks_zone.theory.formulas` and P2's random model of gradients and Hessians
in :mod:`~goldilocks_zone.theory.random_model`. No model code lives here."""

from goldilocks_zone.theory import formulas
from goldilocks_zone.theory.formulas import *  # noqa: F403 - exactly formulas' public names

__all__ = list(formulas.__all__)
