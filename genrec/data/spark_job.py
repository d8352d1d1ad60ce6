"""Preprocessing as a PySpark job: a partitioned Parquet (or CSV) log -> the sequence files of docs/datasets.md.

The cluster reads, filters, numbers and sorts the log by the engine's rules (docs/datasets.md, "Beyond one
machine"); the driver streams the sorted rows into the files. Needs ``pip install genrec[spark]`` and Java 17+.

    python -m genrec.data.spark_job --input logs/ --output sequences/ [--min-user 5 --min-item 5]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from genrec.data import engine, preprocess, sources
from genrec.data.raw import DataError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

ID_COLUMNS = {"user_id": "user", "item_id": "item"}
TIME_COLUMN = "timestamp"
FORMATS = ("parquet", "csv")
INTEGER = r"^-?[0-9]{1,18}$"
INSTALL = "install it with `pip install genrec[spark]` (and Java 17 or later, e.g. `apt-get install openjdk-17-jre-headless`)"


def _pyspark():
    try:
        import pyspark.sql.functions as F
        import pyspark.sql.types as T
    except ImportError as err:
        raise DataError(f"the Spark job needs pyspark ({err}); {INSTALL}") from None
    return F, T


def session(master: str = "local[*]", shuffle_partitions: int | None = None, app: str = "genrec-preprocess") -> SparkSession:
    """A SparkSession for the job (``master`` as ``spark-submit --master``), with quiet logs."""
    _pyspark()
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(master).appName(app).config("spark.ui.enabled", "false")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    if shuffle_partitions is not None:
        builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def run(spark: SparkSession, source: str, output: Path, min_user_interactions: int = 0, min_item_interactions: int = 0,
        name: str | None = None, input_format: str | None = None, staging: Path | None = None) -> dict[str, int]:
    """Preprocess the log at ``source`` (Parquet or CSV files: ``user_id``, ``item_id``[, ``timestamp``]) into
    the new folder ``output``, whole or not at all, and return the counts; ``staging``: intermediate files,
    reached by every executor at the same path (default: beside ``output``)."""
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DataError(f"--output {output} exists and is not empty; name a new folder (the job never overwrites one)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=output.name + ".tmp", dir=output.parent))
    work = Path(tempfile.mkdtemp(prefix="staging", dir=staging or tmp))
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # datetimes count from the epoch in UTC, as pandas reads them
    try:
        name = name or Path(source.rstrip("/")).name
        frame, has_timestamps = _read(spark, source, input_format)
        log, counts = _canonical(frame, source, has_timestamps)
        log, files = _row_numbers(log, work)
        log = log.persist()
        # the files' paths, sizes and modification times: hashing every byte would double the job
        fingerprint = hashlib.sha256(json.dumps([input_format or "", files]).encode()).hexdigest()[:16]
        try:
            _build(spark, log, tmp, work, name, min_user_interactions, min_item_interactions, counts)
        finally:
            log.unpersist()
        shutil.rmtree(work, ignore_errors=True)
        preprocess._write_meta(tmp, name, has_timestamps, counts, fingerprint)
        os.replace(tmp, output)
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def _read(spark: SparkSession, source: str, input_format: str | None) -> tuple[DataFrame, bool]:
    """The log's columns as read, with where each row was read (file, split, ``m``), and whether it has times."""
    from pyspark.errors import AnalysisException

    F, _ = _pyspark()
    input_format = input_format or ("csv" if source.removesuffix(".gz").endswith(".csv") else "parquet")
    if input_format not in FORMATS:
        raise DataError(f"--format {input_format!r} is not one of {FORMATS}")
    reader = spark.read.option("recursiveFileLookup", "false")
    if input_format == "csv":
        reader = reader.options(header=True, inferSchema=False, quote='"', escape='"', multiLine=False,
                                mode="FAILFAST", encoding="UTF-8")
    try:
        frame = reader.format(input_format).load(source)
        frame = frame.toDF(*[c.strip() for c in frame.columns])
    except AnalysisException as err:
        raise DataError(f"{source}: cannot be read as {input_format} ({_first_line(err)}); point --input at "
                        f"a {input_format} file or folder of them, or set --format") from None
    sources.check_unique(frame.columns, source)
    for column in ID_COLUMNS:
        if column not in frame.columns:
            raise DataError(f"{source} has no column {column!r} (columns: {frame.columns}); the log needs user_id, "
                            "item_id and optionally timestamp")
    has_timestamps = TIME_COLUMN in frame.columns
    columns = [*ID_COLUMNS, *([TIME_COLUMN] if has_timestamps else [])]
    return frame.select(*columns, F.col("_metadata.file_path").alias("file"),
                        F.col("_metadata.file_block_start").alias("block"),
                        F.col("_metadata.file_size").alias("size"),
                        F.col("_metadata.file_modification_time").alias("modified"),
                        F.monotonically_increasing_id().alias("m")), has_timestamps


