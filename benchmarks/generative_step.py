"""Seconds per training step of the text-tokenized generative model on a real catalogue, and the
share of it spent in the text prior (its item scores and per-node log-sum-exps, forward + backward).

The model is configs/generative/multidomain.yaml's (d 64, 2 layers, text-rotated codes, prior with
popularity and hubness) over ``--tokenizer``'s codes for ``--root``'s catalogue; batches are that
catalogue's training windows (batch 128, 10 items). Forward + backward + AdamW per step; median of
``--repeats`` steps after ``--warmup``. The prior row times the same prior computation alone on the
same batches. Run it on two commits to compare implementations (each alone on the machine).

    python benchmarks/generative_step.py --tokenizer runs/tokenizer-multidomain/version_0/checkpoints/last.ckpt \\
        --root ../shared/data/yelp
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from genrec.data import LoaderConfig, SequenceDataModule
from genrec.models.generative import DecoderConfig
from genrec.models.text_prior import TextPriorConfig, trie_priors
from genrec.modules import GenerativeModule
from genrec.modules.optim import OptimConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="a TokenizerAutoencoder checkpoint")
    p.add_argument("--root", required=True, help="folder of a plain dataset with item text")
    p.add_argument("--dataset", default="plain")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()

    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=10, exclude="history",
                            loader=LoaderConfig(batch_size=args.batch_size))
    dm.setup("fit")
    torch.manual_seed(0)
    m = GenerativeModule(tokenizer=args.tokenizer, optim=OptimConfig(lr=0.003),
                         decoder=DecoderConfig(dim=64, ffn_dim=128, num_layers=2, num_heads=4, max_seq_len=10, codes="text-rotated"),
                         prior=TextPriorConfig(popularity=True, hubness=True, hubness_k=50))
    m.log = lambda *a, **k: None
    m.set_catalogue_from(dm)
    opt = torch.optim.AdamW([q for q in m.parameters() if q.requires_grad], lr=0.003)
    batches = iter(dm.train_dataloader())
    step, prior = [], []
    for i in range(args.warmup + args.repeats):
        b = next(batches)
        start = time.perf_counter()
        loss = m.training_step(b, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        mid = time.perf_counter()
        items, valid = b["items"], b["targets"] > 0
        scores = m.prior.item_scores(m.prior.users(items)[valid])
        history = items[:, None, :].expand(-1, items.shape[1], -1).tril()[valid]
        priors = trie_priors(scores, m.catalogue.trie, history)
        sum(q.nan_to_num(neginf=0.0).mean() for q in priors[:-1]).backward()  # as the loss reads them: a gather
        end = time.perf_counter()
        if i >= args.warmup:
            step.append(mid - start)
            prior.append(end - mid)
    s, q = statistics.median(step), statistics.median(prior)
    print(f"catalogue {args.root}: {dm.data.num_items:,} items; trie nodes per level "
          f"{[m.catalogue.trie.num_nodes(t) for t in range(m.catalogue.trie.depth)]}; batch {args.batch_size} x 10; "
          f"median of {args.repeats} steps, {torch.get_num_threads()} threads\n")
    print("| part | s/step |\n|---|---|")
    print(f"| training step (forward + backward + AdamW) | {s:.3f} |")
    print(f"| the text prior alone (forward + backward) | {q:.3f} ({q / s:.0%} of the step) |")


if __name__ == "__main__":
    main()
