"""Preprocessing on DuckDB, out of core within a memory budget: raw interactions -> the sequence files of
docs/datasets.md, by the rules stated there (file order is the ``rowid`` of the ``raw`` table)."""
from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
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
CHUNK = 1 << 22  # bytes a file is read in
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
    """An in-memory DuckDB database that spills to ``workdir`` beyond the memory budget."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"SET memory_limit = '{memory_limit(budget)}'")
    con.execute(f"SET temp_directory = '{workdir / 'spill'}'")
    con.execute("SET preserve_insertion_order = true")
    return con


def load_frame(con, interactions: pd.DataFrame, has_timestamps: bool) -> None:
    """A reader's interactions table (``RawData.interactions``) as the engine's ``raw`` table."""
    zeros = np.zeros(len(interactions), np.int64)
    table = pa.table({
        "u": pa.array(interactions["user"].to_numpy(object), pa.string()),
        "i": pa.array(interactions["item"].to_numpy(object), pa.string()),
        "t": interactions["timestamp"].to_numpy(np.int64) if has_timestamps else zeros,
        "f": interactions["timestamp_ns"].to_numpy(np.int64) if "timestamp_ns" in interactions else zeros,
    })
    con.register("frame", table)
    con.execute("CREATE TABLE raw AS SELECT u, i, t, f FROM frame")
    con.unregister("frame")


def read_csv(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None, *,
             delimiter: str = ",", names: tuple[str, ...] | None = None, quote: bool = True) -> set[str] | None:
    """A delimited text file (``.gz``: gzip) read into the ``raw`` table (``columns``: its field names -> ``u``,
    ``i``, ``t``; ``optional`` ones when present) and the columns read, when that gives exactly what
    ``genrec.data.sources``' readers give; else None, nothing read, and the readers read it and name any problem.
    The header names the fields, or ``names`` for a header-less file; ``quote``: whether ``"`` quotes a field."""
    import duckdb

    first = _first_line(path)
    if first is None or first.startswith(BOM):
        return None
    header = _header(first, delimiter) if names is None else list(names)
    if header is None or any(name not in header for name in columns) or len(set(header)) < len(header):
        return None
    columns = {**columns, **{name: ours for name, ours in (optional or {}).items() if name in header}}
    layout = ", ".join(f"'{_quote(name)}': 'VARCHAR'" for name in header)
    ours = list(columns.values())
    # a time that is not plain digits reads differently in pandas: NULL here sends the file to the readers
    time = "CASE WHEN regexp_full_match(t, '-?[0-9]{1,18}') THEN TRY_CAST(t AS BIGINT) END" if "t" in ours else "0::BIGINT"
    fields = {f'"{_quote(name)}"': columns.get(name) for name in header}
    valid = ["true"]
    if names is not None:  # the readers require every field of a header-less line
        valid += [f"{field} IS NOT NULL" for field, c in fields.items() if c is None]
    if len(delimiter) > 1:  # the readers split on the unit separator after replacing the delimiter by it
        valid += [f"NOT contains({field}, chr(31))" for field in fields]
    selected = ", ".join(f"{field} AS {c}" for field, c in fields.items() if c is not None)
    quoting = "'\"'" if quote else "''"
    compression = "gzip" if path.suffix == ".gz" else "none"
    lines = _count_lines_beside(path)
    try:
        con.execute(f"""CREATE TABLE raw AS SELECT CASE WHEN ok THEN u END AS u, i, {time} AS t, 0::BIGINT AS f FROM (
                        SELECT {selected}, {' AND '.join(valid)} AS ok
                        FROM read_csv('{_quote(str(path))}', header = {names is None}, auto_detect = false,
                                      delim = '{_quote(delimiter)}', quote = {quoting}, escape = {quoting},
                                      strict_mode = true, compression = '{compression}', columns = {{{layout}}}))""")
    except duckdb.Error:
        return _discard(con)
    if not _reads_as_the_readers_do(con, lines.result(), columns if names is None else {}, "t" in ours):
        return _discard(con)
    return set(ours)


