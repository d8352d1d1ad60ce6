"""Preprocessing on DuckDB, out of core: raw interactions -> the sequence files of docs/datasets.md.

DuckDB was chosen over Polars' streaming engine by measurement (docs/performance.md): both produce
the same files, but only DuckDB keeps to a memory budget (``memory_limit``, spilling the rest to
disk), which is what lets a log larger than memory be preprocessed at all.

The steps and their rules are those of ``genrec.data.preprocess`` (stable chronological order, ties
in file order; iterative k-core; items numbered in the order of their raw ids, users in the order
they first appear), so that the files are the same whichever path wrote them. File order is the
insertion order of the table the rows are read into (``rowid``), which DuckDB keeps while
``preserve_insertion_order`` is on (its default, set again here).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data.raw import DataError

MEMORY_LIMIT_ENV = "GENREC_PREPROCESS_MEMORY"
DEFAULT_MEMORY_LIMIT = "1GB"
MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)
BATCH_ROWS = 1 << 20
# The CSR arrays of the contract, each an int64 ``.npy`` file.
ARRAYS = ("offsets", "items", "timestamps")


def memory_limit(value: str | None = None) -> str:
    """The engine's memory budget: ``value``, else $GENREC_PREPROCESS_MEMORY, else the default."""
    value = value or os.environ.get(MEMORY_LIMIT_ENV) or DEFAULT_MEMORY_LIMIT
    if not MEMORY_LIMIT.fullmatch(value.strip()):
        raise DataError(f"preprocessing memory budget {value!r} is not a size such as '1GB' or '512MiB'; fix "
                        f"data.preprocess.memory or ${MEMORY_LIMIT_ENV}")
    return value.strip()


def connect(workdir: Path, budget: str | None = None):
    """An in-memory DuckDB database that spills to ``workdir`` beyond the memory budget (a database
    file would also write every table to disk, compressed, which doubled the time to read a log)."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{memory_limit(budget)}'")
    con.execute(f"SET temp_directory = '{workdir / 'spill'}'")
    con.execute("SET preserve_insertion_order = true")
    return con


def load_frame(con, interactions: pd.DataFrame, has_timestamps: bool) -> None:
    """A reader's interactions table (``RawData.interactions``) as the engine's ``raw`` table."""
    n = len(interactions)
    zeros = np.zeros(n, np.int64)
    table = pa.table({
        "u": pa.array(interactions["user"].to_numpy(object), pa.string()),
        "i": pa.array(interactions["item"].to_numpy(object), pa.string()),
        "t": interactions["timestamp"].to_numpy(np.int64) if has_timestamps else zeros,
        "f": interactions["timestamp_ns"].to_numpy(np.int64) if "timestamp_ns" in interactions else zeros,
    })
    con.register("frame", table)
    con.execute("CREATE TABLE raw AS SELECT u, i, t, f FROM frame")
    con.unregister("frame")


def read_csv(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> set[str] | None:
    """Read a CSV file with a header (``columns``: its column names -> ``u``, ``i``, ``t``; those of
    ``optional`` too when the header has them) into the ``raw`` table without pandas, when that gives
    exactly what the readers of ``genrec.data.sources`` give, and return the columns read; None
    (nothing read) when it might not: ids needing the canonical form's changes, times that are not
    integers, or anything the readers report as an error. The caller then reads the file with those
    readers, which name the line and what to do.
    """
    import duckdb

    header = _header(path)
    if header is None or any(name not in header for name in columns) or len(set(header)) < len(header):
        return None
    columns = {**columns, **{name: ours for name, ours in (optional or {}).items() if name in header}}
    layout = ", ".join(f"'{_quote(name)}': 'VARCHAR'" for name in header)
    ours = list(columns.values())
    # A time that is not plain digits (a sign, spaces, a fraction) reads differently in pandas: it
    # becomes NULL here, which sends the file to the readers below.
    time = "CASE WHEN regexp_full_match(t, '-?[0-9]{1,18}') THEN TRY_CAST(t AS BIGINT) END" if "t" in ours else "0::BIGINT"
    try:
        con.execute(f"""CREATE TABLE raw AS SELECT u, i, {time} AS t, 0::BIGINT AS f FROM (
                        SELECT {', '.join(f'"{_quote(name)}" AS {c}' for name, c in columns.items())}
                        FROM read_csv('{_quote(str(path))}', header = true, auto_detect = false, delim = ',',
                                      quote = '"', escape = '"', strict_mode = true, columns = {{{layout}}}))""")
    except duckdb.Error:
        con.execute("DROP TABLE IF EXISTS raw")
        return None
    if not _reads_as_the_readers_do(con, path, columns, "t" in ours):
        con.execute("DROP TABLE raw")
        return None
    return set(ours)


def read(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> set[str] | None:
    """``read_csv`` or ``read_parquet`` by the file's suffix; None for any other file (the readers'):
    the columns read into the ``raw`` table, or None when nothing was read."""
    reader = {".csv": read_csv, ".parquet": read_parquet}.get(path.suffix)
    return reader(con, path, columns, optional) if reader is not None else None


# Parquet column types whose values the readers turn into the same text (ids) or seconds (times)
# as a plain SQL cast: strings and integers. Floats, datetimes, decimals and the rest go to the readers.
_PARQUET_IDS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer)


def read_parquet(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> set[str] | None:
    """``read_csv`` for a Parquet file: read into the ``raw`` table without pandas when its id columns
    are strings or integers and its time column (if any) integers, with no null, no empty or untrimmed
    id; None (nothing read) otherwise, the readers then reading it and naming any bad row."""
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError):
        return None
    names = schema.names
    if len(set(names)) < len(names) or any(name not in names for name in columns):
        return None
    columns = {**columns, **{name: ours for name, ours in (optional or {}).items() if name in names}}
    for name, ours in columns.items():
        kinds = (pa.types.is_integer,) if ours == "t" else _PARQUET_IDS
        if not any(kind(schema.field(name).type) for kind in kinds):
            return None
    ours = list(columns.values())
    cast = {"u": "CAST({} AS VARCHAR)", "i": "CAST({} AS VARCHAR)", "t": "CAST({} AS BIGINT)"}
    selected = ", ".join(cast[c].format(f'"{_quote(name)}"') + f" AS {c}" for name, c in columns.items())
    con.execute(f"""CREATE TABLE raw AS SELECT u, i, {'t' if 't' in ours else '0::BIGINT AS t'}, 0::BIGINT AS f
                    FROM (SELECT {selected} FROM read_parquet('{_quote(str(path))}'))""")
    nulls = " OR ".join(f"{c} IS NULL" for c in ours)
    rows, bad = con.execute(f"SELECT count(*), count(*) FILTER ({nulls}) FROM raw").fetchone()
    if rows == 0 or bad or not _ids_as_the_readers_give(con):
        con.execute("DROP TABLE raw")
        return None
    return set(ours)


def _ids_as_the_readers_give(con) -> bool:
    """Every id of the ``raw`` table non-empty and without surrounding whitespace (checked on the
    distinct ids), as the readers' canonical form leaves it."""
    for c in ("u", "i"):
        blank = f"{c} IS NULL OR {c} = '' OR {c} <> trim({c}, '{WHITESPACE}')"
        if con.execute(f"SELECT count(*) FILTER ({blank}) FROM (SELECT DISTINCT {c} FROM raw)").fetchone()[0]:
            return False
    return True


