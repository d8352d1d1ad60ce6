"""The dense-block signal alone: how well it finds each attack's fakes wherever their targets sit,
and how fast it is.

    python benchmarks/robust_dense_block.py --dataset ml-1m --root ../shared/data/ml-1m --seeds 1 2 3
    python benchmarks/robust_dense_block.py --scale     # timing on ML-20M-sized synthetic histories
    python benchmarks/robust_dense_block.py --flags --seeds 1 2 3   # the defence's confident flags
    python benchmarks/robust_dense_block.py --flags --grid tuning --seeds 11 12 13 14 15 16 17 18 19 20

Each attack (5 targets, the given seeds) is injected into the training data as
``AttackedDataModule`` does; ``genrec.robust.DenseBlockSignal`` (defaults) and, beside it,
``CoordinationSignal`` score every training user from the histories alone (no model, no targets),
and ROC-AUC is measured against the true fake labels. On the clean data: how many strong item pairs
the signal finds and the share of real users holding one (what it sets apart when nobody attacks).
``--scale`` times one ``score`` call of the dense block as configs/robust/defence.yaml lists it on
138,000 users with 20 million interactions over 27,000 items (power-law popularity, ML-20M's
sizes) with ``--attack-budget`` of them replaced by copy fakes carrying 5 targets anywhere, and
reports their AUC too. ``--flags``: that dense block (lockstep groups, ``flag_above``): per attack,
its AUC and how many fakes (of how many) and real users it flags with confidence (median over
the seeds), and how many real users it flags on the clean data. ``--grid tuning`` is the grid the
defence's options are chosen on (seeds 11-20 only), ``--grid reported`` the seeds protocol's rows.
Prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from robust_coordination import auc_rows, ml20m_like_histories, poisoned_views, view_of  # benchmarks/ is the script's folder

ATTACKS = {
    "copy, 1%, all targets, anywhere": {"kind": "copy", "splice": "anywhere"},
    "copy, 1%, all targets, last 10": {"kind": "copy", "targets_in_last": 10},
    "copy, 2%, 3 of 5 targets, mixed": {"kind": "copy", "budget": 0.02, "targets_per_fake": 3, "splice": "mixed"},
    "copy, 1%, 2-4 of 5 targets, anywhere": {"kind": "copy", "targets_per_fake": [2, 4], "splice": "anywhere"},
    "copy, 0.5%, all targets, anywhere": {"kind": "copy", "budget": 0.005, "splice": "anywhere"},
    "copy, 3%, all targets, anywhere": {"kind": "copy", "budget": 0.03, "splice": "anywhere"},
    "augmented, 1%, all targets, mixed": {"kind": "augmented", "splice": "mixed"},
    "random, 1%": {"kind": "random"},
    "bandwagon, 1%": {"kind": "bandwagon"},
    "copy, 2%, 3 of 5 targets, last 20": {"kind": "copy", "budget": 0.02, "targets_per_fake": 3, "targets_in_last": 20},
    "augmented, 2%, 3 of 5 targets, recent": {"kind": "augmented", "budget": 0.02, "targets_per_fake": 3},
}


# The grid thresholds are chosen on (attack seeds 11-20, never the reported 1-3): every budget with
# every target subset, the splice going round recent (last 20), anywhere and mixed.
SUBSETS = {"all targets": {}, "3 of 5": {"targets_per_fake": 3}, "2 of 5": {"targets_per_fake": 2},
           "2-5 of 5": {"targets_per_fake": [2, 5]}}
SPLICES = {"last 20": {"targets_in_last": 20}, "anywhere": {"splice": "anywhere"}, "mixed": {"splice": "mixed", "targets_in_last": 20}}
TUNING = {f"copy, {b:g}%, {sub}, {place}": {"kind": "copy", "budget": b / 100, **SUBSETS[sub], **SPLICES[place]}
          for i, (b, sub) in enumerate((b, sub) for b in (0.5, 1, 2, 3) for sub in SUBSETS)
          for place in [list(SPLICES)[i % 3]]}
TUNING_LOW = {k: v for k, v in TUNING.items() if v["budget"] == 0.005}
REPORTED = {"copy, 2%, 3 of 5 targets, last 20": ATTACKS["copy, 2%, 3 of 5 targets, last 20"],
            "copy, 1%, all targets, anywhere": ATTACKS["copy, 1%, all targets, anywhere"]}


def detection(args) -> None:
    from genrec.data import SequenceDataModule
    from genrec.robust.attacks import train_counts
    from genrec.robust.signals import CoordinationSignal, DenseBlockSignal

    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len)
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    signal, coordination = DenseBlockSignal(), CoordinationSignal()
    clean_hist = [data.items[data.offsets[u]:end[u]] for u in range(data.num_users)]
    pairs = signal.strong_pairs(clean_hist, data.num_items)
    clean = signal.score(view_of(clean_hist, train_counts(data, end)))
    print(f"\n{data.name}: {data.num_users:,} users; seeds {args.seeds}; clean data: {pairs.nnz // 2} strong item "
          f"pairs, {(clean > 0).mean():.1%} of real users hold one\n")
    print("| attack | dense-block AUC (median; per seed) | coordination AUC (median) | s / score |")
    print("|---|---|---|---|")
    auc_rows(data, end, ATTACKS, signal, coordination, args)

def defence_signal(args):
    """The dense block as ``args.defence`` lists it, with ``args.options`` over its options."""
    import yaml

    from genrec.robust.signals import DenseBlockSignal

    config = yaml.safe_load(open(args.defence))["trainer"]["callbacks"]
    (options,) = [s for c in config if c["class_path"].endswith("FraudsterReweighting")
                  for s in c["init_args"]["signals"] if s["kind"] == "dense_block"]
    return DenseBlockSignal(**{**{k: v for k, v in options.items() if k != "kind"}, **json.loads(args.options)})


def flags(args) -> None:
    from genrec.data import SequenceDataModule
    from genrec.robust.attacks import train_counts
    from genrec.robust.detector import roc_auc

    signal = defence_signal(args)
    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len, **json.loads(args.data))
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    start = time.perf_counter()
    clean = signal.score(view_of([data.items[data.offsets[u]:end[u]] for u in range(data.num_users)], train_counts(data, end)))
    print(f"\n{data.name}, {args.defence}: {signal}\nclean data: {(clean > 0).sum()} real users score above 0, "
          f"{(clean > signal.flag_above).sum()} of {data.num_users:,} flagged ({time.perf_counter() - start:.1f} s)\n")
    if args.clean_only:
        return
    print("| attack | lockstep AUC (median) | fakes flagged (median; per seed) | real users flagged (median; max) |")
    print("|---|---|---|---|")
    for label, attack in {"project": ATTACKS, "tuning": TUNING, "tuning-0.5": TUNING_LOW, "reported": REPORTED}[args.grid].items():
        aucs, fakes_flagged, real_flagged = [], [], []
        for _, fake, view in poisoned_views(data, end, attack, args):
            scores = signal.score(view)
            aucs.append(roc_auc(scores, fake))
            fakes_flagged.append((int((scores[fake] > signal.flag_above).sum()), int(fake.sum())))
            real_flagged.append(int((scores[~fake] > signal.flag_above).sum()))
        per_seed = ", ".join(f"{f}" for f, _ in fakes_flagged)
        share = statistics.median(f / n for f, n in fakes_flagged)
        print(f"| {label} | {statistics.median(aucs):.3f} | {share:.0%} of {fakes_flagged[0][1]} ({per_seed}) | "
              f"{statistics.median(real_flagged):g}; {max(real_flagged)} |", flush=True)


def scale(args) -> None:
    from genrec.robust.detector import roc_auc

    rng = np.random.default_rng(0)
    histories, items = ml20m_like_histories(rng)
    users, flat = len(histories), np.concatenate(histories)
    # copy fakes: the last users' slots hold real users' histories with 5 targets from the rarer half spliced in
    num_fakes = int(round(args.attack_budget * users))
    counts = np.bincount(flat, minlength=items + 1)
    seen = np.flatnonzero(counts[1:] > 0) + 1
    targets = rng.choice(seen[np.argsort(counts[seen])][: len(seen) // 2], 5, replace=False)
    donors = rng.choice(users - num_fakes, num_fakes)
    for f, d in zip(range(users - num_fakes, users), donors):
        h = histories[d]
        histories[f] = np.insert(h, np.sort(rng.integers(0, len(h) + 1, 5)), rng.permutation(targets))
    fake = np.arange(users) >= users - num_fakes
    view = view_of(histories, counts)
    signal = defence_signal(args)
    total = sum(len(h) for h in histories)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        scores = signal.score(view)
        times.append(time.perf_counter() - start)
    print(f"\n{signal}\n\n| users | interactions | items | fakes | AUC | s / score (median of {args.repeats}) |\n|---|---|---|---|---|---|\n"
          f"| {users:,} | {total:,} | {items:,} | {num_fakes:,} | {roc_auc(scores, fake):.3f} | {statistics.median(times):.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--root", default=None)
    p.add_argument("--max-seq-len", type=int, default=200, help="the model's window: where recent splices put targets")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--scale", action="store_true", help="time the signal on ML-20M-sized synthetic histories instead")
    p.add_argument("--attack-budget", type=float, default=0.01, help="--scale: the share of users replaced by copy fakes")
    p.add_argument("--repeats", type=int, default=1, help="--scale: timed calls")
    p.add_argument("--flags", action="store_true", help="the confident flags of the defence config's dense block instead")
    p.add_argument("--defence", default="configs/robust/defence.yaml", help="--flags: the config whose dense block is read")
    p.add_argument("--options", default="{}", help="--flags: JSON overriding the config's dense-block options")
    p.add_argument("--grid", choices=["project", "tuning", "tuning-0.5", "reported"], default="project",
                   help="--flags: the project's attacks, the tuning grid (use seeds 11-20) or the two reported rows")
    p.add_argument("--clean-only", action="store_true", help="--flags: the clean data's flags only")
    p.add_argument("--data", default="{}", help="JSON of further SequenceDataModule options (text domains: "
                   '\'{"source_options": {...}}\')')
    args = p.parse_args()
    scale(args) if args.scale else flags(args) if args.flags else detection(args)


if __name__ == "__main__":
    main()
