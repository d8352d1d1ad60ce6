"""The PySpark job against the one-machine path: the same files from the same log, in Spark local mode.

One SparkSession serves the module (a JVM start costs seconds). Small file splits make Spark read
every file in several pieces, so input order has to be rebuilt from them, as on a cluster.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genrec.data import SequenceDataModule, preprocess, spark_job
from genrec.data.raw import DataError
from genrec.data.registry import get_source
from tests.conftest import REPO, shared_data

ENGINE_COUNTS = ("rows_read", "users_read", "items_read", "rows_removed_by_kcore", "users_removed_by_kcore",
                 "items_removed_by_kcore", "users", "items", "interactions")


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("the Spark job needs Java (apt-get install openjdk-17-jre-headless)")
    session = spark_job.session("local[1]", shuffle_partitions=2)
    session.conf.set("spark.sql.files.maxPartitionBytes", "64k")  # several splits per file
    session.conf.set("spark.sql.files.openCostInBytes", "0")
    yield session
    session.stop()


def write_parts(frame: pd.DataFrame, folder: Path, parts: int, row_group: int, kind: str = "parquet") -> None:
    """``frame`` cut into ``parts`` files, in order, in Hive-style partition folders; each file is
    larger than the one before, so Spark (which reads the largest pieces first) reads them out of order."""
    sizes = np.arange(1, parts + 1)
    cuts = np.round(np.cumsum(sizes)[:-1] / sizes.sum() * len(frame)).astype(int)
    for n, chunk in enumerate(np.split(np.arange(len(frame)), cuts)):
        part = folder / f"chunk={n:03d}"
        part.mkdir(parents=True)
        rows = frame.iloc[chunk]
        if kind == "csv":
            rows.to_csv(part / "part-00000.csv", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), part / "part-00000.parquet",
                           row_group_size=row_group)


def one_machine(source, out: Path, min_user: int = 0, min_item: int = 0) -> Path:
    out.mkdir()
    preprocess.write(source, out, min_user, min_item)
    return out


def assert_same_files(ours: Path, theirs: Path, counts_of: tuple[str, ...] | None = None) -> None:
    for name in ("offsets", "items", "timestamps"):
        assert (ours / f"{name}.npy").read_bytes() == (theirs / f"{name}.npy").read_bytes(), name
    for name in ("user_ids", "item_ids"):
        assert pq.read_table(ours / f"{name}.parquet").equals(pq.read_table(theirs / f"{name}.parquet")), name
    meta, expected = (json.loads((folder / "meta.json").read_text()) for folder in (ours, theirs))
    wanted = expected["counts"] if counts_of is None else {k: expected["counts"][k] for k in counts_of}
    assert meta["counts"] == wanted
    assert meta["has_timestamps"] == expected["has_timestamps"]
    assert preprocess.check(ours) is None  # every digest in meta.json holds
    data = preprocess.load(ours)
    assert data.num_interactions == meta["counts"]["interactions"]
    module = SequenceDataModule(dataset="sequences", root=str(ours), cache_dir=str(ours.parent / "verified"))
    np.testing.assert_array_equal(module.data.items, np.load(theirs / "items.npy"))  # what training reads


def synthetic_log(seed: int = 0) -> pd.DataFrame:
    """Repeated rows, equal times within a user, users met first in rows k-core drops, numeric item
    ids whose text order differs from their numeric order, ids with surrounding spaces."""
    rng = np.random.default_rng(seed)
    rows = 3000
    users = rng.zipf(1.6, rows) % 60
    items = rng.zipf(1.4, rows) % 90 + 1
    frame = pd.DataFrame({
        "user_id": [f" u{u}" if u % 7 == 0 else f"u{u}" for u in users],
        "item_id": [str(i) for i in items],
        "timestamp": rng.integers(0, 40, rows) + rng.choice([0.0, 0.25, 0.5], rows),
    })
    frame = pd.concat([frame, frame.iloc[100:130]], ignore_index=True)  # exact duplicates, later in the file
    return frame


def float_ids_log() -> pd.DataFrame:
    """Floating-point item ids (whole ones become integers) and datetime times."""
    frame = synthetic_log(1)
    frame["item_id"] = frame["item_id"].astype(float) + np.where(frame.index % 5 == 0, 0.5, 0.0)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"] * 1e6, unit="us")
    return frame


CASES = {
    "text ids, fractional times, k-core": (synthetic_log, "parquet", 3, 3),
    "csv": (synthetic_log, "csv", 2, 2),
    "no times: input order": (lambda: synthetic_log().drop(columns="timestamp"), "parquet", 2, 4),
    "float ids, datetimes": (float_ids_log, "parquet", 0, 3),
}


@pytest.mark.parametrize("case", CASES)
def test_synthetic_logs_give_the_one_machine_files(spark, tmp_path, case):
    make, kind, min_user, min_item = CASES[case]
    frame = make()
    plain = tmp_path / "plain"
    plain.mkdir()
    if kind == "csv":
        frame.to_csv(plain / "interactions.csv", index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), plain / "interactions.parquet")
    write_parts(frame, tmp_path / "log", parts=3, row_group=200, kind=kind)
    theirs = one_machine(get_source("plain", root=str(plain)), tmp_path / "theirs", min_user, min_item)
    counts = spark_job.run(spark, str(tmp_path / "log"), tmp_path / "ours", min_user, min_item, input_format=kind)
    assert_same_files(tmp_path / "ours", theirs)
    removed = counts["rows_removed_by_kcore"]
    assert removed > 0 if min_user > 1 or min_item > 1 else removed == 0


@pytest.mark.slow
def test_ml1m_as_partitioned_parquet_gives_the_one_machine_files(spark, tmp_path):
    root = shared_data("ml-1m")
    ratings = pd.read_csv(root / "ratings.dat", sep="::", engine="python", header=None,
                          names=["user_id", "item_id", "rating", "timestamp"])
    write_parts(ratings.drop(columns="rating"), tmp_path / "log", parts=4, row_group=50_000)
    theirs = one_machine(get_source("ml-1m", root=str(root)), tmp_path / "theirs", 0, 10)
    spark_job.main(["--input", str(tmp_path / "log"), "--output", str(tmp_path / "ours"), "--min-item", "10",
                    "--master", "local[1]"])
    assert_same_files(tmp_path / "ours", theirs, counts_of=ENGINE_COUNTS)


def test_a_missing_column_is_named_with_the_input(spark, tmp_path):
    write_parts(synthetic_log().drop(columns="item_id"), tmp_path / "log", parts=1, row_group=1000)
    with pytest.raises(DataError, match=r"log has no column 'item_id'"):
        spark_job.run(spark, str(tmp_path / "log"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_empty_input_is_an_error(spark, tmp_path):
    write_parts(synthetic_log().iloc[:0], tmp_path / "log", parts=1, row_group=1000)
    with pytest.raises(DataError, match="holds no interactions"):
        spark_job.run(spark, str(tmp_path / "log"), tmp_path / "out")


def test_a_missing_id_names_its_file(spark, tmp_path):
    frame = synthetic_log()
    frame.loc[2500, "user_id"] = None
    write_parts(frame, tmp_path / "log", parts=2, row_group=1000)
    with pytest.raises(DataError, match=r"chunk=001/part-00000.parquet .*no user_id"):
        spark_job.run(spark, str(tmp_path / "log"), tmp_path / "out")


def test_an_existing_output_is_never_overwritten(spark, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not empty"):
        spark_job.run(spark, str(tmp_path / "log"), tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_genrec_imports_without_pyspark_and_the_job_says_how_to_install_it():
    """pyspark is an optional extra: every module imports without it, and the job names the extra."""
    code = ("import sys; sys.modules['pyspark'] = None\n"
            "import genrec.data, genrec.data.spark_job as job\n"
            "try:\n    job.main(['--input', 'x', '--output', 'y'])\n"
            "except job.DataError as err:\n    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "pip install genrec[spark]" in done.stdout


def test_a_csv_row_spark_cannot_parse_is_an_error_naming_the_input(spark, tmp_path):
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu1,a,1\nu1,b,2,extra\n")
    with pytest.raises(DataError, match=r"log.csv cannot be read: .*fix or remove that row"):
        spark_job.run(spark, str(tmp_path / "log.csv"), tmp_path / "out")