def _canonical(frame: DataFrame, source: str, has_timestamps: bool) -> tuple[DataFrame, dict[str, int]]:
    """Columns ``u``, ``i`` (canonical ids), ``t``, ``f`` (seconds, nanoseconds), and the counts of ids the
    canonical form changed; a missing id or time is an error naming its file."""
    F, _ = _pyspark()
    exprs = {}
    checks = []
    for column, what in ID_COLUMNS.items():
        canonical, changes = _canonical_id(frame, column, source)
        exprs[what[0]] = canonical
        checks.append((f"no {column} (empty or null)", canonical.isNull()))
        for change, flag in changes.items():
            exprs[f"{what}_ids_{change}"] = flag
    if has_timestamps:
        seconds, nanos, bad = _seconds(frame, source)
        exprs["t"], exprs["f"] = seconds, nanos
        checks.append((f"a {TIME_COLUMN} that is not a number of unix seconds within a signed 64-bit integer", bad))
    else:
        exprs["t"] = exprs["f"] = F.lit(0).cast("bigint")
    for n, (_, bad) in enumerate(checks):
        exprs[f"b{n}"] = bad
    log = frame.select(*(e.alias(k) for k, e in exprs.items()), "file", "block", "size", "modified", "m")
    flags = [k for k in exprs if k.endswith(("_stripped", "_float_to_int"))]
    with _read_errors(source):  # the first pass over every row: where Spark meets a row it cannot parse
        row = log.agg(F.count(F.lit(1)).alias("rows"), *(F.sum(F.col(c).cast("long")).alias(c) for c in flags),
                      *(F.max(F.when(F.col(f"b{n}"), F.col("file"))).alias(f"p{n}") for n in range(len(checks)))).first()
    if not row["rows"]:
        raise DataError(f"{source} holds no interactions (its files have no rows); check that it is the right input")
    for n, (what, _) in enumerate(checks):
        if row[f"p{n}"] is not None:
            raise DataError(f"{row[f'p{n}']} (in {source}): a row has {what}; fix or remove it")
    counts = {k: int(row[k]) for k in flags if row[k]}
    return log.select("u", "i", "t", "f", "file", "block", "size", "modified", "m"), counts


def _first_line(err: Exception) -> str:
    """Spark's own words, less the JVM's stack and the query plan."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


@contextmanager
def _read_errors(source: str) -> Iterator[None]:
    """A file Spark fails to read or parse as a ``DataError`` naming it, with the JVM's causes, without its stack."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    try:
        yield
    except PySparkException as err:
        raise DataError(f"{source} cannot be read: {_first_line(err)}; fix or remove that row") from None
    except Py4JJavaError as err:
        causes, cause = [], err.java_exception
        while cause is not None and len(causes) < 4:
            causes.append(_first_line(Exception(cause.getMessage() or cause.getClass().getName())))
            cause = cause.getCause()
        raise DataError(f"{source} cannot be read: {' <- '.join(causes)}; fix or remove that row") from None