def read_json(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None, *,
              strict: bool = True, time_unit: str = "s") -> set[str] | None:
    """``read_csv`` for a JSON-lines file: read only when every id is a trimmed JSON string or an integer, every
    time a 64-bit JSON integer (``time_unit`` ``s`` or ``ms``), no key named twice (``strict``: in nested
    objects too), no trailing comma and no blank line; anything else is left to the readers."""
    import duckdb

    columns = {**columns, **(optional or {})}
    keys = list(columns)
    at = {c: f"e[{n}]" for n, c in enumerate(columns.values(), 1)}
    if "t" not in at:
        return None
    integer = "CASE WHEN json_type({0}) IN ('BIGINT', 'UBIGINT') THEN TRY_CAST({0}::VARCHAR AS BIGINT) END"
    ident = ("CASE json_type({0}) WHEN 'VARCHAR' THEN {0} ->> '$' WHEN 'BIGINT' THEN {0}::VARCHAR "
             "WHEN 'UBIGINT' THEN {0}::VARCHAR END")
    ms = integer.format(at["t"])
    # floored division: DuckDB's % keeps the dividend's sign, Python's divmod (the readers') the divisor's
    fraction = f"((({ms}) % 1000 + 1000) % 1000)"
    t, f = (f"(({ms}) - {fraction}) // 1000", f"{fraction} * 1000000") if time_unit == "ms" else (ms, "0::BIGINT")
    # keys named once: known without hashing them on lines that name the first line's keys in its order
    usual = _first_keys(path)
    distinct = "len(k) = len(list_distinct(k))"
    if usual:
        distinct = f"CASE WHEN k = [{', '.join(map(_literal, usual))}]::VARCHAR[] THEN true ELSE {distinct} END"
    valid = [distinct, r"NOT regexp_matches(j, ',[ \t\r\n]*[\]}]')"]
    if strict:  # a nested object's keys too, on the lines with a second brace (few: only those pay for the check)
        valid.append("""CASE WHEN contains(substr(j, 2), '{') THEN coalesce(list_bool_and(list_transform(
                            json_extract(j, '$..*'), lambda x: json_type(x) <> 'OBJECT'
                            OR len(json_keys(x)) = len(list_distinct(json_keys(x))))), true) ELSE true END""")
    optional_time = "t" in (optional or {}).values()
    if optional_time:  # a missing key: no time (f = 1 marks it); a key without an integer: the readers'
        valid.append(f"({at['t']} IS NULL OR {t} IS NOT NULL)")
        t, f = f"coalesce({t}, 0)", f"CASE WHEN {at['t']} IS NULL THEN 1 ELSE {f} END"
    paths = ", ".join(f"'$.\"{key}\"'" for key in keys)  # keys are the sources' own field names
    compression = "gzip" if path.suffix == ".gz" else "none"
    lines = _count_lines_beside(path)
    try:
        con.execute(f"""CREATE TABLE raw AS SELECT CASE WHEN {' AND '.join(valid)} THEN {ident.format(at['u'])} END AS u,
                               {ident.format(at['i'])} AS i, {t} AS t, {f} AS f
                        FROM (SELECT json AS j, json_extract(json, [{paths}]) AS e, json_keys(json) AS k
                              FROM read_ndjson_objects('{_quote(str(path))}', compression = '{compression}'))""")
        rows, bad, untimed = con.execute("""SELECT count(*), count(*) FILTER (u IS NULL OR i IS NULL OR t IS NULL),
                                            count(*) FILTER (f = 1) FROM raw""").fetchone()
    except duckdb.Error:
        return _discard(con)
    lines = lines.result()
    if (bad or rows == 0 or lines is None or rows != lines[0] + (not lines[1])
            or (optional_time and untimed not in (0, rows)) or not _ids_as_the_readers_give(con)):
        return _discard(con)
    return {"u", "i"} | ({"t"} if not optional_time or untimed == 0 else set())


def read(con, scan) -> set[str] | None:
    """The file of ``scan`` (a ``sources.EngineScan``) read into the ``raw`` table: the columns read, or None."""
    if scan.format == "parquet":
        return read_parquet(con, scan.path, scan.columns, scan.optional)
    if scan.format == "json":
        return read_json(con, scan.path, scan.columns, scan.optional, strict=scan.strict, time_unit=scan.time_unit)
    return read_csv(con, scan.path, scan.columns, scan.optional, delimiter=scan.delimiter, names=scan.names,
                    quote=scan.quote)


# Parquet id types that the readers turn into the same text as a SQL cast; other types go to the readers.
_PARQUET_IDS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer)


