"""The text encoder's item-level surprisal as a signal: how well it finds each imitation attack's
fakes, alone and beside the dense block's lockstep pairs.

    python benchmarks/robust_text_surprisal.py --root ../shared/data/ml-1m --seeds 1 2

Each item of a user's training history gets ``1 - cos(item, mean of the history's other items)``
under MiniLM's title embeddings (``genrec.robust.signals.text_surprisal``, the item template of
configs/robust/defence.yaml); a user scores the mean of its ``--top-k`` most surprising items.
ROC-AUC against the true fake labels, 5 targets from the least popular half; "+ surprisal" ranks
each user by the larger of its two percentiles (as the callback combines signals), to say whether
the text view adds anything to the lockstep signal. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import statistics

from robust_coordination import poisoned_views  # benchmarks/ is the script's folder

ATTACKS = {
    "copy, 1%, all targets, anywhere": {"kind": "copy", "splice": "anywhere"},
    "copy, 1%, all targets, last 10": {"kind": "copy", "targets_in_last": 10},
    "copy, 2%, 3 of 5 targets, last 20": {"kind": "copy", "budget": 0.02, "targets_per_fake": 3, "targets_in_last": 20},
    "augmented, 1%, all targets, mixed": {"kind": "augmented", "splice": "mixed"},
    "augmented, 2%, 3 of 5 targets, recent": {"kind": "augmented", "budget": 0.02, "targets_per_fake": 3},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--root", default=None)
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--cache-dir", default="runs/robust/lm_cache")
    args = p.parse_args()

    from genrec.data import SequenceDataModule
    from genrec.robust.detector import max_percentiles, roc_auc
    from genrec.robust.encoders import build_encoder
    from genrec.robust.signals import DenseBlockSignal, text_surprisal

    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len)
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    encoder = build_encoder({"kind": "sentence-transformers", "mode": "items", "item_template": "(Item title: {title})",
                             "cache_dir": args.cache_dir})
    vectors = encoder.cached(encoder.item_texts(data.item_text))
    lockstep = DenseBlockSignal(max_coherence=0.1)
    print(f"\n{data.name}: seeds {args.seeds}, top {args.top_k} items per user\n")
    print("| attack | surprisal AUC (median; per seed) | lockstep AUC | lockstep + surprisal AUC |")
    print("|---|---|---|---|")
    for label, attack in ATTACKS.items():
        text, lock, both = [], [], []
        for hist, fake, view in poisoned_views(data, end, attack, args):
            t = text_surprisal(hist, vectors, args.top_k)
            d = lockstep.score(view)
            text.append(roc_auc(t, fake))
            lock.append(roc_auc(d, fake))
            both.append(roc_auc(max_percentiles(d, t), fake))
        per_seed = ", ".join(f"{a:.3f}" for a in text)
        print(f"| {label} | {statistics.median(text):.3f} ({per_seed}) | {statistics.median(lock):.3f} | "
              f"{statistics.median(both):.3f} |", flush=True)


if __name__ == "__main__":
    main()
