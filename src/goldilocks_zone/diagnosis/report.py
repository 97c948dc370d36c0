"""The result of a diagnosis: plain-language report first, numbers after, a glossary; a
JSON-friendly summary (from which the figure can be redrawn)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from goldilocks_zone.diagnosis.figure import draw
from goldilocks_zone.diagnosis.verdict import Interval, Verdict

__all__ = ["GLOSSARY", "Diagnosis"]

GLOSSARY = (
    ("κ", "positive curvature Tr H / ‖H‖_F of the loss Hessian H restricted to a random "
          "d-dimensional subspace of the parameters; between −√d and √d, clearly positive in "
          "the Goldilocks zone, near 0 outside it."),
    ("π", "fraction of the subspace Hessian's eigenvalues that are positive (0.5: as many "
          "directions curve down as up)."),
    ("G-term", "the Gauss–Newton part of the Hessian, J^T ∇²ℓ J: never negative; it is what "
               "makes curvature positive."),
    ("H-term", "the rest, Σ (softmax residual) × second derivatives of the logits: symmetric "
               "around 0; when it dominates, κ ≈ 0."),
    ("zone", "the range of the axis where the mean κ is at least zone_fraction × its peak."),
    ("α", "weight scale: the scaled parameters are multiplied by α (α = 1: as initialised)."),
    ("T", "softmax temperature: the logits are divided by T (T = 1: as initialised)."),
    ("margin", "κ(1) − zone_fraction × κ(peak), per basis and init; > 0 means inside."),
)

_LABELS = {
    "in the zone": "IN the Goldilocks zone",
    "below": "BELOW the Goldilocks zone: the logits are too small",
    "above": "ABOVE the Goldilocks zone: the logits are too large",
    "borderline": "BORDERLINE: can't tell at this budget",
}


@dataclass(frozen=True)
class Diagnosis:
    """Where a model's initialisation sits relative to the Goldilocks zone, with uncertainty.

    ``table`` is the tidy measurement (one row per init, basis and axis value: κ, π, ‖G_R‖₂,
    ‖H_R‖₂, loss, accuracy, prior mismatch); ``verdict`` holds the decision, the zone, the
    intervals and the advice. Scalars without an interval (loss, accuracy, norms, top-class
    probability) are at the current point (axis value 1), averaged over inits and bases.
    """

    model_name: str
    axis: str
    verdict: Verdict
    num_params: int
    num_measured: int
    num_scaled: int
    scaled_what: str
    axis_meaning: str
    homogeneous: bool
    degree: int | None
    homogeneity_reason: str
    num_samples: int
    num_classes: int
    dim: int
    num_bases: int
    num_inits: int
    seed: int
    zone_fraction: float
    train_mode: bool
    budget_note: str
    seconds: float
    loss: float
    accuracy: float
    top_probability: float
    prior_mismatch: float
    g_spectral_norm: float
    h_spectral_norm: float
    table: pd.DataFrame = field(repr=False)

    @property
    def label(self) -> str:
        """``"in the zone"``, ``"below"``, ``"above"`` or ``"borderline"``."""
        return self.verdict.label

    @property
    def positive_curvature(self) -> Interval:
        return self.verdict.kappa_now

    @property
    def fraction_positive(self) -> Interval:
        return self.verdict.pi_now

    @property
    def zone(self) -> tuple[float, float] | None:
        return self.verdict.zone

    @property
    def multiplier(self) -> float | None:
        return self.verdict.multiplier

    def report(self) -> str:
        v = self.verdict
        sym = "α" if self.axis == "scale" else "T"
        reps = f"{self.num_bases} bases" + (f" × {self.num_inits} inits"
                                            if self.num_inits > 1 else "")
        lines = [f"Goldilocks-zone diagnosis{f' of {self.model_name}' if self.model_name else ''}",
                 "",
                 f"Verdict: {_LABELS[v.label]}.",
                 f"  Why: {v.reason}",
                 f"  What to do: {v.advice}",
                 "",
                 f"Numbers (mean ± 95% interval over {reps}; current point {sym} = 1):",
                 f"  κ now         = {v.kappa_now}   (range ±{math.sqrt(self.dim):.2g} for "
                 f"d = {self.dim})",
                 f"  π now         = {v.pi_now}"]
        if v.zone is not None:
            lines += [f"  zone          = {sym} in [{v.zone[0]:.3g}, {v.zone[1]:.3g}]; peak "
                      f"κ = {v.peak_kappa} at {sym}* = {v.peak:.3g}"]
        else:
            lines += ["  zone          = none found along this axis"]
        lines += [f"  margin        = {v.margin}   (κ now − {self.zone_fraction:g} × peak κ; "
                  "> 0 inside)",
                  f"  ‖G_R‖₂ = {self.g_spectral_norm:.3g}, ‖H_R‖₂ = {self.h_spectral_norm:.3g}",
                  f"  loss = {self.loss:.4g} (log K = {math.log(self.num_classes):.4g}), "
                  f"accuracy = {self.accuracy:.3f}, top-class probability = "
                  f"{self.top_probability:.3f}, prior mismatch = {self.prior_mismatch:.3g}",
                  "",
                  "Measured:",
                  f"  D = {self.num_params:,} parameters, {self.num_measured:,} in the random "
                  f"subspaces ({'trainable only' if self.num_measured < self.num_params else 'all'}"
                  f"); N = {self.num_samples} samples, K = {self.num_classes} classes, "
                  f"{'train' if self.train_mode else 'eval'} mode",
                  f"  {self.budget_note}; {self.seconds:.1f} s",
                  f"  homogeneous: {f'yes, degree L = {self.degree}' if self.homogeneous else 'no'}"
                  f" ({self.homogeneity_reason})",
                  f"  axis: {self.axis_meaning}",
                  "",
                  "Glossary:"]
        lines += [f"  {name:7s} {text}" for name, text in GLOSSARY]
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """Everything but the table, JSON-friendly (intervals as ``{mean, half_width, n}``)."""
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__
                               if name not in ("table", "verdict")}
        out["verdict"] = {name: value.as_dict() if isinstance(value, Interval) else value
                          for name, value in vars(self.verdict).items()}
        out["verdict"]["zone"] = list(self.verdict.zone) if self.verdict.zone else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """:meth:`summary` plus the table as a list of records."""
        return {**self.summary(), "table": self.table.to_dict("records")}

    def plot(self, path: str | Path) -> list[Path]:
        """Draw the figure (see :func:`goldilocks_zone.diagnosis.figure.draw`)."""
        return draw(self.table, self.summary(), path)
