"""The format-free tables every reader returns, and the error every reader raises."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from genrec.errors import DataError

__all__ = ["DataError", "RawData"]


@dataclass
class RawData:
    """Interactions and optional item text as read, in file order: ``interactions`` has ``user``, ``item`` (raw
    ids as strings) and, when the source has them, ``timestamp`` (int64 unix seconds) and ``timestamp_ns``
    (nanoseconds within it); ``items`` has ``item`` and one string column per text field ("" when missing);
    ``counts`` records what the reader filtered."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def has_timestamps(self) -> bool:
        return "timestamp" in self.interactions.columns
