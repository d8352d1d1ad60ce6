"""LM detector alone: how well fake users of each attack are found, per encoder.

    python benchmarks/robust_detection.py --root ../shared/data/ml-100k --dataset ml-100k
    python benchmarks/robust_detection.py --root ../shared/data/ml-1m --dataset ml-1m --encoder causal-lm

Exactly what ``FraudsterReweighting`` does before training: each attack (seed 1, 1% fakes,
5 targets) is injected into the training data; the detector learns from a simulated random
attack whose targets differ from the injected attack's, with every training user (the injected
fakes unlabelled among them) as negatives; it then scores every training user, and precision,
recall, F1 (score > 0.5) and ROC-AUC are measured against the true fake labels. Prints a Markdown
table.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from genrec.robust import AttackConfig, AttackedDataModule
    from genrec.robust.attacks import generate
    from genrec.robust.detector import Detector, detection_metrics
    from genrec.robust.encoders import build_encoder

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--root", default=None)
    parser.add_argument("--encoder", default="sentence-transformers", help="sentence-transformers | causal-lm")
    parser.add_argument("--mode", default="items", help="items | prompt")
    parser.add_argument("--attacks", default="random,bandwagon,segment,model")
    parser.add_argument("--max-seq-len", type=int, default=50)
    parser.add_argument("--cache-dir", default="runs/robust/lm_cache", help="LM embedding cache (shared by the attacks)")
    args = parser.parse_args()

    options = {"kind": args.encoder, "mode": args.mode, "cache_dir": args.cache_dir}
    encoder = build_encoder(options)
    rows = []
    for kind in args.attacks.split(","):
        start = time.perf_counter()
        dm = AttackedDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len,
                                attack={"kind": kind, "seed": 1})
        data = dm.data
        known = generate(data, dm.train_end, AttackConfig(kind="random", seed=1000, avoid_targets=dm.targets.tolist()),
                         args.max_seq_len)
        histories = [data.items[s:e] for s, e in zip(data.offsets[:-1], dm.train_end)]
        users = encoder.users(histories, data.item_text)
        fakes = encoder.users(known.sequences, data.item_text)
        x = np.concatenate([users, fakes])
        y = np.r_[np.zeros(len(users)), np.ones(len(fakes))]
        scores = Detector(x.shape[1]).fit(x, y).predict(users)
        m = detection_metrics(scores, dm.is_fake)
        rows.append((kind, len(dm.fakes), m, time.perf_counter() - start))
    print(f"\nLM detector alone, {args.dataset}, encoder {encoder.name} ({args.mode}), trained on random with other targets\n")
    print("| attack | fakes | precision | recall | F1 | ROC-AUC | seconds |")
    print("|---|---|---|---|---|---|---|")
    for kind, n, m, sec in rows:
        print(f"| {kind} | {n} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} | {sec:.0f} |")


if __name__ == "__main__":
    main()
