"""Time and peak memory of loading and preprocessing MovieLens-20M-sized data, cold and from cache.

For each size (default 1M, 5M and 20M interactions; ML-20M itself has 20,000,263) this writes a
synthetic ``ratings.csv`` + ``movies.csv`` in the ML-20M release format (``userId,movieId,rating,
timestamp``, rows sorted by user then movie, as in the release; about 144 ratings per user,
power-law item popularity over up to 26,744 movies), then measures in a fresh process each:

* ``cold``: ``SequenceDataModule(dataset="ml-20m").prepare_data(); setup("fit")`` with an empty
  cache: preprocessing on the engine (CSV read, chronological sort, id maps), cache write, split;
* ``cache hit``: the same again, now mapping the cached sequences.

The cache hit includes the integrity checks: the content digest of every input file (the cache's
key) and the check of the cache's own files against the digests stored with it, the second in
another thread while the first runs. With ``--verify changed`` (the default, as
``data.preprocess.verify_cache``) a file whose stat stamp is unchanged since its last full hash is not read
(``genrec.digests.Verified``; one untimed cache hit after the cold run records the stamps of the
files it wrote); ``--verify full`` hashes every byte on every load. What they add to the cache hit is measured by loading again,
in alternating processes, with every digest looked up instead of computed (``checks added``: the
difference of the medians). ``alone`` times the two checks one after the other in the same process
right after the load (warm page cache, as within it): the work they do, overlapped or not. The
cache-hit figures are medians of ``--repeats`` processes each, since other jobs on the machine
easily double one run.

Peak memory is the process's peak RSS (``ru_maxrss``), so it includes Python, torch and pandas
(``baseline``: the RSS after the imports alone). A run over the 8 GiB budget is flagged.

``--format jsonl`` writes the log in the Amazon Reviews 2023 layout instead (``Synthetic.jsonl.gz``,
one JSON object a line: ``user_id``, ``parent_asin``, ``timestamp`` in milliseconds and the other
fields of a review) and loads it as ``dataset="amazon", version=2023``; ``--readers`` makes the cold
run read the log through the readers of ``genrec.data.sources`` (the path for files the engine
does not read itself) instead of the engine.

    python benchmarks/data_scale.py                      # 1M, 5M, 20M: a few minutes on 2 CPU cores
    python benchmarks/data_scale.py --sizes 100000       # a quick check
    python benchmarks/data_scale.py --format jsonl --sizes 100000 [--readers]
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BUDGET_GIB = 8.0
ML20M_MOVIES = 26_744
RATINGS_PER_USER = 144  # ML-20M: 20,000,263 ratings by 138,493 users
CHUNK = 1_000_000


def write_ml20m(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` synthetic ratings in the ML-20M files, written in chunks so memory stays flat."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = min(ML20M_MOVIES, max(100, n // 200))
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    popularity /= popularity.sum()
    users = max(1, n // RATINGS_PER_USER)
    # Per-user counts: at least 20 each (as in the release), the rest spread at random.
    counts = np.full(users, min(20, n // users), np.int64)
    counts += np.bincount(rng.integers(0, users, n - counts.sum()), minlength=users)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(folder / "ratings.csv", "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        for lo in range(0, users, max(1, CHUNK // RATINGS_PER_USER)):
            hi = min(users, lo + max(1, CHUNK // RATINGS_PER_USER))
            user = np.repeat(np.arange(lo + 1, hi + 1), counts[lo:hi])
            movie = rng.choice(items, size=len(user), p=popularity) + 1
            order = np.lexsort((movie, user))  # the release lists each user's movies by id
            table = pa.table({
                "userId": user[order],
                "movieId": movie[order],
                "rating": rng.integers(1, 11, len(user)) / 2,
                "timestamp": rng.integers(789_652_009, 1_427_784_002, len(user)),
            })
            pacsv.write_csv(table, f, write_options=options)
    titles = [f"Movie {i} ({1900 + i % 115})" for i in range(1, items + 1)]
    genres = ["Drama|Comedy", "Action", "(no genres listed)"]
    with open(folder / "movies.csv", "w") as f:
        f.write("movieId,title,genres\n")
        f.writelines(f'{i},"{t}",{genres[i % 3]}\n' for i, t in enumerate(titles, 1))


REVIEWS_PER_USER = 8
AMAZON_2023 = ('{{"rating": {rating}.0, "title": "Review title", "text": "Review text: it works, as described.", '
               '"images": [{images}], "asin": "B{item:09d}", "parent_asin": "P{item:09d}", "user_id": "AG{user:026d}", '
               '"timestamp": {ms}, "helpful_vote": {votes}, "verified_purchase": true}}\n')
IMAGE = '{"small_image_url": "https://m.media-amazon.com/images/I/x._SL256_.jpg", "attachment_type": "IMAGE"}'
IMAGE_EVERY = 20  # reviews with a photo: a nested object


def write_amazon_2023(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` synthetic reviews in the Amazon Reviews 2023 layout, gzipped (level 1), users and times
    at random (the sub-second part included), power-law item popularity; written in chunks so memory
    stays flat."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    items = max(100, n // 20)
    users = max(1, n // REVIEWS_PER_USER)
    with gzip.open(folder / "Synthetic.jsonl.gz", "wt", compresslevel=1) as f:
        for lo in range(0, n, CHUNK):
            size = min(CHUNK, n - lo)
            user = rng.integers(0, users, size)
            item = np.minimum(rng.zipf(1.3, size), items)
            ms = rng.integers(1_262_304_000_000, 1_694_000_000_000, size)
            rating, votes = rng.integers(1, 6, size), rng.integers(0, 3, size)
            f.write("".join(AMAZON_2023.format(rating=r, item=i, user=u, ms=t, votes=v,
                                               images=IMAGE if (lo + row) % IMAGE_EVERY == 0 else "")
                            for row, (r, i, u, t, v) in enumerate(zip(rating.tolist(), item.tolist(), user.tolist(),
                                                                      ms.tolist(), votes.tolist()))))


FORMATS = {  # --format: (file the writer leaves, writer, dataset, options)
    "csv": ("ratings.csv", write_ml20m, "ml-20m", {}),
    "jsonl": ("Synthetic.jsonl.gz", write_amazon_2023, "amazon", {"category": "Synthetic", "version": 2023}),
}


def measure(root: str, cache: str, checks: bool = True, verify: str = "changed", fmt: str = "csv",
            readers: bool = False) -> dict:
    """Runs in a child process: one prepare_data + setup, its wall time and peak RSS, the cache
    verified as ``verify`` says (``data.preprocess.verify_cache``); without ``checks``, every file digest is
    computed before the clock starts and looked up during the load (no stat, no record read)."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from genrec import digests
    from genrec.data import PreprocessConfig, SequenceDataModule, preprocess
    from genrec.data.datamodule import cache_folder, verified_record

    _, _, dataset, options = FORMATS[fmt]
    source = SequenceDataModule(dataset=dataset, root=root, cache_dir=cache, dataset_options=options).source
    if readers:
        type(source).engine_scan = lambda self: None
    if not checks:
        known: dict[Path, str] = {}
        real = digests.file_digest

        def looked_up(path: Path) -> str:
            if path not in known:
                known[path] = real(path)
            return known[path]

        digests.file_digest = looked_up
        digests.Verified.digests = lambda self, paths: [looked_up(p) for p in paths]
        preprocess.check(cache_folder(source, 0, 0))
        verify = "changed"  # every digest through the lookup above
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    dm = SequenceDataModule(dataset=dataset, root=root, cache_dir=cache, max_seq_len=200, dataset_options=options,
                            preprocess=PreprocessConfig(verify_cache=verify))
    dm.prepare_data()
    dm.setup("fit")
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    verified = verified_record(dm.source, verify)
    start = time.perf_counter()
    fingerprint = dm.source.fingerprint(verified)
    inputs = time.perf_counter() - start
    folder = cache_folder(dm.source, 0, 0, fingerprint)
    if preprocess.check(folder, fingerprint, verified) is not None:
        raise SystemExit(f"the cache {folder} fails its check right after the load")
    alone = time.perf_counter() - start
    return {"seconds": seconds, "inputs_s": inputs, "checks_s": alone, "peak_gib": peak / 2**20, "baseline_gib": baseline / 2**20,
            "interactions": dm.data.num_interactions, "users": dm.data.num_users, "items": dm.num_items,
            "train_windows": len(dm.train_set)}


