"""Reading TOML files (experiment configs, sweep specs) with one clear error for the user."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: str | Path, *, what: str = "TOML file",
              error: Callable[[str], BaseException] = ValueError) -> dict[str, Any]:
    """The parsed contents of the TOML file ``path``.

    A ``path`` that is not a file raises ``error(f"{what} {path} does not exist")``; one that
    does not parse raises ``error(f"{what} {path} is not valid TOML: {reason}")``."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} does not exist")
    with p.open("rb") as fh:
        try:
            return tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise error(f"{what} {p} is not valid TOML: {exc}") from None
