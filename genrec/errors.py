"""Errors shared by every layer, in a module that imports nothing of genrec's."""
from __future__ import annotations

import tempfile
from pathlib import Path


class DataError(ValueError):
    """Bad or missing input data. The message names the file (and line or column) and the fix."""


def check_range(key: str, value: float, *, at_least: float | None = None, above: float | None = None,
                below: float | None = None, at_most: float | None = None) -> None:
    """Refuse a numeric option outside its range, naming its config key; NaN fails every bound."""
    bounds = [(at_least, ">=", lambda v, b: v >= b), (above, ">", lambda v, b: v > b),
              (below, "<", lambda v, b: v < b), (at_most, "<=", lambda v, b: v <= b)]
    given = [(bound, sign, holds) for bound, sign, holds in bounds if bound is not None]
    if not all(holds(value, bound) for bound, _, holds in given):
        wanted = " and ".join(f"{sign} {bound}" for bound, sign, _ in given)
        raise ValueError(f"{key} must be {wanted}, got {value!r}")


def cache_write_error(what: str, folder: Path, err: OSError, fix: str) -> DataError:
    """The error of a cache that cannot be written: which one, where, why, and what to do."""
    return DataError(f"cannot write the {what} {folder} ({type(err).__name__}: {err}); {fix}")


def check_writable(folder: Path, what: str, fix: str, probe: Path | None = None) -> None:
    """Fail before slow work whose result would go to ``folder``: create ``probe`` (default ``folder``)
    and write a temporary file there, or raise ``cache_write_error``."""
    probe = folder if probe is None else probe
    try:
        probe.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise cache_write_error(what, folder, err, fix) from None