def child(root: Path, cache: Path, checks: bool = True, verify: str = "changed", fmt: str = "csv",
          readers: bool = False) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", str(root), str(cache), "--verify", verify,
                          "--format", fmt] + ([] if checks else ["--no-checks"]) + (["--readers"] if readers else []),
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measurement failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the synthetic files are kept between runs (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="cache-hit runs per size (their medians are printed)")
    parser.add_argument("--verify", choices=["changed", "full"], default="changed",
                        help="data.preprocess.verify_cache of the cache-hit loads (changed: files whose stamp changed since "
                             "their last full hash; full: every byte)")
    parser.add_argument("--format", choices=list(FORMATS), default="csv",
                        help="the synthetic log's layout: csv (ML-20M ratings.csv) or jsonl (Amazon Reviews 2023)")
    parser.add_argument("--readers", action="store_true",
                        help="cold runs read the log through the pandas/Python readers instead of the engine")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--no-checks", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    name, writer, _, _ = FORMATS[args.format]
    if args.write:
        writer(Path(args.write[0]), int(args.write[1]))
        return
    if args.measure:
        print(json.dumps(measure(*args.measure, checks=not args.no_checks, verify=args.verify, fmt=args.format,
                                 readers=args.readers)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="genrec-data-scale-"))
    print("| interactions | users | items | input MB | cold s | cold peak GiB | cache-hit s | cache-hit peak GiB | baseline GiB "
          "| checks ms: added (alone, inputs) | added / cache hit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    over = []
    try:
        for n in args.sizes:
            root = workdir / (f"ml20m-{n}" if args.format == "csv" else f"{args.format}-{n}")
            if not (root / name).exists():
                # in a child: a child's peak RSS starts at its parent's RSS when it was started
                subprocess.run([sys.executable, __file__, "--write", str(root), str(n), "--format", args.format], check=True)
            cache = workdir / (f"cache-{n}" if args.format == "csv" else f"cache-{args.format}-{n}")
            shutil.rmtree(cache, ignore_errors=True)
            cold = child(root, cache, fmt=args.format, readers=args.readers)
            child(root, cache, fmt=args.format)  # records the stamps of files the cold run wrote too recently to trust
            runs, unchecked = [], []
            for _ in range(args.repeats):
                runs.append(child(root, cache, verify=args.verify, fmt=args.format))
                unchecked.append(child(root, cache, checks=False, fmt=args.format))
            warm = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
            added = warm["seconds"] - float(np.median([r["seconds"] for r in unchecked]))
            mb = (root / name).stat().st_size / 1e6
            print(f"| {cold['interactions']:,} | {cold['users']:,} | {cold['items']:,} | {mb:,.1f} | "
                  f"{cold['seconds']:.1f} | {cold['peak_gib']:.2f} | {warm['seconds']:.2f} | {warm['peak_gib']:.2f} | "
                  f"{cold['baseline_gib']:.2f} | {1e3 * added:.2f} ({1e3 * warm['checks_s']:.2f}, {1e3 * warm['inputs_s']:.2f}) | "
                  f"{100 * added / warm['seconds']:.1f}% |", flush=True)
            over += [f"{n:,} ({run}: {r['peak_gib']:.2f} GiB)" for run, r in (("cold", cold), ("cache hit", warm))
                     if r["peak_gib"] > BUDGET_GIB]
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if over:
        raise SystemExit(f"over the {BUDGET_GIB} GiB budget: {', '.join(over)}")
    print(f"all within {BUDGET_GIB} GiB")


if __name__ == "__main__":
    main()
