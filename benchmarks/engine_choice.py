"""DuckDB against Polars' streaming engine on the preprocessing genrec needs, for choosing one.

One pipeline, written in each engine: read an ML-20M-layout ``ratings.csv`` (ids as text, times
as integers), number the rows in file order, iterative k-core filtering, users numbered by first
appearance, items by raw id, sort by (user, time, file order), write the CSR arrays as ``.npy``.
Each run is a fresh process; its peak RSS (``ru_maxrss``) and wall time are printed.

    python benchmarks/data_scale.py --workdir /tmp/w --sizes 20000000   # writes the log (and measures genrec)
    python benchmarks/engine_choice.py /tmp/w/ml20m-20000000/ratings.csv --memory 1GB --kcore 5
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def duckdb_pipeline(csv: Path, out: Path, memory: str, threads: int, k: int) -> int:
    import duckdb

    con = duckdb.connect(str(out / "work.duckdb"))
    con.execute(f"SET memory_limit='{memory}'; SET threads={threads}; SET temp_directory='{out / 'spill'}'")
    con.execute(f"""CREATE TABLE raw AS SELECT "userId" AS u, "movieId" AS i, "timestamp" AS t
                    FROM read_csv('{csv}', header=true, columns={{'userId':'VARCHAR','movieId':'VARCHAR',
                    'rating':'VARCHAR','timestamp':'BIGINT'}})""")
    con.execute("CREATE TABLE kept AS SELECT rowid AS r, u, i, t FROM raw")
    while k > 1:
        before = con.execute("SELECT count(*) FROM kept").fetchone()[0]
        con.execute(f"""CREATE OR REPLACE TABLE kept AS SELECT * FROM kept
            WHERE u IN (SELECT u FROM kept GROUP BY u HAVING count(*) >= {k})
              AND i IN (SELECT i FROM kept GROUP BY i HAVING count(*) >= {k})""")
        if con.execute("SELECT count(*) FROM kept").fetchone()[0] == before:
            break
    con.execute("CREATE TABLE users AS SELECT u, row_number() OVER (ORDER BY min(r)) - 1 AS uid FROM kept GROUP BY u")
    con.execute("CREATE TABLE items AS SELECT i, row_number() OVER (ORDER BY TRY_CAST(i AS DOUBLE), i) AS iid "
                "FROM (SELECT DISTINCT i FROM kept)")
    n = con.execute("SELECT count(*) FROM kept").fetchone()[0]
    cursor = con.execute("""SELECT iid, t FROM kept JOIN users USING (u) JOIN items USING (i)
                            ORDER BY uid, t, r""")
    pos = write_columns(cursor.to_arrow_reader(1 << 20), out, n, {"items": 0, "timestamps": 1})
    lengths = con.execute("SELECT count(*) FROM kept JOIN users USING (u) GROUP BY uid ORDER BY uid").fetchnumpy()
    np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(lengths["count_star()"])]))
    return pos


def polars_pipeline(csv: Path, out: Path, memory: str, threads: int, k: int) -> int:
    import polars as pl

    frame = (pl.scan_csv(csv, schema_overrides={"userId": pl.String, "movieId": pl.String, "timestamp": pl.Int64})
             .select(pl.col("userId").alias("u"), pl.col("movieId").alias("i"), pl.col("timestamp").alias("t"))
             .with_row_index("r"))
    frame.sink_parquet(out / "kept.parquet", engine="streaming")
    while k > 1:
        kept = pl.scan_parquet(out / "kept.parquet")
        good_u = kept.group_by("u").len().filter(pl.col("len") >= k).select("u")
        good_i = kept.group_by("i").len().filter(pl.col("len") >= k).select("i")
        before = kept.select(pl.len()).collect(engine="streaming").item()
        kept.join(good_u, on="u", how="semi").join(good_i, on="i", how="semi").sink_parquet(out / "next.parquet", engine="streaming")
        (out / "next.parquet").replace(out / "kept.parquet")
        if pl.scan_parquet(out / "kept.parquet").select(pl.len()).collect(engine="streaming").item() == before:
            break
    kept = pl.scan_parquet(out / "kept.parquet")
    users = (kept.group_by("u").agg(pl.col("r").min()).sort("r").with_row_index("uid").select("u", "uid"))
    items = (kept.select("i").unique().with_columns(pl.col("i").cast(pl.Float64, strict=False).alias("num"))
             .sort("num", "i", nulls_last=True).with_row_index("iid", offset=1).select("i", "iid"))
    users.sink_parquet(out / "users.parquet", engine="streaming")
    items.sink_parquet(out / "items.parquet", engine="streaming")
    (kept.join(pl.scan_parquet(out / "users.parquet"), on="u").join(pl.scan_parquet(out / "items.parquet"), on="i")
     .sort("uid", "t", "r").select("uid", "iid", "t").sink_parquet(out / "sorted.parquet", engine="streaming"))
    import pyarrow.parquet as pq

    file = pq.ParquetFile(out / "sorted.parquet")
    n = file.metadata.num_rows
    pos = write_columns(file.iter_batches(1 << 20, columns=["iid", "t"]), out, n, {"items": 0, "timestamps": 1})
    lengths = kept.join(pl.scan_parquet(out / "users.parquet"), on="u").group_by("uid").len().sort("uid").collect()
    np.save(out / "offsets.npy", np.concatenate([[0], np.cumsum(lengths["len"].to_numpy())]))
    return pos


def write_columns(batches, out: Path, n: int, columns: dict[str, int]) -> int:
    """Streams record batches into one int64 ``.npy`` file per column with plain writes (no mapping)."""
    files = {}
    for name in columns:
        files[name] = open(out / f"{name}.npy", "wb")
        np.lib.format.write_array_header_1_0(files[name], {"descr": "<i8", "fortran_order": False, "shape": (n,)})
    pos = 0
    for batch in batches:
        for name, col in columns.items():
            files[name].write(batch.column(col).to_numpy().astype(np.int64, copy=False).tobytes())
        pos += batch.num_rows
    for f in files.values():
        f.close()
    return pos


def measure(engine: str, csv: str, memory: str, threads: int, k: int) -> dict:
    with tempfile.TemporaryDirectory(dir=Path(csv).parent) as out:
        start = time.perf_counter()
        rows = {"duckdb": duckdb_pipeline, "polars": polars_pipeline}[engine](Path(csv), Path(out), memory, threads, k)
        seconds = time.perf_counter() - start
        digest = {name: float(np.load(Path(out) / f"{name}.npy", mmap_mode="r")[::997].sum())
                  for name in ("items", "timestamps", "offsets")}
    return {"engine": engine, "rows": rows, "seconds": seconds,
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "check": digest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--engines", nargs="+", default=["duckdb", "polars"])
    parser.add_argument("--memory", default="1GB", help="the engine's memory budget")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kcore", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.engines[0], args.csv, args.memory, args.threads, args.kcore)))
        return
    print("| engine | rows | wall s (median) | peak RSS GiB (median) |\n|---|---|---|---|")
    for engine in args.engines:
        runs = []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, __file__, args.csv, "--engines", engine, "--memory", args.memory,
                                  "--threads", str(args.threads), "--kcore", str(args.kcore), "--measure"],
                                 capture_output=True, text=True, check=False)
            if out.returncode:
                raise SystemExit(f"{engine} failed:\n{out.stderr[-3000:]}")
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"| {engine} | {runs[0]['rows']:,} | {np.median([r['seconds'] for r in runs]):.1f} | "
              f"{np.median([r['peak_gib'] for r in runs]):.2f} |  {runs[0]['check']}", flush=True)


if __name__ == "__main__":
    main()
