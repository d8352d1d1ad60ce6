"""The format-free tables every reader returns, and the error every reader raises."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from genrec.errors import DataError

__all__ = ["DataError", "RawData"]


@dataclass
class RawData:
    """Interactions and optional item text, exactly as read from the source files.

    ``interactions`` has columns ``user`` and ``item`` (raw ids as strings) and, when the source
    has them, ``timestamp`` (int64 unix seconds, floored) plus, when some time has a fraction of a
    second, ``timestamp_ns`` (int64 nanoseconds within that second), so order follows the true
    times. Row order is file order; without timestamps it is taken as chronological within each user.
    ``items`` (optional) has a column ``item`` (raw id, string) plus one string column per text
    field (``title``, ``genres``, ``description``, ...). Missing text is the empty string.
    ``counts`` records what the reader itself filtered (e.g. ``{"ratings_below_threshold": 0}``);
    readers never drop rows without counting them here.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns
