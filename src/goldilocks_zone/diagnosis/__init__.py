"""Is a model's initialisation in the Goldilocks zone, how sure is that, and what to change?

- :mod:`.inputs`: data formats, dtype/device names, which parameters are measured and scaled;
- :mod:`.measure`: κ, π, ‖G‖, ‖H‖ along the scale or temperature axis over several bases
  (and inits), and the timing probe that fits N and d to a time budget;
- :mod:`.verdict`: confidence intervals, the verdict and the advice;
- :mod:`.report`, :mod:`.figure`: the :class:`Diagnosis` with its plain-language report, and
  its figure;
- :mod:`.folder`: the run folder (manifest, table, report, figure) and its redraw;
- :mod:`.api`: :func:`diagnose`, which ties them together.

Built on the curvature engine, the models, data and the theory only.
"""

from goldilocks_zone.diagnosis.api import diagnose
from goldilocks_zone.diagnosis.inputs import first_samples
from goldilocks_zone.diagnosis.report import Diagnosis
from goldilocks_zone.diagnosis.verdict import Interval, Verdict

__all__ = ["Diagnosis", "Interval", "Verdict", "diagnose", "first_samples"]
