"""Raw tables → per-user chronological item sequences, with every filtered row counted.

Steps, in order: stable chronological sort (on the full-precision times, fractions of a second
included; ties keep file order; without timestamps file order is the order), optional k-core filtering, item ids remapped to 1..N (0 is padding) in order of
their raw ids, users remapped to 0..U-1. The result is stored as CSR arrays and cached as Arrow
tables (through the ``datasets`` library), so the second run of a config starts in seconds.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import xxhash

from genrec import digests, errors
from genrec.data.raw import DataError, RawData

log = logging.getLogger(__name__)

# Counts that measure the data; every other count records something dropped or left out.
SIZE_COUNTS = ("rows_read", "users_read", "items_read", "users", "items", "interactions")
# Bump when the processed layout or its semantics change, so stale caches are not reused.
PREPROCESS_VERSION = 3  # 2: sub-second times order the sequences; 3: canonical ids (docs/datasets.md), digests of the cache's files


@dataclass
class SequenceData:
    """All users' full chronological sequences in CSR form plus the catalogue.

    ``items[offsets[u]:offsets[u+1]]`` is user ``u``'s sequence of internal item ids (1..N);
    ``timestamps`` is aligned with it (all zeros when the source has none).
    ``item_ids[i]`` is the raw id of internal item ``i`` (``item_ids[0]`` is the padding marker).
    ``item_text`` has one row per internal id (row 0 empty) when the source has item text.
    """

    name: str
    offsets: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_text: pd.DataFrame | None = None
    has_timestamps: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

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


def kcore(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Boolean mask of rows kept by iterative k-core filtering (users ≥ min_user, items ≥ min_item)."""
    keep = np.ones(len(users), dtype=bool)
    if min_user <= 1 and min_item <= 1:
        return keep
    while True:
        u_counts = np.bincount(users[keep], minlength=users.max() + 1)
        i_counts = np.bincount(items[keep], minlength=items.max() + 1)
        bad = keep & ((u_counts[users] < min_user) | (i_counts[items] < min_item))
        if not bad.any():
            return keep
        keep &= ~bad


def build_sequences(
    raw: RawData, min_user_interactions: int = 0, min_item_interactions: int = 0, fingerprint: str = ""
) -> SequenceData:
    inter = raw.interactions
    for col in ("user", "item"):
        if col not in inter.columns:
            raise DataError(f"dataset {raw.name!r}: the reader returned no {col!r} column (columns: {list(inter.columns)})")
    if len(inter) == 0:
        raise DataError(f"dataset {raw.name!r} has no interactions: check the interactions file is not empty")

    user_codes, user_ids = pd.factorize(inter["user"], sort=False)
    item_codes, item_uniques = pd.factorize(inter["item"], sort=False)
    has_ts = raw.has_timestamps
    ts = inter["timestamp"].to_numpy(np.int64) if has_ts else np.zeros(len(inter), np.int64)
    # sub-second part, only for ordering: sequences keep whole seconds
    fraction = inter["timestamp_ns"].to_numpy(np.int64) if "timestamp_ns" in inter else np.zeros(len(inter), np.int64)

    counts = dict(raw.counts)
    counts["rows_read"] = len(inter)
    counts["users_read"] = len(user_ids)
    counts["items_read"] = len(item_uniques)
    keep = kcore(user_codes, item_codes, min_user_interactions, min_item_interactions)
    counts["rows_removed_by_kcore"] = int((~keep).sum())
    if not keep.all():
        user_codes, item_codes, ts, fraction = user_codes[keep], item_codes[keep], ts[keep], fraction[keep]
    if len(user_codes) == 0:
        raise DataError(
            f"dataset {raw.name!r} is empty after k-core filtering "
            f"(min_user_interactions={min_user_interactions}, min_item_interactions={min_item_interactions}, "
            f"{counts['rows_read']} rows read): lower data.min_user_interactions / data.min_item_interactions"
        )

    # Internal item ids follow the raw ids' order so they do not depend on row order.
    used_items = np.unique(item_codes)
    raw_item_ids = np.asarray(item_uniques.astype(str))[used_items]
    order_by_raw = _raw_order(raw_item_ids)
    new_id = np.zeros(len(item_uniques), np.int64)
    new_id[used_items[order_by_raw]] = np.arange(1, len(used_items) + 1)
    item_ids = np.concatenate([["<pad>"], raw_item_ids[order_by_raw]]).astype(object)

    used_users, user_new = np.unique(user_codes, return_inverse=True)
    # Stable lexsort: by user, then time (seconds, then their fraction); equal times keep file order.
    order = np.lexsort((fraction, ts, user_new))
    users_sorted = user_new[order]
    seq_items = new_id[item_codes[order]]
    seq_ts = ts[order]
    offsets = np.zeros(len(used_users) + 1, np.int64)
    np.cumsum(np.bincount(users_sorted, minlength=len(used_users)), out=offsets[1:])

    counts["users_removed_by_kcore"] = counts["users_read"] - len(used_users)
    counts["items_removed_by_kcore"] = counts["items_read"] - len(used_items)
    counts["users"] = len(used_users)
    counts["items"] = len(used_items)
    counts["interactions"] = len(seq_items)

    item_text = _align_item_text(raw, item_ids, counts)
    return SequenceData(
        name=raw.name,
        offsets=offsets,
        items=seq_items,
        timestamps=seq_ts,
        user_ids=np.asarray(user_ids.astype(str))[used_users].astype(object),
        item_ids=item_ids,
        item_text=item_text,
        has_timestamps=has_ts,
        counts=counts,
        fingerprint=fingerprint,
    )