def read_parquet(con, path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> set[str] | None:
    """``read_csv`` for a Parquet file whose ids are strings or integers and times integers, none null or untrimmed."""
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
        return _discard(con)
    return set(ours)


def _discard(con) -> None:
    """Drop the ``raw`` table read so far: the readers read the file instead."""
    con.execute("DROP TABLE IF EXISTS raw")


def _ids_as_the_readers_give(con) -> bool:
    """Every distinct id of the ``raw`` table non-empty and trimmed, as the canonical form leaves it."""
    for c in ("u", "i"):
        blank = f"{c} IS NULL OR {c} = '' OR {c} <> trim({c}, '{WHITESPACE}')"
        if con.execute(f"SELECT count(*) FILTER ({blank}) FROM (SELECT DISTINCT {c} FROM raw)").fetchone()[0]:
            return False
    return True


def _reads_as_the_readers_do(con, lines: tuple[int, bool] | None, columns: dict[str, str], timed: bool) -> bool:
    """Whether the ``raw`` table holds what the readers give: ids as ``_ids_as_the_readers_give``, integer times,
    no repeated header (``columns``: the header's names), and one row per line (``lines``: ``_lines``)."""
    header = [f"{ours} = '{_quote(name)}'" for name, ours in columns.items() if ours != "t"]
    problems = (["t IS NULL"] if timed else []) + ([f"({' AND '.join(header)})"] if header else [])
    rows, bad_rows = con.execute(f"""SELECT count(*), count(*) FILTER ({' OR '.join(problems) or 'false'})
                                     FROM raw""").fetchone()
    if bad_rows or rows == 0 or not _ids_as_the_readers_give(con):
        return False
    return lines is not None and lines[1] and rows + bool(columns) == lines[0]


# Every character Python's str.strip removes, which the canonical id form strips (docs/datasets.md).
WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace()).replace("'", "")


def _quote(text: str) -> str:
    return text.replace("'", "''").replace('"', '""')


BOM = b"\xef\xbb\xbf"


def _header(first: bytes, delimiter: str) -> list[str] | None:
    """The names of a header line when it is UTF-8 and every name plain (trimmed, no quote); else None."""
    try:
        names = first.decode("utf-8").rstrip("\r\n").split(delimiter)
    except UnicodeDecodeError:
        return None
    return names if all(name == name.strip() and name and '"' not in name for name in names) else None


def _first_keys(path: Path) -> list[str] | None:
    """The keys of the first line's object, when it is one and names each key once; else None."""
    try:
        pairs = json.loads(_first_line(path) or b"", object_pairs_hook=lambda pairs: pairs)
    except ValueError:
        return None
    keys = [key for key, _ in pairs] if isinstance(pairs, list) and all(isinstance(p, tuple) for p in pairs) else []
    return keys if keys and len(set(keys)) == len(keys) else None


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(path: Path) -> bytes | None:
    """The first line of the file (``.gz``: gunzipped); None when it is empty or unreadable."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            return f.readline() or None
    except (OSError, EOFError, zlib.error):
        return None


def _count_lines_beside(path: Path) -> Future:
    """``_lines(path)`` in another thread while DuckDB reads the file."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="genrec-lines")
    try:
        return pool.submit(_lines, path)
    finally:
        pool.shutdown(wait=False)


def _lines(path: Path) -> tuple[int, bool] | None:
    """Line breaks in the file (``.gz``: gunzipped, every member) and whether it ends with one, counted in
    chunks by numpy; None when a gzip stream is damaged or cut short."""
    lines, last = 0, b""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            while chunk := f.read(CHUNK):
                lines += int(np.count_nonzero(np.frombuffer(chunk, np.uint8) == ord("\n")))
                last = chunk[-1:]
    except (EOFError, gzip.BadGzipFile, zlib.error):
        return None
    return lines, last == b"\n"


def empty_after_kcore(name: str, min_user: int, min_item: int, rows_read: int, options: str) -> DataError:
    """The error for a log k-core filtering leaves empty; ``options`` names the thresholds to lower."""
    return DataError(f"dataset {name!r} is empty after k-core filtering (min_user_interactions={min_user}, "
                     f"min_item_interactions={min_item}, {rows_read} rows read): lower {options}")


def build(con, out: Path, name: str, min_user: int, min_item: int, counts: dict[str, int],
          item_order: Callable[[np.ndarray], np.ndarray]) -> None:
    """Filter, number and order the ``raw`` table (u, i, t, f in file order) into the sequence files in ``out``;
    ``item_order`` orders the distinct raw item ids, ``counts`` receives the per-step counts."""
    sql = con.execute
    counts["rows_read"], counts["users_read"], counts["items_read"] = sql(
        "SELECT count(*), count(DISTINCT u), count(DISTINCT i) FROM raw").fetchone()
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
    """Stream record batches into one int64 ``.npy`` file per column, by plain writes (no page mapped)."""
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
