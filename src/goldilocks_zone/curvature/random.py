"""Every random-number generator of the package is built here, from a seed.

One seed gives one stream on every device and in every dtype: torch generators live on the
CPU (draw there, then move the tensor), so results do not depend on where they are used.
``seed=None`` draws a fresh seed from the operating system (non-reproducible on purpose).
"""

from __future__ import annotations

import secrets

import numpy as np
import torch


def _check(seed: int | None) -> int:
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    return int(seed)


def torch_generator(seed: int | None) -> torch.Generator:
    """A CPU :class:`torch.Generator` seeded with ``seed`` (a fresh OS seed for ``None``)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_check(seed))
    return gen


def numpy_generator(seed: int | None, stream: int | None = None) -> np.random.Generator:
    """A NumPy :class:`~numpy.random.Generator` (PCG64) seeded with ``seed`` (a fresh OS seed
    for ``None``); ``stream`` selects an independent child stream of the same seed (a
    ``SeedSequence`` spawn key), e.g. one per data split."""
    if stream is None:
        return np.random.default_rng(_check(seed))
    return np.random.default_rng(np.random.SeedSequence(_check(seed), spawn_key=(int(stream),)))
