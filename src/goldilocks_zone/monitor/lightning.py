"""A PyTorch Lightning callback around :class:`~goldilocks_zone.monitor.CurvatureMonitor`
(optional extra ``lightning``).

>>> trainer = lightning.Trainer(callbacks=[CurvatureCallback((x_held, y_held), every=50)])
>>> trainer.fit(module)
>>> trainer.callbacks[0].monitor.table()

The LightningModule itself is monitored, so its ``forward`` must return logits (batch, K).
Measurements happen after optimiser steps, at ``trainer.global_step`` (once per step, so
gradient accumulation does not measure twice); the rows' finite scalars also go to the
trainer's logger under ``curvature/``.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        raise ImportError("the Lightning callback needs PyTorch Lightning: "
                          "pip install 'goldilocks-zone[lightning]'") from exc

from goldilocks_zone.monitor.core import CurvatureMonitor
from goldilocks_zone.monitor.tensorboard import NON_SCALARS


class CurvatureCallback(Callback):
    """Build a :class:`CurvatureMonitor` on the module at ``fit`` start and step it after
    every training batch. ``monitor_kwargs`` go to :class:`CurvatureMonitor` (``every``,
    ``dim``, ``num_samples``, ``seed``, ``top_k``, ``budget_s``, ...)."""

    def __init__(self, data: Any, *, log_to_logger: bool = True, **monitor_kwargs: Any):
        super().__init__()
        self.data = data
        self.log_to_logger = log_to_logger
        self.monitor_kwargs = monitor_kwargs
        self.monitor: CurvatureMonitor | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.monitor is None or self.monitor.model is not pl_module:
            self.monitor = CurvatureMonitor(pl_module, self.data, **self.monitor_kwargs)
        self._step(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step(trainer)

    def _step(self, trainer) -> None:
        row = self.monitor.step(int(trainer.global_step))
        if row is None or not self.log_to_logger or trainer.logger is None:
            return
        metrics = {f"curvature/{k}": float(v) for k, v in row.items()
                   if k not in NON_SCALARS and isinstance(v, (int, float))}
        metrics["curvature/skipped"] = float(row["status"] != "measured")
        trainer.logger.log_metrics(metrics, step=int(trainer.global_step))
