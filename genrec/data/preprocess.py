"""Raw tables -> per-user chronological item sequences (every filtered row counted), written by ``engine`` in
the sequence format of docs/datasets.md, cached, and memory-mapped on load."""
from __future__ import annotations

import json
import logging
import mmap
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from genrec import digests, errors
from genrec.data import engine
from genrec.data.raw import DataError, RawData
from genrec.data.registry import Source

log = logging.getLogger(__name__)

# counts that measure the data; every other count records something dropped or left out
SIZE_COUNTS = ("rows_read", "users_read", "items_read", "users", "items", "interactions")
PREPROCESS_VERSION = 4  # bumped when the files or their meaning change, so stale caches are not reused


class Deferred:
    """A dataclass field that may be given a function in place of its value, called on first read and kept."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj, owner=None):
        if obj is None:
            raise AttributeError(self.slot[1:])  # a dataclass reads this as "no default"
        value = obj.__dict__[self.slot]
        if callable(value):
            value = obj.__dict__[self.slot] = value()
        return value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class SequenceData:
    """All users' chronological sequences in CSR form plus the catalogue: ``items[offsets[u]:offsets[u+1]]`` is
    user ``u``'s item ids (1..N), ``timestamps`` aligned with it (zeros without times); ``item_ids`` and
    ``user_ids`` the raw ids (``item_ids[0]``: padding; ``user_ids`` read on first use); ``item_text`` one
    row per item id (row 0 empty) when the source has text."""

    name: str
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray = Deferred()
    item_ids: np.ndarray
    item_text: pd.DataFrame | None = None
    has_timestamps: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

    def __getstate__(self) -> dict:
        """Pickled (for a spawned process) with the deferred user ids read: a function is no state."""
        return {**self.__dict__, "_user_ids": self.user_ids}

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]


def build_sequences(raw: RawData | Source, min_user_interactions: int = 0, min_item_interactions: int = 0,
                    fingerprint: str = "", memory_limit: str | None = None) -> SequenceData:
    """``raw`` (tables, or a source) preprocessed into a temporary folder, mapped, and the folder removed."""
    tmp = Path(tempfile.mkdtemp(prefix="genrec-sequences-"))
    try:
        write(raw, tmp, min_user_interactions, min_item_interactions, fingerprint, memory_limit)
        return _read(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build(data: RawData | Source, folder: Path, min_user_interactions: int = 0, min_item_interactions: int = 0,
          fingerprint: str = "", memory_limit: str | None = None, before_publish: Callable[[], None] = lambda: None) -> None:
    """Preprocess ``data`` into the cache ``folder``, atomically; ``before_publish`` may refuse the files by raising."""
    def written(tmp: Path) -> None:
        write(data, tmp, min_user_interactions, min_item_interactions, fingerprint, memory_limit)
        before_publish()

    _publish_atomically(folder, written)


def write(data: RawData | Source, out: Path, min_user_interactions: int = 0, min_item_interactions: int = 0,
          fingerprint: str = "", memory_limit: str | None = None) -> None:
    """The sequence files of ``data`` in the empty folder ``out``, by the engine; a source whose file the engine
    reads itself (``engine_scan``) is never loaded into memory."""
    work = Path(tempfile.mkdtemp(prefix="engine", dir=out))
    try:
        con = engine.connect(work, memory_limit)
        try:
            raw, items = _read_into(con, data)
            counts = dict(raw.counts)
            engine.build(con, out, raw.name, min_user_interactions, min_item_interactions, counts, _raw_order)
            if raw.items is None and items is not None:
                known = set(con.execute("SELECT DISTINCT i FROM raw").fetchnumpy()["i"].tolist())
                read_counts: dict[str, int] = {}
                raw.items = items(known, read_counts)
                counts = {**read_counts, **counts}  # in the readers' order, so meta.json is the same file
        finally:
            con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if raw.items is not None:
        item_ids = pq.read_table(out / "item_ids.parquet").column("item_id").to_numpy(zero_copy_only=False)
        _write_item_text(_align_item_text(raw, item_ids, counts), out)
    _write_meta(out, raw.name, raw.has_timestamps, counts, fingerprint)


def _read_into(con, data: RawData | Source) -> tuple[RawData, Callable[[set[str], dict[str, int]], pd.DataFrame] | None]:
    """The engine's ``raw`` table filled from ``data``; a ``RawData`` standing for what was read (no rows when the
    engine read the file itself) and then the source's reader of item text for a set of item ids."""
    scan = data.engine_scan() if isinstance(data, Source) and hasattr(data, "engine_scan") else None
    read = engine.read(con, scan) if scan is not None else None
    if read is not None:
        columns = ["user", "item"] + (["timestamp"] if "t" in read else [])
        return RawData(data.name, pd.DataFrame(columns=columns)), data.load_items
    raw = data.load() if isinstance(data, Source) else data
    inter = raw.interactions
    for col in ("user", "item"):
        if col not in inter.columns:
            raise DataError(f"dataset {raw.name!r}: the reader returned no {col!r} column (columns: {list(inter.columns)})")
    if len(inter) == 0:
        raise DataError(f"dataset {raw.name!r} has no interactions: check the interactions file is not empty")
    engine.load_frame(con, inter, raw.has_timestamps)
    return raw, None


