"""Registry of dataset sources: configs name a source, the registry builds it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from genrec.data.raw import DataError, RawData
from genrec.digests import Verified, file_digests

SOURCES: dict[str, type["Source"]] = {}


def register_source(name: str) -> Callable[[type["Source"]], type["Source"]]:
    def wrap(cls: type[Source]) -> type[Source]:
        if name in SOURCES:
            raise ValueError(f"dataset source {name!r} registered twice")
        cls.name = name
        SOURCES[name] = cls
        return cls

    return wrap


def get_source(name: str, **kwargs: Any) -> "Source":
    """Build the source registered as ``name``; unknown names list the known ones."""
    if name not in SOURCES:
        known = ", ".join(sorted(SOURCES))
        raise DataError(f"unknown dataset {name!r}; known datasets: {known} (set data.dataset to one of them)")
    return SOURCES[name](**kwargs)


class Source:
    """A dataset in its official file format, in ``root`` or ``cache_dir/<name>``, with reader-specific ``options``;
    ``load`` returns the raw tables, ``fingerprint`` identifies the exact input for caching."""

    name: str = ""

    def __init__(self, root: str | None = None, cache_dir: str | None = None, download: bool = True, **options: Any):
        self.root = Path(root).expanduser() if root is not None else None
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.download = download
        self.options = options

    def load(self) -> RawData:
        raise NotImplementedError

    def input_files(self) -> list[Path]:
        """The files ``load`` reads; used for the cache fingerprint."""
        raise NotImplementedError

    def prebuilt(self) -> Path | None:
        """A folder already in the sequence format to load as it is, or None for raw interactions."""
        return None

    def fingerprint(self, verified: Verified | None = None) -> str:
        """Hashes every input file in full (``verified``: only files whose stamp changed since last read in full)."""
        parts: dict[str, Any] = {"name": self.name, "options": self.options}
        parts["files"] = sorted(self.file_digests(verified).items())
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def file_digests(self, verified: Verified | None = None) -> dict[str, str]:
        """The content digest of each input file that exists, by file name."""
        paths = [p for p in self.input_files() if p.is_file()]
        return dict(zip((p.name for p in paths), file_digests(paths, verified)))


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec"))
