"""Errors shared by every layer, in a module that imports nothing of genrec's."""
from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data. The message names the file (and line or column) and the fix."""


def check_range(key: str, value: float, *, at_least: float | None = None, above: float | None = None,
                below: float | None = None, at_most: float | None = None) -> None:
    """Refuse a numeric option outside its range when it is set, naming its config key.

    A value out of range rarely fails by itself: ``num_negatives: 0`` trains a whole run with loss
    0 and frozen weights. NaN fails every bound.
    """
    bounds = [(at_least, ">=", lambda v, b: v >= b), (above, ">", lambda v, b: v > b),
              (below, "<", lambda v, b: v < b), (at_most, "<=", lambda v, b: v <= b)]
    given = [(bound, sign, holds) for bound, sign, holds in bounds if bound is not None]
    if not all(holds(value, bound) for bound, _, holds in given):
        wanted = " and ".join(f"{sign} {bound}" for bound, sign, _ in given)
        raise ValueError(f"{key} must be {wanted}, got {value!r}")
