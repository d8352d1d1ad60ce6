"""Fine-tune a sentence-transformers encoder on which items follow which (contrastive, in-batch negatives).

Pairs are consecutive items of the users' training sequences (validation and test targets are
never read); each batch scores every first item's text against every second item's and the loss is
the cross-entropy of the true pair in both directions (in-batch negatives, as sentence-transformers'
``MultipleNegativesRankingLoss``). The result is a sentence-transformers folder: pass it as
``text_encoder`` of a tokenizer config (or ``evaluate.py baseline --encoder``). What it learns is a
function of text, so it applies to catalogues it was not fine-tuned on (zero-shot).

    python -m genrec.finetune_encoder --root ../shared/data/amazon-scientific \\
        --out runs/encoder-scientific --steps 100
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genrec.data import SequenceDataModule
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, _load_model, render_texts, resolve_encoder

log = logging.getLogger(__name__)


def consecutive_pairs(dm: SequenceDataModule) -> tuple[np.ndarray, int]:
    """(P, 2) item ids (a, b): b came right after a in some user's training part, a != b; and how
    many repeats of the same item were left out (no pair to learn from)."""
    data = dm.data
    pairs = []
    for start, end in zip(data.offsets[:-1], dm.train_end):
        seq = data.items[start:end]
        if len(seq) >= 2:
            pairs.append(np.stack([seq[:-1], seq[1:]], 1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    distinct = pairs[:, 0] != pairs[:, 1]
    return pairs[distinct], int((~distinct).sum())


def finetune_encoder(roots: list[str], out: str, encoder: str = DEFAULT_ENCODER, template: str = DEFAULT_TEMPLATE,
                     dataset: str = "plain", steps: int = 100, batch_size: int = 64, lr: float = 2e-5,
                     scale: float = 20.0, max_seq_length: int = 64, seed: int = 0) -> dict:
    """Fine-tune ``encoder`` on consecutive training pairs of every dataset in ``roots``; save to ``out``.

    Batches are drawn without replacement from all pairs (a fresh permutation when they run out); an
    item that is the second of two pairs in one batch is a false negative for the other, rare at these
    catalogue sizes. Returns (and writes to ``out/genrec_finetune.json``) what was done.
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    if seed < 0:
        raise ValueError(f"seed (--seed) must be >= 0, got {seed}")
    texts, pairs, repeats = [], [], 0
    for root in roots:
        dm = SequenceDataModule(dataset=dataset, root=root)
        dm.setup("fit")
        offset = len(texts)
        texts += render_texts(dm.data.item_text, template, f"dataset at {root}")
        kept, left_out = consecutive_pairs(dm)
        pairs.append(kept + offset)
        repeats += left_out
    pairs = np.concatenate(pairs)
    if len(pairs) < batch_size:
        raise ValueError(f"only {len(pairs)} consecutive training pairs in {roots}: fewer than batch_size {batch_size}")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = _load_model(resolve_encoder(encoder))
    _load_model.cache_clear()  # the weights change below: later embed_texts calls must reload
    model.max_seq_length = max_seq_length
    model.train()
    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    log.info("genrec: fine-tuning on %d consecutive training pairs (%d repeats of the same item left out)", len(pairs), repeats)
    losses, began = [], time.time()
    order = rng.permutation(len(pairs))
    for step in range(steps):
        idx = order[(step * batch_size) % len(order):][:batch_size]
        if len(idx) < batch_size:  # wrapped around: a fresh permutation
            order = rng.permutation(len(pairs))
            idx = order[:batch_size]
        a, b = pairs[idx, 0], pairs[idx, 1]
        emb = [F.normalize(model(prepare([texts[i] for i in side]))["sentence_embedding"], dim=-1) for side in (a, b)]
        logits = scale * emb[0] @ emb[1].T
        labels = torch.arange(len(idx))
        loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            log.info("genrec: encoder fine-tune step %d/%d loss %.4f", step + 1, steps, loss.item())
    model.eval()
    Path(out).mkdir(parents=True, exist_ok=True)
    model.save(out)
    summary = {"encoder": encoder, "roots": roots, "template": template, "pairs": int(len(pairs)),
               "repeats_left_out": repeats, "steps": steps,
               "batch_size": batch_size, "lr": lr, "scale": scale, "max_seq_length": max_seq_length, "seed": seed,
               "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])), "seconds": round(time.time() - began, 1)}
    (Path(out) / "genrec_finetune.json").write_text(json.dumps(summary, indent=2))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", action="append", required=True, help="dataset folder with item text (repeat for several)")
    parser.add_argument("--out", required=True, help="folder to save the fine-tuned sentence-transformers model to")
    parser.add_argument("--dataset", default="plain", help="dataset registry name of the folders (default plain)")
    parser.add_argument("--encoder", default=DEFAULT_ENCODER, help=f"sentence-transformers name or folder to start from (default {DEFAULT_ENCODER})")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE, help="item text template (default: %(default)r)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps (default 100)")
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per batch, the in-batch negatives (default 64)")
    parser.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate (default 2e-5)")
    parser.add_argument("--max-seq-length", type=int, default=64, help="encoder tokens per item text (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch order (default 0)")


def run(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = finetune_encoder(args.root, args.out, args.encoder, args.template, args.dataset, args.steps,
                               args.batch_size, args.lr, max_seq_length=args.max_seq_length, seed=args.seed)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    import sys

    from genrec import commands

    commands.main(commands.command_parser("python -m genrec.finetune_encoder", sys.modules[__name__]))
