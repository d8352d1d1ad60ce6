"""Does a similarity learned on frozen MiniLM vectors transfer to catalogues it never saw? A probe (issue 39).

A linear map ``A`` (full E x E from the identity, or its diagonal from ones) is applied to every
item's unit MiniLM vector, ``v_i = normalize(A x_i)``; the query is the text formula's own user
vector over those (recency mean of the last 20 items, decay 0.3); the loss is a softmax over the
step's whole catalogue (``--negatives catalogue``) or the batch's positives (``batch``), one source
domain per step, plus ``--reg ||A - I||²``. Pairs are every training position of Beauty, Toys, Cell
Phones and Yelp; Scientific is held out as the validation domain (never trained on), Office is the
zero-shot target. Every ``--eval-every`` steps it prints HR@10 / NDCG@10 of the unchanged formula
(hubness 0.5) with ``A`` applied: Scientific validation, Office validation and test, through the
evaluation path of ``evaluate.py baseline`` (``evaluate_recommender``). Step 0 is the training-free
formula. Item embeddings come from the text-embedding cache (the first run encodes 60K items).

    python benchmarks/metric_probe.py --map diag --lr 0.003
    python benchmarks/metric_probe.py --map full --reg 0.001
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data import SequenceDataModule
from genrec.evaluation.runner import evaluate_recommender
from genrec.metrics import RankingMetrics
from genrec.models.text_prior import TextScorer, recency_user_vectors
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts

ROOT = "../shared/data/"
HELD_OUT = {"scientific": "amazon-scientific"}
SOURCES = {"beauty": "amazon-beauty-text", "toys": "amazon-toys-text", "cellphones": "amazon-cellphones", "yelp": "yelp"}
TARGET = {"office": "amazon-office"}
WINDOW = 20  # query items: at decay 0.3, older ones weigh nothing


def load(folder: str) -> tuple[SequenceDataModule, torch.Tensor]:
    dm = SequenceDataModule(dataset="plain", root=ROOT + folder)
    dm.setup("fit")
    dm.setup("test")
    x = torch.from_numpy(embed_texts(render_texts(dm.data.item_text, DEFAULT_TEMPLATE, folder), DEFAULT_ENCODER))
    return dm, F.normalize(x.float(), dim=-1)


def training_pairs(dm: SequenceDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    """Every training position after a user's first item: its last ``WINDOW`` earlier items (left-padded) and the item."""
    d, queries, positives = dm.data, [], []
    for u in range(d.num_users):
        seq = d.items[d.offsets[u] : dm.train_end[u]]
        for t in range(1, len(seq)):
            h = seq[max(0, t - WINDOW) : t]
            queries.append(np.pad(h, (WINDOW - len(h), 0)))
            positives.append(seq[t])
    return torch.as_tensor(np.array(queries), dtype=torch.long), torch.as_tensor(np.array(positives), dtype=torch.long)


def user_vectors(v: torch.Tensor, history: torch.Tensor, decay: float = 0.3) -> torch.Tensor:
    """The formula's query over left-padded ``history`` (B, WINDOW): newest item last (``recency_user_vectors``
    at the last position; the padding weighs nothing)."""
    return recency_user_vectors(v, history, decay, torch.full((len(history),), WINDOW))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--map", choices=["full", "diag"], default="full")
    p.add_argument("--negatives", choices=["catalogue", "batch"], default="catalogue")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--reg", type=float, default=0.0)
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    start = time.time()
    domains = {k: load(v) for k, v in {**HELD_OUT, **SOURCES, **TARGET}.items()}
    pairs = {k: training_pairs(domains[k][0]) for k in SOURCES}
    print(f"loaded in {time.time() - start:.0f} s; training pairs {({k: len(v[1]) for k, v in pairs.items()})}", flush=True)
    dim = next(iter(domains.values()))[1].shape[1]
    eye = torch.eye(dim)
    param = torch.nn.Parameter(eye.clone() if args.map == "full" else torch.ones(dim))
    matrix = (lambda: param) if args.map == "full" else (lambda: torch.diag(param))

    @torch.no_grad()
    def evaluate(step: int) -> None:
        a, row = matrix(), {}
        for name, split in (("scientific", "val"), ("office", "val"), ("office", "test")):
            dm, x = domains[name]
            loader = dm.val_dataloader() if split == "val" else dm.test_dataloader()
            m = evaluate_recommender(TextScorer(x @ a.T, 0.3, 0.5, 50), loader, RankingMetrics((10,), (10,), mrr=False))
            row[f"{name} {split}"] = f"{m['hr@10']:.4f} / {m['ndcg@10']:.4f}"
        print(f"step {step}: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)

    evaluate(0)
    opt = torch.optim.Adam([param], lr=args.lr)
    names = list(SOURCES)
    for step in range(1, args.steps + 1):
        name = names[step % len(names)]
        history, positive = pairs[name]
        idx = torch.randint(len(positive), (args.batch_size,))
        v = F.normalize(domains[name][1] @ matrix().T, dim=-1)
        v = torch.cat([torch.zeros(1, dim), v[1:]])  # the padding row stays zero
        u = user_vectors(v, history[idx])
        if args.negatives == "batch":
            logits, target = u @ v[positive[idx]].T, torch.arange(args.batch_size)
        else:
            logits, target = u @ v[1:].T, positive[idx] - 1
        loss = F.cross_entropy(logits / args.temperature, target) + args.reg * ((matrix() - eye) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.eval_every == 0:
            evaluate(step)


if __name__ == "__main__":
    main()
