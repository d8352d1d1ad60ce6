"""The coordination signal alone: how well it finds each attack's fakes, and how fast it is.

    python benchmarks/robust_coordination.py --dataset ml-1m --root ../shared/data/ml-1m --seeds 1 2 3
    python benchmarks/robust_coordination.py --dataset ml-100k --root ../shared/data/ml-100k
    python benchmarks/robust_coordination.py --scale     # timing on ML-20M-sized synthetic histories

Each attack (1% fakes, 5 targets, the given seeds) is injected into the training data as
``AttackedDataModule`` does; ``genrec.robust.signals.CoordinationSignal`` (defaults: windows 10 and
50, z threshold 3) scores every training user from the histories alone (no model, no targets), and
ROC-AUC is measured against the true fake labels, beside the anomaly signal's log-count part (its
fit statistic needs a trained recommender and is left constant here). Also: the share of real users
with a burst item in a recent window on the clean data (the users the signal sets apart when
nobody attacks).
``--scale`` times one ``score`` call on 138,000 users with 20 million interactions over 27,000
items (power-law popularity, ML-20M's sizes). Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

ATTACKS = {
    "copy, targets in the last 10": {"kind": "copy", "targets_in_last": 10},
    "copy, 2 of 5 targets per fake": {"kind": "copy", "targets_in_last": 10, "targets_per_fake": 2},
    "copy, targets in the last 50": {"kind": "copy", "targets_in_last": 50},
    "copy, targets anywhere": {"kind": "copy", "splice": "anywhere"},
    "augmented, targets in the last 10": {"kind": "augmented", "targets_in_last": 10},
    "random": {"kind": "random"},
    "bandwagon": {"kind": "bandwagon"},
}


def view_of(histories, counts):
    from genrec.robust.signals import UserView

    return UserView(histories, [np.zeros(len(h), np.int64) for h in histories], torch.zeros(len(histories)), counts,
                    len(histories))


def poisoned_views(data, end, attack: dict, args):
    """Per seed of ``args.seeds``: the attacked users' training histories, the fake labels and the
    signals' view of them, for ``attack`` injected into ``data``."""
    from genrec.robust.attacks import generate, inject, train_counts

    for seed in args.seeds:
        fakes = generate(data, end, {**attack, "seed": seed}, window=args.max_seq_len)
        poisoned, pend = inject(data, end, fakes)
        hist = [poisoned.items[poisoned.offsets[u]:pend[u]] for u in range(poisoned.num_users)]
        fake = np.arange(poisoned.num_users) >= data.num_users
        yield hist, fake, view_of(hist, train_counts(poisoned, pend))


def auc_rows(data, end, attacks: dict, signal, beside, args) -> None:
    """One Markdown row per attack: ``signal``'s ROC-AUC against the fake labels (median and per seed),
    ``beside``'s median, and ``signal``'s median seconds per score."""
    from genrec.robust.detector import roc_auc

    for label, attack in attacks.items():
        aucs, base, times = [], [], []
        for _, fake, view in poisoned_views(data, end, attack, args):
            start = time.perf_counter()
            aucs.append(roc_auc(signal.score(view), fake))
            times.append(time.perf_counter() - start)
            base.append(roc_auc(beside.score(view), fake))
        per_seed = ", ".join(f"{a:.3f}" for a in aucs)
        print(f"| {label} | {statistics.median(aucs):.3f} ({per_seed}) | {statistics.median(base):.3f} | "
              f"{statistics.median(times):.2f} |", flush=True)


def ml20m_like_histories(rng: np.random.Generator) -> tuple[list[np.ndarray], int]:
    """138,000 users' histories, 20 million interactions over 27,000 items with power-law popularity
    (ML-20M's sizes); and the number of items."""
    users, interactions, items = 138_000, 20_000_000, 27_000
    lengths = np.maximum(20, rng.pareto(1.5, users) * 60).astype(np.int64)
    lengths = np.round(lengths * interactions / lengths.sum()).astype(np.int64).clip(1)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.9
    flat = rng.choice(np.arange(1, items + 1), int(lengths.sum()), p=popularity / popularity.sum())
    return np.split(flat, np.cumsum(lengths)[:-1]), items


def detection(args) -> None:
    from genrec.data import SequenceDataModule
    from genrec.robust.attacks import train_counts
    from genrec.robust.signals import AnomalySignal, CoordinationSignal

    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len)
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    signal, anomaly = CoordinationSignal(), AnomalySignal()
    clean_hist = [data.items[data.offsets[u]:end[u]] for u in range(data.num_users)]
    clean = np.maximum.reduce(signal.window_scores(view_of(clean_hist, train_counts(data, end))))
    print(f"\n{data.name}: {data.num_users:,} users; seeds {args.seeds}; clean data: "
          f"{(clean > 0).mean():.1%} of real users have a burst item in a recent window\n")
    print("| attack | coordination AUC (median; per seed) | anomaly log-count AUC (median) | s / score |")
    print("|---|---|---|---|")
    auc_rows(data, end, ATTACKS, signal, anomaly, args)

def scale() -> None:
    from genrec.robust.signals import CoordinationSignal

    histories, items = ml20m_like_histories(np.random.default_rng(0))
    users, lengths = len(histories), np.array([len(h) for h in histories])
    counts = np.bincount(np.concatenate(histories), minlength=items + 1)
    view = view_of(histories, counts)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        CoordinationSignal().score(view)
        times.append(time.perf_counter() - start)
    print(f"\n| users | interactions | items | s / score (median of 3) |\n|---|---|---|---|\n"
          f"| {users:,} | {int(lengths.sum()):,} | {items:,} | {statistics.median(times):.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--root", default=None)
    p.add_argument("--max-seq-len", type=int, default=200, help="the model's window: where the other attacks put targets")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--scale", action="store_true", help="time the signal on ML-20M-sized synthetic histories instead")
    args = p.parse_args()
    scale() if args.scale else detection(args)


if __name__ == "__main__":
    main()
