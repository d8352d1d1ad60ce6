"""Content digests, so that a cache knows what it was built from and can prove what it holds.

A file's size and modification time say nothing about its bytes: a file rewritten with the same
size and time, or a cache changed in place (a bad disk, a stray write), keeps both. Every cache
therefore keys on a digest of its inputs' bytes and stores a digest of its own bytes, checked on
each load. XXH3-128 (from ``xxhash``, which ``datasets`` already requires) hashes faster than
files can be read from the page cache, so a check costs about what reading its files does.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import xxhash

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


def file_digests(paths: list[Path]) -> list[str]:
    """``file_digest`` of each of ``paths``, hashed concurrently: reads and XXH3 both release the
    GIL, so a cache's large files are verified side by side on a machine with a core to spare."""
    if len(paths) < 2:
        return [file_digest(p) for p in paths]
    with ThreadPoolExecutor(min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(file_digest, paths))


def folder_digests(folder: Path) -> dict[str, str]:
    """Digest of every file under ``folder``, by path relative to it."""
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    return dict(zip((p.relative_to(folder).as_posix() for p in paths), file_digests(paths)))


def folder_identity(folder: Path) -> str:
    """One line per file under ``folder``: its path and digest. For cache keys of a model folder:
    a model saved again into it (even to the same sizes and times) gets a new key."""
    return "".join(f"\n{name}:{digest}" for name, digest in folder_digests(folder).items())


def first_mismatch(folder: Path, recorded: dict[str, str]) -> tuple[Path, str] | None:
    """The first file of ``recorded`` that is missing under ``folder`` or whose bytes changed, and how."""
    paths = [folder / name for name in recorded]
    for path in paths:
        if not path.is_file():
            return path, "is missing"
    for path, found, digest in zip(paths, file_digests(paths), recorded.values()):
        if found != digest:
            return path, "does not match the digest recorded when the cache was written"
    return None


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
    """The array cached at ``path``, or None when there is none; also None, with a warning naming
    the file, when it is damaged, was written without a digest, or has other than ``rows`` rows:
    the caller then rebuilds it."""
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