def _reads_as_the_readers_do(con, path: Path, columns: dict[str, str], timed: bool) -> bool:
    """Whether the ``raw`` table just read holds what the readers would give: every id non-empty and
    without surrounding whitespace (checked on the distinct ids, not on every row), every time an
    integer, no repeated header, and one row per line after the header (DuckDB skips blank lines
    and joins a quoted field's lines, which the readers report or read otherwise)."""
    repeated_header = " AND ".join(f"{ours} = '{_quote(name)}'" for name, ours in columns.items() if ours != "t")
    rows, bad_rows = con.execute(f"""SELECT count(*), count(*) FILTER ({'t IS NULL OR ' if timed else ''}({repeated_header}))
                                     FROM raw""").fetchone()
    if bad_rows or rows == 0 or not _ids_as_the_readers_give(con):
        return False
    return rows + 1 == _line_count(path)


# Every character Python's str.strip removes, which the canonical id form strips (docs/datasets.md).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace()).replace("'", "")


def _quote(text: str) -> str:
    return text.replace("'", "''").replace('"', '""')


def _header(path: Path) -> list[str] | None:
    """The header's names, when the file is plain UTF-8 (not gzipped) that ends with a line break;
    else None (the readers check those cases and name what is wrong)."""
    with open(path, "rb") as f:
        first = f.readline()
        f.seek(0, os.SEEK_END)
        if f.tell() == 0 or path.suffix == ".gz":
            return None
        f.seek(-1, os.SEEK_END)
        if f.read(1) != b"\n":
            return None
    try:
        names = first.decode("utf-8").rstrip("\r\n").split(",")
    except UnicodeDecodeError:
        return None
    return names if all(name == name.strip() and name and '"' not in name for name in names) else None


def _line_count(path: Path) -> int:
    """Line breaks in the file, counted by numpy at memory speed (bytes.count is several times slower)."""
    lines = 0
    buffer = np.empty(1 << 22, np.uint8)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            lines += int(np.count_nonzero(buffer[:n] == ord("\n")))
    return lines


def empty_after_kcore(name: str, min_user: int, min_item: int, rows_read: int, options: str) -> DataError:
    """The error for a log k-core filtering leaves empty; ``options`` names the thresholds to lower."""
    return DataError(f"dataset {name!r} is empty after k-core filtering (min_user_interactions={min_user}, "
                     f"min_item_interactions={min_item}, {rows_read} rows read): lower {options}")