def filtered_counts(counts: dict[str, int]) -> dict[str, int]:
    """Every count of something filtered, the readers' included (multi-domain: ``<domain>:<count>``)."""
    return {k: v for k, v in counts.items() if k.rsplit(":", 1)[-1] not in SIZE_COUNTS}


def _raw_order(ids: np.ndarray) -> np.ndarray:
    """Numeric raw ids sort numerically, any others as strings."""
    as_num = pd.to_numeric(pd.Series(ids), errors="coerce")
    if as_num.notna().all():
        return np.argsort(as_num.to_numpy(), kind="stable")
    return np.argsort(ids.astype(str), kind="stable")


def _align_item_text(raw: RawData, item_ids: np.ndarray, counts: dict[str, int]) -> pd.DataFrame:
    text = raw.items.drop_duplicates("item", keep="first").set_index("item")
    aligned = text.reindex(item_ids[1:].astype(str)).fillna("")
    counts["items_without_text"] = int((~pd.Index(item_ids[1:].astype(str)).isin(text.index)).sum())
    counts["item_text_rows_not_in_interactions"] = int((~text.index.isin(item_ids[1:].astype(str))).sum())
    empty = pd.DataFrame({c: [""] for c in aligned.columns})
    return pd.concat([empty, aligned.reset_index(drop=True)], ignore_index=True)


CACHE_FIX = ("point $GENREC_CACHE (or data.cache_dir) at a writable folder, or set data.preprocess.use_cache: false "
             "(multi-domain data: data.use_cache: false) to read the raw files every run")


def check_writable(folder: Path) -> None:
    """Fail before the (slow) read of the raw files, not after it, when the cache cannot be written."""
    errors.check_writable(folder, "preprocessing cache", CACHE_FIX, probe=folder.parent)


def cache_error(folder: Path, err: OSError) -> DataError:
    return errors.cache_write_error("preprocessing cache", folder, err, CACHE_FIX)


def save(data: SequenceData, folder: Path) -> None:
    """Write sequences held in memory in the sequence format, atomically."""
    def written(tmp: Path) -> None:
        for name in engine.ARRAYS:
            np.save(tmp / f"{name}.npy", np.asarray(getattr(data, name), "<i8"), allow_pickle=False)
        pq.write_table(pa.table({"user_id": pa.array(data.user_ids.astype(str), pa.string())}), tmp / "user_ids.parquet")
        pq.write_table(pa.table({"item_id": pa.array(data.item_ids.astype(str), pa.string())}), tmp / "item_ids.parquet")
        _write_item_text(data.item_text, tmp)
        _write_meta(tmp, data.name, data.has_timestamps, data.counts, data.fingerprint)

    _publish_atomically(folder, written)


