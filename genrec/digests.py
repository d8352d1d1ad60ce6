"""XXH3-128 content digests, so that a cache knows what it was built from and can prove what it holds;
``Verified`` skips re-hashing a file whose stat stamp is unchanged (docs/reliability.md).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xxhash

log = logging.getLogger(__name__)

CHUNK = 1 << 22
# Appended to a cached .npy file: the marker, then the XXH3-128 digest of every byte before it.
# ``np.load`` reads a .npy file's header and data only, so such a file still loads anywhere.
TRAILER = b"\x93GENREC-XXH3-128"
TRAILER_SIZE = len(TRAILER) + 16


def file_digest(path: Path) -> str:
    """XXH3-128 of the file's bytes, read in chunks into one reused buffer."""
    digest = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(min(CHUNK, os.fstat(f.fileno()).st_size + 1))
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def file_digests(paths: list[Path], verified: Verified | None = None) -> list[str]:
    """``file_digest`` of each of ``paths``, hashed in threads; with ``verified``, unchanged files are not read."""
    if verified is not None:
        return verified.digests(paths)
    if len(paths) < 2:
        return [file_digest(p) for p in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(file_digest, paths))


def folder_digests(folder: Path) -> dict[str, str]:
    """Digest of every file under ``folder``, by path relative to it."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return dict(zip((p.relative_to(folder).as_posix() for p in paths), file_digests(paths)))


def folder_identity(folder: Path) -> str:
    """One line per file under ``folder``: its path and digest (a cache key of a model folder)."""
    return "".join(f"\n{name}:{digest}" for name, digest in folder_digests(folder).items())


def first_mismatch(folder: Path, recorded: dict[str, str], verified: Verified | None = None) -> tuple[Path, str] | None:
    """The first file of ``recorded`` that is missing under ``folder`` or whose bytes changed, and how."""
    paths = [folder / name for name in recorded]
    for path in paths:
        if not path.is_file():
            return path, "is missing"
    for path, found, digest in zip(paths, file_digests(paths, verified), recorded.values()):
        if found != digest:
            return path, "does not match the digest recorded when the cache was written"
    return None


def stamp(st: os.stat_result) -> list[int]:
    """What identifies one version of a file without reading it: any write changes at least its ctime."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class Verified:
    """A record, in the JSON file ``record``, of each fully hashed file's ``stamp`` and digest; ``digests``
    trusts a recorded digest while the stamp is unchanged and hashes every other file in full.

    A stamp is recorded only when its times are older than the hashing's start on the file system's
    clock (as git's index treats "racy" entries). The record is rewritten whole, atomically, with its own digest.
    """

    def __init__(self, record: Path):
        self.record = record
        self._lock = threading.Lock()

    def digests(self, paths: list[Path]) -> list[str]:
        before = [stamp(os.stat(p)) for p in paths]
        with self._lock:
            entries = self._read()
        out: list[str | None] = [None] * len(paths)
        todo = []
        for k, (path, st) in enumerate(zip(paths, before)):
            entry = entries.get(str(Path(path).absolute()))
            if entry is not None and entry[:-1] == st:
                out[k] = entry[-1]
            else:
                todo.append(k)
        if not todo:
            return out
        clock = self._clock()
        found = file_digests([paths[k] for k in todo])
        fresh = {}
        for k, digest in zip(todo, found):
            out[k] = digest
            st = before[k]
            if clock is not None and stamp(os.stat(paths[k])) == st and max(st[3], st[4]) < clock:
                fresh[str(Path(paths[k]).absolute())] = [*st, digest]
        if fresh:
            with self._lock:
                self._write(fresh)
        return out

    def _read(self) -> dict[str, list]:
        try:
            body = json.loads(self.record.read_text())
            entries = body["files"]
            if body["digest"] != _entries_digest(entries):
                return {}
            return entries
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _clock(self) -> int | None:
        """Now, on the clock the file system stamps files with (None when the folder is not writable)."""
        try:
            self.record.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.record.parent) as f:
                st = os.fstat(f.fileno())
                return min(st.st_mtime_ns, st.st_ctime_ns)
        except OSError:
            return None

    def _write(self, fresh: dict[str, list]) -> None:
        entries = {path: entry for path, entry in self._read().items() if os.path.exists(path)}
        entries.update(fresh)
        tmp = self.record.with_name(f".{self.record.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps({"files": entries, "digest": _entries_digest(entries)}))
            os.replace(tmp, self.record)
        except OSError as err:
            log.debug("could not record verified files in %s (%s); they will be hashed again", self.record, err)
        finally:
            tmp.unlink(missing_ok=True)


def _entries_digest(entries: dict[str, list]) -> str:
    return xxhash.xxh3_128(json.dumps(entries, sort_keys=True).encode()).hexdigest()


def save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` with its digest appended, atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array, allow_pickle=False)
        digest = bytes.fromhex(file_digest(tmp))
        with open(tmp, "ab") as f:
            f.write(TRAILER + digest)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_array(path: Path, what: str, log: logging.Logger, rows: int | None = None) -> np.ndarray | None:
    """The array cached at ``path``; None when there is none, or with a warning when it is damaged,
    has no digest or other than ``rows`` rows (the caller then rebuilds it)."""
    try:
        with open(path, "rb") as f:
            array, problem = _read_checked(f, rows)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        array, problem = None, f"cannot be read ({type(err).__name__}: {err})"
    if problem:
        log.warning("%s file %s %s; rebuilding it", what, path, problem)
        return None
    return array


def _read_checked(f, rows: int | None) -> tuple[np.ndarray | None, str]:
    """The array in the open file ``f`` and "", or None and what is wrong with the file."""
    size = os.fstat(f.fileno()).st_size
    if size < TRAILER_SIZE:
        return None, "is too short to be a cached array (cut short?)"
    f.seek(size - TRAILER_SIZE)
    trailer = f.read()
    if not trailer.startswith(TRAILER):
        return None, "has no content digest (cut short, or written by an older genrec)"
    f.seek(0)
    digest = xxhash.xxh3_128()
    left = size - TRAILER_SIZE
    while left > 0 and (chunk := f.read(min(CHUNK, left))):
        digest.update(chunk)
        left -= len(chunk)
    if digest.digest() != trailer[len(TRAILER):]:
        return None, "does not match its content digest (changed or damaged since it was written)"
    f.seek(0)
    array = np.lib.format.read_array(f, allow_pickle=False)
    if rows is not None and (array.ndim == 0 or len(array) != rows):
        return None, f"holds shape {array.shape}, not {rows} rows"
    return array, ""