def filtered_counts(counts: dict[str, int]) -> dict[str, int]:
    """Every count of something filtered, the readers' included (e.g. item text without interactions);
    a multi-domain count is named ``<domain>:<count>``."""
    return {k: v for k, v in counts.items() if k.rsplit(":", 1)[-1] not in SIZE_COUNTS}


def _raw_order(ids: np.ndarray) -> np.ndarray:
    """Numeric raw ids sort numerically, any others as strings."""
    as_num = pd.to_numeric(pd.Series(ids), errors="coerce")
    if as_num.notna().all():
        return np.argsort(as_num.to_numpy(), kind="stable")
    return np.argsort(ids.astype(str), kind="stable")


def _align_item_text(raw: RawData, item_ids: np.ndarray, counts: dict[str, int]) -> pd.DataFrame | None:
    if raw.items is None:
        return None
    text = raw.items.drop_duplicates("item", keep="first").set_index("item")
    aligned = text.reindex(item_ids[1:].astype(str)).fillna("")
    counts["items_without_text"] = int((~pd.Index(item_ids[1:].astype(str)).isin(text.index)).sum())
    counts["item_text_rows_not_in_interactions"] = int((~text.index.isin(item_ids[1:].astype(str))).sum())
    empty = pd.DataFrame({c: [""] for c in aligned.columns})
    return pd.concat([empty, aligned.reset_index(drop=True)], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Arrow cache


CACHE_FIX = ("point $GENREC_CACHE (or data.cache_dir) at a writable folder, or set data.use_cache: false to read "
             "the raw files every run")


def check_writable(folder: Path) -> None:
    """Fail before the (slow) read of the raw files, not after it, when the cache cannot be written."""
    errors.check_writable(folder, "preprocessing cache", CACHE_FIX, probe=folder.parent)


def cache_error(folder: Path, err: OSError) -> DataError:
    return errors.cache_write_error("preprocessing cache", folder, err, CACHE_FIX)


def save(data: SequenceData, folder: Path) -> None:
    """Write atomically: a concurrent reader sees either nothing or the complete cache."""
    import datasets

    datasets.disable_progress_bars()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
    try:
        seqs = pa.table(
            {
                "items": pa.LargeListArray.from_arrays(pa.array(data.offsets, pa.int64()), pa.array(data.items)),
                "timestamps": pa.LargeListArray.from_arrays(pa.array(data.offsets, pa.int64()), pa.array(data.timestamps)),
                "user_id": pa.array(data.user_ids.astype(str)),
            }
        )
        datasets.Dataset(seqs).save_to_disk(str(tmp / "sequences"))
        catalogue = {"item_id": data.item_ids.astype(str)}
        if data.item_text is not None:
            catalogue.update({f"text.{c}": data.item_text[c].astype(str).to_numpy() for c in data.item_text.columns})
        datasets.Dataset(pa.table(catalogue)).save_to_disk(str(tmp / "catalogue"))
        meta = {
            "version": PREPROCESS_VERSION,
            "name": data.name,
            "has_timestamps": data.has_timestamps,
            "counts": data.counts,
            "fingerprint": data.fingerprint,
            "files": digests.folder_digests(tmp),
        }
        meta["digest"] = _meta_digest(meta)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _publish(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path) -> None:
    """Move a finished cache into place without ever exposing a half-deleted one.

    Several processes may build the same cache at once (one per node on a shared file system): the
    first to finish wins and the others drop their copy; a stale or incomplete folder is renamed
    away before it is deleted, so readers never see it half gone.
    """
    for _ in range(3):
        try:
            os.replace(tmp, folder)  # atomic when ``folder`` is absent (or an empty directory)
            return
        except OSError:
            if _is_current(folder):
                return  # another process published the same cache first
            stale = Path(tempfile.mkdtemp(prefix=folder.name + ".stale", dir=folder.parent))
            try:
                os.replace(folder, stale / "old")
            except FileNotFoundError:
                pass  # someone else moved it already; try again
            shutil.rmtree(stale, ignore_errors=True)
    raise DataError(f"could not write the preprocessing cache {folder}: another process keeps replacing it; "
                    "set data.use_cache=false or give each run its own data.cache_dir")


def _is_current(folder: Path) -> bool:
    return check(folder) is None


def _meta_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return xxhash.xxh3_128(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check(folder: Path, fingerprint: str | None = None) -> tuple[Path, str] | None:
    """What makes the cache in ``folder`` unusable, as (file, problem), or None when it is complete,
    of the current version, built from the inputs with ``fingerprint`` (when given) and every byte of
    it is as written."""
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
    return digests.first_mismatch(folder, meta["files"])


def load(folder: Path, fingerprint: str | None = None) -> SequenceData | None:
    """The cached data, or None when there is no usable cache: none at all, or one that fails
    ``_check`` or cannot be read, which is logged as a warning naming the file so the caller's
    rebuild is never silent."""
    if not folder.exists():
        return None
    problem = check(folder, fingerprint)
    if problem is None:
        try:
            return _read(folder)
        except Exception as err:  # pyarrow and datasets raise many unrelated types for a damaged file
            problem = folder, f"cannot be read ({type(err).__name__}: {err})"
    log.warning("preprocessing cache file %s %s; rebuilding it from the raw files", *problem)
    return None


def _read(folder: Path) -> SequenceData:
    import datasets

    meta = json.loads((folder / "meta.json").read_text())
    seqs = datasets.load_from_disk(str(folder / "sequences")).data.table
    items = seqs.column("items").combine_chunks()
    stamps = seqs.column("timestamps").combine_chunks()
    cat = datasets.load_from_disk(str(folder / "catalogue")).data.table
    text_cols = [c for c in cat.column_names if c.startswith("text.")]
    item_text = None
    if text_cols:
        item_text = pd.DataFrame({c[len("text.") :]: cat.column(c).to_numpy(zero_copy_only=False) for c in text_cols})
    return SequenceData(
        name=meta["name"],
        offsets=items.offsets.to_numpy().astype(np.int64),
        items=items.values.to_numpy().astype(np.int64),
        timestamps=stamps.values.to_numpy().astype(np.int64),
        user_ids=seqs.column("user_id").to_numpy().astype(object),
        item_ids=cat.column("item_id").to_numpy().astype(object),
        item_text=item_text,
        has_timestamps=meta["has_timestamps"],
        counts=meta["counts"],
        fingerprint=meta["fingerprint"],
    )
