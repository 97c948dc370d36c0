"""TensorBoard scalars for the curvature monitor (optional extra ``tensorboard``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: Row fields that are bookkeeping, not curves.
NON_SCALARS = frozenset({"step", "status", "reason"})


def make_writer(target: Any) -> Any:
    """``target`` itself when it has ``add_scalar`` (a ``SummaryWriter``); a new
    ``torch.utils.tensorboard.SummaryWriter(log_dir=target)`` for a path."""
    if hasattr(target, "add_scalar"):
        return target
    if not isinstance(target, (str, Path)):
        raise TypeError("writer must be a SummaryWriter (anything with add_scalar) or a log "
                        f"directory; got {type(target).__name__}")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard itself is missing
        raise ImportError("TensorBoard logging needs the 'tensorboard' package: "
                          "pip install 'goldilocks-zone[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(target))


def write_scalars(writer: Any, row: dict[str, Any], step: int, *,
                  prefix: str = "curvature/") -> list[str]:
    """Write the finite numeric fields of a monitor row as scalars ``prefix + name`` at
    ``step``, plus ``prefix + "skipped"`` (1 for a skipped or partial measurement, else 0).
    Returns the tags written."""
    tags = []
    for name, value in row.items():
        if (name in NON_SCALARS or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            continue
        writer.add_scalar(prefix + name, float(value), step)
        tags.append(prefix + name)
    writer.add_scalar(prefix + "skipped", float(row.get("status") != "measured"), step)
    tags.append(prefix + "skipped")
    return tags
