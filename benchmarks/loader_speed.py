"""Time per training and evaluation batch of the data path alone (no model), on a real dataset.

The sequences come from the cache (memory-mapped since issue 40; private arrays before it), so this
is what a training step waits for its batch when the loader runs in the main process
(``num_workers: 0``). Prints the median over ``--epochs`` epochs of the milliseconds per batch;
compare it with a step's time (``benchmarks/train_speed.py``) to see whether the data path can be
the bottleneck.

    python benchmarks/loader_speed.py --root ../shared/data/ml-1m --dataset ml-1m
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-seq-len", type=int, default=200)
    args = parser.parse_args()
    from genrec.data import SequenceDataModule

    with tempfile.TemporaryDirectory() as cache:
        SequenceDataModule(dataset=args.dataset, root=args.root, cache_dir=cache).prepare_data()
        dm = SequenceDataModule(dataset=args.dataset, root=args.root, cache_dir=cache, max_seq_len=args.max_seq_len)
        dm.setup("fit")
        for name, loader in (("train", dm.train_dataloader), ("val", dm.val_dataloader)):
            per_batch = []
            for _ in range(args.epochs):
                start = time.perf_counter()
                batches = sum(1 for _ in loader())
                per_batch.append((time.perf_counter() - start) / batches * 1e3)
            print(f"{name}: {batches} batches, {statistics.median(per_batch):.2f} ms per batch (median of {args.epochs} epochs)")


if __name__ == "__main__":
    main()