def _canonical_id(frame: DataFrame, column: str, source: str) -> tuple[Column, dict[str, Column]]:
    """The canonical id of a column, null where missing, and a flag per change it made."""
    F, T = _pyspark()
    col = F.col(column)
    kind = frame.schema[column].dataType
    if isinstance(kind, T.StringType):
        stripped = F.trim(col, F.lit(engine.WHITESPACE))
        canonical = F.when(stripped != "", stripped)
        return canonical, {"stripped": F.length(stripped) != F.length(col)}
    if isinstance(kind, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return col.cast("string"), {}
    if isinstance(kind, (T.FloatType, T.DoubleType)):
        value = col.cast("double")
        whole = (value == F.floor(value)) & (F.abs(value) < 2.0**63)
        exact = F.udf(_float_id, "string")(value)  # the shortest repr, and every digit of large whole numbers
        canonical = F.when(F.isnan(value), None).when(whole, value.cast("long").cast("string")).otherwise(exact)
        return canonical, {"float_to_int": F.coalesce(value == F.floor(value), F.lit(False)) & ~F.isnan(value)}
    raise DataError(f"{source}: column {column!r} holds {kind.simpleString()}; ids must be text or whole numbers "
                    "(or floating-point numbers): cast the column to string")


def _float_id(value: float | None) -> str | None:
    """``sources.canonical_id`` of a floating-point id; an infinite one is missing (an error)."""
    return None if value is None or value != value or abs(value) == float("inf") else sources.canonical_id(value)[0]


def _seconds(frame: DataFrame, source: str) -> tuple[Column, Column, Column]:
    """Unix seconds (floored), nanoseconds within the second, and where the time is unusable, as
    ``sources.to_seconds`` reads them."""
    F, T = _pyspark()
    col = F.col(TIME_COLUMN)
    kind = frame.schema[TIME_COLUMN].dataType
    zero = F.lit(0).cast("bigint")
    if isinstance(kind, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
        return col.cast("bigint"), zero, col.isNull()
    if isinstance(kind, (T.TimestampType, T.TimestampNTZType)):
        micros = F.unix_micros(col.cast("timestamp"))
        return F.floor(micros / 1_000_000).cast("bigint"), F.pmod(micros, F.lit(1_000_000)) * 1000, col.isNull()
    if isinstance(kind, T.StringType):
        text = F.trim(col)
        whole = text.rlike(INTEGER)
        if frame.where(col.isNotNull() & ~whole).limit(1).count() == 0:
            return text.cast("bigint"), zero, col.isNull()
        return _float_seconds(F.when(whole | text.rlike(r"^[-+0-9.eE]+$"), text).cast("double"))
    if isinstance(kind, (T.FloatType, T.DoubleType, T.DecimalType)):
        return _float_seconds(col.cast("double"))
    raise DataError(f"{source}: column {TIME_COLUMN!r} holds {kind.simpleString()}, not a time (unix seconds as a "
                    "number, or a timestamp); cast it")


def _float_seconds(value: Column) -> tuple[Column, Column, Column]:
    F, _ = _pyspark()
    bad = value.isNull() | F.isnan(value) | (value < -(2.0**63)) | (value >= 2.0**63)
    floor = F.floor(value).cast("double")
    return F.floor(value).cast("bigint"), F.bround((value - floor) * 1e9, 0).cast("bigint"), bad


def _row_numbers(log: DataFrame, work: Path) -> tuple[DataFrame, list[list[Any]]]:
    """``log`` with ``r``, each row's place in input order, and the files read (path, size, modification time).
    A split's rows hold consecutive ``m``; its first row's place is the rows of the splits before it."""
    F, _ = _pyspark()
    splits = _collect(log.groupBy("file", "block", "size", "modified").agg(
        F.min("m").alias("first"), F.count(F.lit(1)).alias("n")), work / "splits").to_pandas()
    splits = splits.sort_values(["file", "block"], kind="stable")
    files = [[path, int(size), str(modified)] for path, size, modified
             in splits[["file", "size", "modified"]].drop_duplicates("file").itertuples(index=False)]
    splits["start"] = np.cumsum(splits["n"].to_numpy()) - splits["n"].to_numpy()
    table = _spread(log.sparkSession, pa.Table.from_pandas(splits[["file", "block", "first", "start"]],
                                                           preserve_index=False), work / "split_starts")
    placed = log.join(F.broadcast(table), ["file", "block"])
    return placed.select("u", "i", "t", "f", (F.col("start") + F.col("m") - F.col("first")).alias("r")), files


def _build(spark: SparkSession, log: DataFrame, out: Path, work: Path, name: str, min_user: int, min_item: int,
           counts: dict[str, int]) -> None:
    F, _ = _pyspark()
    totals = log.agg(F.count(F.lit(1)), F.countDistinct("u"), F.countDistinct("i")).first()
    counts["rows_read"], counts["users_read"], counts["items_read"] = (int(v) for v in totals)
    kept, rows = log, counts["rows_read"]
    while min_user > 1 or min_item > 1:
        users = kept.groupBy("u").count().where(F.col("count") >= int(min_user)).select("u")
        items = kept.groupBy("i").count().where(F.col("count") >= int(min_item)).select("i")
        smaller = kept.join(users, "u", "left_semi").join(items, "i", "left_semi").persist()
        left = smaller.count()
        if kept is not log:
            kept.unpersist()
        kept = smaller
        if left == rows or left == 0:
            rows = left
            break
        rows = left
    counts["rows_removed_by_kcore"] = counts["rows_read"] - rows
    if rows == 0:
        raise engine.empty_after_kcore(name, min_user, min_item, counts["rows_read"], "--min-user / --min-item")
    firsts = log.groupBy("u").agg(F.min("r").alias("first"))
    users = _dense_rank(firsts.join(kept.select("u").distinct(), "u", "left_semi"), "first", "uid")
    item_firsts = log.groupBy("i").agg(F.min("r").alias("first")).join(kept.select("i").distinct(), "i", "left_semi")
    raw_ids = _collect(item_firsts, work / "items").sort_by("first").column("i").to_numpy(zero_copy_only=False)
    ordered = raw_ids.astype(object)[preprocess._raw_order(raw_ids.astype(object))]
    item_map = _spread(spark, pa.table({"i": pa.array(ordered, pa.string()),
                                        "iid": np.arange(1, len(ordered) + 1, dtype=np.int64)}), work / "item_map")
    user_count = users.count()
    counts["users_removed_by_kcore"] = counts["users_read"] - user_count
    counts["items_removed_by_kcore"] = counts["items_read"] - len(ordered)
    counts.update(users=user_count, items=len(ordered), interactions=rows)

    rows_out = (kept.join(users, "u").join(item_map, "i").orderBy("uid", "t", "f", "r")
                .select("uid", "iid", "t"))
    rows_out.write.parquet(str(work / "sequences"))
    batches = _sequences(_parquet_batches(work / "sequences"), out / "offsets.npy", user_count, rows)
    written = engine.write_columns(batches, out, rows, ("items", "timestamps"))
    if written != rows:
        raise RuntimeError(f"the job wrote {written} of {rows} interactions")  # a join lost rows: a bug, not data
    users.orderBy("uid").select(F.col("u").alias("user_id")).write.parquet(str(work / "users"))
    schema = pa.schema([pa.field("user_id", pa.string(), nullable=False)])  # as the engine's file
    with pq.ParquetWriter(out / "user_ids.parquet", schema) as writer:
        for batch in _parquet_batches(work / "users"):
            writer.write_table(pa.Table.from_batches([batch]).cast(schema))
    users.unpersist()
    if kept is not log:
        kept.unpersist()
    pq.write_table(pa.table({"item_id": pa.array(["<pad>", *ordered], pa.string())}), out / "item_ids.parquet")


def _dense_rank(frame: DataFrame, key: str, name: str) -> DataFrame:
    """``frame`` with ``name`` = 0, 1, ... in the order of its unique column ``key``, without one partition."""
    F, _ = _pyspark()
    ranked = frame.orderBy(key).withColumn("m", F.monotonically_increasing_id())
    ranked = ranked.withColumn("p", F.shiftright("m", 33)).persist()
    parts = ranked.groupBy("p").agg(F.min("m").alias("p_first"), F.count(F.lit(1)).alias("n")).orderBy("p").collect()
    starts, total = [], 0
    for part in parts:
        starts.append((part["p"], part["p_first"], total))
        total += part["n"]
    table = frame.sparkSession.createDataFrame(starts, "p long, p_first long, p_start long")
    placed = ranked.join(F.broadcast(table), "p")
    placed = placed.select(*frame.columns, (F.col("p_start") + F.col("m") - F.col("p_first")).alias(name)).persist()
    placed.count()
    ranked.unpersist()
    return placed


def _collect(frame: DataFrame, path: Path) -> pa.Table:
    """A small result brought to the driver through Parquet (no pandas conversion inside Spark)."""
    frame.write.parquet(str(path))
    return pq.read_table(path)


def _spread(spark: SparkSession, table: pa.Table, path: Path) -> DataFrame:
    """A table made on the driver, given to the executors through Parquet."""
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    return spark.read.parquet(str(path))


def _parquet_batches(folder: Path) -> Iterator[pa.RecordBatch]:
    """The rows Spark wrote to ``folder``, in order: a sorted result's part files are numbered in its order."""
    for path in sorted(folder.glob("part-*.parquet"), key=lambda path: int(path.name.split("-")[1])):
        yield from pq.ParquetFile(path).iter_batches(engine.BATCH_ROWS)


def _sequences(batches: Iterator[pa.RecordBatch], offsets_path: Path, users: int, rows: int) -> Iterator[pa.RecordBatch]:
    """The (item, time) columns of the sorted rows, their user column written as ``offsets.npy`` on the way."""
    with open(offsets_path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (users + 1,)})
        seen, last = 0, -1
        for batch in batches:
            uid = batch.column("uid").to_numpy()
            starts = np.flatnonzero(np.diff(uid, prepend=last))
            new = uid[starts]
            if len(new) and not np.array_equal(new, np.arange(last + 1, last + 1 + len(new))):
                raise RuntimeError("the sorted rows skip or repeat a user")  # a bug in the sort, not in the data
            f.write((starts + seen).astype("<i8").tobytes())
            last = int(uid[-1]) if len(uid) else last
            seen += len(uid)
            yield pa.record_batch([batch.column("iid"), batch.column("t")], names=["iid", "t"])
        if last + 1 != users or seen != rows:
            raise RuntimeError(f"the sorted rows hold {last + 1} users and {seen} rows, not {users} and {rows}")
        f.write(np.int64(rows).astype("<i8").tobytes())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m genrec.data.spark_job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="a Parquet or CSV file, or a folder (partitioned) of them")
    parser.add_argument("--output", required=True, type=Path, help="the new folder for the sequence files")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: csv when --input ends in .csv")
    parser.add_argument("--min-user", type=int, default=0, help="k-core: keep users with at least this many rows")
    parser.add_argument("--min-item", type=int, default=0, help="k-core: keep items with at least this many rows")
    parser.add_argument("--name", default=None, help="the dataset's name in meta.json (default: the input's name)")
    parser.add_argument("--master", default="local[*]", help="Spark master (default local[*])")
    parser.add_argument("--shuffle-partitions", type=int, default=None,
                        help="spark.sql.shuffle.partitions (Spark's default 200 suits a cluster; local mode wants a few)")
    parser.add_argument("--staging", type=Path, default=None,
                        help="folder for intermediate files, reachable from every executor (default: beside --output)")
    args = parser.parse_args(argv)
    _pyspark()
    from pyspark.sql import SparkSession

    started = SparkSession.getActiveSession() is None  # a caller's session (a notebook, a test) is left running
    spark = session(args.master, args.shuffle_partitions)
    try:
        counts = run(spark, args.input, args.output, args.min_user, args.min_item, args.name, args.format, args.staging)
    finally:
        if started:
            spark.stop()
    print(json.dumps(counts))
    return counts


if __name__ == "__main__":
    main()