def build(con, out: Path, name: str, min_user: int, min_item: int, counts: dict[str, int],
          item_order: Callable[[np.ndarray], np.ndarray]) -> None:
    """Filter, number and order the ``raw`` table (u, i, t, f in file order) into the CSR files in
    ``out``: ``offsets.npy``, ``items.npy``, ``timestamps.npy``, ``user_ids.parquet``, ``item_ids.parquet``.

    ``item_order`` gives the order of the raw item ids (``preprocess._raw_order``); it sees the
    distinct items only, never the log. ``counts`` receives the same per-step counts as the
    in-memory path.
    """
    sql = con.execute
    counts["rows_read"], counts["users_read"], counts["items_read"] = sql(
        "SELECT count(*), count(DISTINCT u), count(DISTINCT i) FROM raw").fetchone()
    # A view, not a copy: without k-core filtering the log is never copied inside the engine.
    sql("CREATE VIEW log AS SELECT rowid AS r, u, i, t, f FROM raw")
    kept = "log"
    rows = counts["rows_read"]
    while (min_user > 1 or min_item > 1) and rows:
        sql(f"""CREATE OR REPLACE TABLE kept AS SELECT * FROM {kept}
                WHERE u IN (SELECT u FROM {kept} GROUP BY u HAVING count(*) >= {int(min_user)})
                  AND i IN (SELECT i FROM {kept} GROUP BY i HAVING count(*) >= {int(min_item)})""")
        kept = "kept"
        left = sql("SELECT count(*) FROM kept").fetchone()[0]
        if left == rows:
            break
        rows = left
    counts["rows_removed_by_kcore"] = counts["rows_read"] - rows
    if rows == 0:
        raise empty_after_kcore(name, min_user, min_item, counts["rows_read"], "data.preprocess.min_user_interactions / min_item_interactions")
    # Users in the order they first appear in the whole file (filtered rows included), as pandas' factorize.
    known = (lambda c: f"WHERE {c} IN (SELECT {c} FROM kept)") if kept == "kept" else (lambda c: "")
    sql(f"""CREATE TABLE users AS SELECT u, row_number() OVER (ORDER BY first) - 1 AS uid FROM
            (SELECT u, min(rowid) AS first FROM raw {known("u")} GROUP BY u)""")
    raw_ids = sql(f"""SELECT i FROM raw {known("i")} GROUP BY i
                      ORDER BY min(rowid)""").fetchnumpy()["i"].astype(object)
    ordered = raw_ids[item_order(raw_ids)]
    item_map = pa.table({"i": pa.array(ordered, pa.string()), "iid": np.arange(1, len(ordered) + 1, dtype=np.int64)})
    con.register("item_map_frame", item_map)
    sql("CREATE TABLE item_map AS SELECT * FROM item_map_frame")
    con.unregister("item_map_frame")

    users = sql("SELECT count(*) FROM users").fetchone()[0]
    counts["users_removed_by_kcore"] = counts["users_read"] - users
    counts["items_removed_by_kcore"] = counts["items_read"] - len(ordered)
    counts.update(users=users, items=len(ordered), interactions=rows)

    lengths = sql(f"SELECT count(*) AS n FROM {kept} JOIN users USING (u) GROUP BY uid ORDER BY uid").fetchnumpy()["n"]
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(out / "offsets.npy", offsets)
    # the relation API streams the sorted rows; a DB-API result would hold them all first
    ordered_rows = con.sql(f"""SELECT iid, t FROM {kept} JOIN users USING (u) JOIN item_map USING (i)
                              ORDER BY uid, t, f, r""").fetch_arrow_reader(BATCH_ROWS)
    written = write_columns(ordered_rows, out, rows, ("items", "timestamps"))
    if written != rows:
        raise RuntimeError(f"the engine wrote {written} of {rows} interactions")  # a join lost rows: a bug, not data
    sql(f"COPY (SELECT u AS user_id FROM users ORDER BY uid) TO '{out / 'user_ids.parquet'}' (FORMAT parquet)")
    pq.write_table(pa.table({"item_id": pa.array(["<pad>", *ordered], pa.string())}), out / "item_ids.parquet")


def write_columns(batches, out: Path, rows: int, names: tuple[str, ...]) -> int:
    """Stream record batches into one int64 ``.npy`` file per column, by plain writes: memory stays
    one batch, and no written page is mapped into (and counted against) the process."""
    files = [open(out / f"{name}.npy", "wb") for name in names]
    written = 0
    try:
        for f in files:
            np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (rows,)})
        for batch in batches:
            for column, f in zip(batch.columns, files):
                f.write(column.to_numpy().astype("<i8", copy=False).tobytes())
            written += batch.num_rows
    finally:
        for f in files:
            f.close()
    return written