def _publish_atomically(folder: Path, write_into: Callable[[Path], None]) -> None:
    """``write_into`` a temporary folder beside ``folder``, then ``_publish`` it: a reader sees nothing or all."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
    try:
        write_into(tmp)
        _publish(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_item_text(item_text: pd.DataFrame | None, out: Path) -> None:
    if item_text is not None:
        table = pa.table({c: pa.array(item_text[c].astype(str).to_numpy(), pa.string()) for c in item_text.columns})
        pq.write_table(table, out / "item_text.parquet")


def _write_meta(out: Path, name: str, has_timestamps: bool, counts: dict[str, int], fingerprint: str) -> None:
    """``meta.json``, last: it holds the digest of every other file, and a folder without it is no cache."""
    meta = {
        "version": PREPROCESS_VERSION,
        "name": name,
        "has_timestamps": has_timestamps,
        "counts": counts,
        "fingerprint": fingerprint,
        "files": digests.folder_digests(out),
    }
    meta["digest"] = _meta_digest(meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def _publish(tmp: Path, folder: Path) -> None:
    """Move a finished cache into place: the first of several builders wins, and a stale folder is renamed away
    before it is deleted, so no reader sees it half gone."""
    for _ in range(3):
        try:
            os.replace(tmp, folder)  # atomic when ``folder`` is absent (or an empty directory)
            return
        except OSError:
            if check(folder) is None:
                return  # another process published the same cache first
            stale = Path(tempfile.mkdtemp(prefix=folder.name + ".stale", dir=folder.parent))
            try:
                os.replace(folder, stale / "old")
            except FileNotFoundError:
                pass  # someone else moved it already; try again
            shutil.rmtree(stale, ignore_errors=True)
    raise DataError(f"could not write the preprocessing cache {folder}: another process keeps replacing it; "
                    "set data.preprocess.use_cache=false or give each run its own data.cache_dir")


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return xxhash.xxh3_128(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check(folder: Path, fingerprint: str | None = None, verified: digests.Verified | None = None) -> tuple[Path, str] | None:
    """What makes the cache in ``folder`` unusable, as (file, problem): not complete, of another version or
    ``fingerprint``, or bytes changed since written (``verified``: only files changed since last verified)."""
    meta_file = folder / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        return meta_file, "is missing"
    except (OSError, ValueError) as err:
        return meta_file, f"cannot be read ({type(err).__name__}: {err}; cut short?)"
    if not isinstance(meta, dict) or meta.get("version") != PREPROCESS_VERSION:
        return meta_file, f"is not of version {PREPROCESS_VERSION}"
    if meta.get("digest") != _meta_digest(meta) or not isinstance(meta.get("files"), dict):
        return meta_file, "does not match its own digest (changed or damaged since it was written)"
    if fingerprint is not None and meta["fingerprint"] != fingerprint:
        return meta_file, f"was built from other input files (fingerprint {meta['fingerprint']}, not {fingerprint})"
    return digests.first_mismatch(folder, meta["files"], verified)


def load(folder: Path, fingerprint: str | None = None, verified: digests.Verified | None = None) -> SequenceData | None:
    """The cached data, or None when there is no usable cache (a warning names what is wrong with one)."""
    data, problem = inspect(folder, fingerprint, verified)
    if problem is not None:
        log.warning("preprocessing cache file %s %s; rebuilding it from the raw files", *problem)
    return data


def inspect(folder: Path, fingerprint: str | None = None,
            verified: digests.Verified | None = None) -> tuple[SequenceData | None, tuple[Path, str] | None]:
    """``load`` without the warning: the cached data or None, and the cache's problem (or None)."""
    if not folder.exists():
        return None, None
    problem = check(folder, fingerprint, verified)
    if problem is None:
        try:
            return _read(folder), None
        except Exception as err:  # pyarrow and numpy raise many unrelated types for a damaged file
            problem = folder, f"cannot be read ({type(err).__name__}: {err})"
    return None, problem


def _read(folder: Path) -> SequenceData:
    """The cache in ``folder``, its CSR arrays memory-mapped read-only (plain ndarray views: faster to index)."""
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {name: np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
              for name in engine.ARRAYS}
    for name, array in arrays.items():
        if array.dtype != np.int64 or array.ndim != 1:
            raise DataError(f"{folder / name}.npy holds {array.dtype} of shape {array.shape}, not a 1-d int64 array")
    item_text = None
    if (folder / "item_text.parquet").is_file():
        item_text = pq.read_table(folder / "item_text.parquet").to_pandas()
    return SequenceData(meta["name"], **arrays, user_ids=_deferred_strings(folder / "user_ids.parquet", "user_id"),
                        item_ids=_strings(folder / "item_ids.parquet", "item_id"), item_text=item_text,
                        has_timestamps=meta["has_timestamps"], counts=meta["counts"], fingerprint=meta["fingerprint"])


def _memmap(array: np.ndarray) -> np.memmap | None:
    """The ``np.memmap`` that ``array`` is a view of, if any."""
    while array is not None and not isinstance(array, np.memmap):
        array = array.base if isinstance(array.base, np.ndarray) else None
    return array


def mapped_file(array: np.ndarray) -> Path | None:
    """The file ``array`` is a view of, when it is one of the maps ``load`` returns."""
    memmap = _memmap(array)
    return None if memmap is None else Path(memmap.filename)


def release_pages(*arrays: np.ndarray) -> None:
    """Unmaps from this process (``madvise(MADV_DONTNEED)``) the pages of the read-only file maps ``arrays`` view,
    so they leave its RSS but stay in the page cache; other arrays, or a platform without it: nothing."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    for array in arrays:
        memmap = _memmap(array)
        # only a read-only map: on a copy-on-write one (mode "c") DONTNEED would discard written pages
        if advice is not None and memmap is not None and memmap.mode == "r" and isinstance(memmap.base, mmap.mmap):
            memmap.base.madvise(advice)


def _deferred_strings(path: Path, column: str) -> Callable[[], np.ndarray]:
    """``_strings`` of ``path``, read later from a map taken now (so a replaced cache folder does not matter)."""
    source = pa.memory_map(str(path))

    def read() -> np.ndarray:
        try:
            return _strings(source, column)
        except (OSError, ValueError) as err:  # pyarrow's errors: a map cut short under us, a damaged file
            raise DataError(f"{path} cannot be read ({type(err).__name__}: {err}); delete the cache folder "
                            f"{path.parent} to rebuild it") from None
        finally:
            source.close()

    return read


def _strings(path: Path | pa.NativeFile, column: str) -> np.ndarray:
    return pq.read_table(path, columns=[column]).column(column).to_numpy(zero_copy_only=False).astype(object)
