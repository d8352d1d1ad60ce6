"""Time per training and evaluation batch of the data path alone (no model), on a real dataset.

The sequences come from the cache (memory-mapped since issue 40; private arrays before it), so this
is what a training step waits for its batch when the loader runs in the main process
(``num_workers: 0``). Prints the median over ``--epochs`` epochs of the milliseconds per batch;
compare it with a step's time (``benchmarks/train_speed.py``) to see whether the data path can be
the bottleneck. Several ``--release-pages-every`` values (``data.loader.release_pages_every``) are
timed in alternating epochs over the same cache.

    python benchmarks/loader_speed.py --root ../shared/data/ml-1m --dataset ml-1m
    python benchmarks/loader_speed.py --root ../shared/data/ml-1m --release-pages-every 0 1
    python benchmarks/loader_speed.py --dataset ml-20m --root /tmp/ddp20/ml20m-20000000 --cache-dir /tmp/ddp20/cache-20000000
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from genrec.data import LoaderConfig, SequenceDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-seq-len", type=int, default=200)
    parser.add_argument("--cache-dir", default=None, help="an existing cache folder to use (default: a temporary one)")
    parser.add_argument("--release-pages-every", type=int, nargs="+", default=[LoaderConfig().release_pages_every])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temporary:
        cache = args.cache_dir or temporary
        SequenceDataModule(dataset=args.dataset, root=args.root, cache_dir=cache).prepare_data()
        modules = {every: SequenceDataModule(dataset=args.dataset, root=args.root, cache_dir=cache, max_seq_len=args.max_seq_len,
                                             loader=LoaderConfig(release_pages_every=every))
                   for every in args.release_pages_every}
        for dm in modules.values():
            dm.setup("fit")
        for name in ("train", "val"):
            per_batch: dict[int, list[float]] = {every: [] for every in modules}
            for _ in range(args.epochs):
                for every, dm in modules.items():
                    start = time.perf_counter()
                    batches = sum(1 for _ in getattr(dm, f"{name}_dataloader")())
                    per_batch[every].append((time.perf_counter() - start) / batches * 1e3)
            for every, times in per_batch.items():
                print(f"{name}, release_pages_every={every}: {batches} batches, {statistics.median(times):.2f} ms per "
                      f"batch (median of {args.epochs} epochs)")


if __name__ == "__main__":
    main()
