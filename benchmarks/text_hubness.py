"""The training-free text baseline with the hubness correction, over a grid of its two settings.

Scores ``cos(u, e_i) - c h_i`` (``genrec.evaluation.baselines.TextScorer``), ``h_i`` the mean
cosine of item ``i`` to its ``k`` nearest catalogue neighbours, for every ``c`` and ``k`` given, on
the validation and test splits of each ``--root``; ``c = 0`` is the plain text baseline. Choose
``c`` and ``k`` on one dataset's validation split, then read the others' rows.

    python benchmarks/text_hubness.py --root ../shared/data/amazon-scientific ../shared/data/amazon-office
"""
from __future__ import annotations

import argparse

import torch

from genrec.data import LoaderConfig, SequenceDataModule
from genrec.metrics import RankingMetrics
from genrec.evaluation.runner import evaluate_recommender
from genrec.models.text_prior import TextScorer
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", nargs="+", required=True, help="folders of plain datasets with item text")
    parser.add_argument("--c", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0], help="hubness weights")
    parser.add_argument("--k", nargs="+", type=int, default=[10, 50], help="neighbours in h_i")
    parser.add_argument("--decay", type=float, default=0.3)
    parser.add_argument("--max-seq-len", type=int, default=10)
    args = parser.parse_args()

    print(f"encoder {DEFAULT_ENCODER}; template {DEFAULT_TEMPLATE!r}; recency decay {args.decay}; "
          "leave-one-out, history excluded, full catalogue\n")
    print("| dataset | split | c | k | HR@10 | NDCG@10 |")
    print("|---|---|---|---|---|---|")
    for root in args.root:
        dm = SequenceDataModule(dataset="plain", root=root, max_seq_len=args.max_seq_len, exclude="history", loader=LoaderConfig(eval_batch_size=1024))
        dm.setup("test")
        texts = render_texts(dm.data.item_text, DEFAULT_TEMPLATE, f"dataset {dm.data.name!r}")
        emb = torch.from_numpy(embed_texts(texts, DEFAULT_ENCODER))
        # c = 0 does not depend on k: one row for it
        scorers = {(c, k): TextScorer(emb, args.decay, c, k) for k in args.k for c in args.c if c or k == args.k[0]}
        for split, loader in (("val", dm.val_dataloader), ("test", dm.test_dataloader)):
            for (c, k), scorer in scorers.items():
                m = evaluate_recommender(scorer, loader(), RankingMetrics((10,), (10,), mrr=False))
                print(f"| {root.rstrip('/').split('/')[-1]} | {split} | {c:g} | {k if c else '-'} | {m['hr@10']:.4f} | {m['ndcg@10']:.4f} |")


if __name__ == "__main__":
    main()
