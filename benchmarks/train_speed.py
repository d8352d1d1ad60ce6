"""Training throughput (tokens/s) of HSTU and SASRec at growing sequence lengths.

Same width and depth for both (d 50, 2 blocks, 1 head, ML-1M-sized catalogue of 3,706 items,
128 sampled negatives); each step trains on a fixed budget of tokens (batch = tokens / length),
full-length sequences, forward + backward + AdamW. Prints the median of --repeats timed steps
after --warmup steps, per model, length and options.

    python benchmarks/train_speed.py                      # lengths 200 1024 4096
    python benchmarks/train_speed.py --lengths 200 --negatives position sequence batch
    python benchmarks/train_speed.py --lengths 200 --models sasrec sasrec-no-attn-dropout   # configs/sasrec/ml-1m.yaml
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from genrec.models import HSTU, SASRec
from genrec.modules import RetrievalModule


def make(model: str, length: int, negatives: str, num_items: int) -> RetrievalModule:
    if model.startswith("hstu"):
        net = HSTU(dim=50, num_blocks=2, num_heads=1, max_seq_len=length, compile_attention=model == "hstu-compiled")
    else:
        # sasrec: dropout 0.2 on attention weights too (the paper's); sasrec-no-attn-dropout: none there
        net = SASRec(dim=50, num_blocks=2, num_heads=1, max_seq_len=length,
                     attn_dropout=0.0 if model == "sasrec-no-attn-dropout" else None)
    neg, _, groups = negatives.partition(":")  # e.g. interleaved:16
    m = RetrievalModule(net, num_items=num_items, negatives=neg, negative_groups=int(groups or 8))
    m.log = lambda *args, **kwargs: None  # no trainer attached
    return m


def batch(B: int, L: int, num_items: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, num_items + 1, (B, L + 1), generator=g)
    return {
        "user": torch.arange(B),
        "items": items[:, :-1],
        "timestamps": torch.cumsum(torch.randint(1, 86_400, (B, L), generator=g), dim=1),
        "targets": items[:, 1:],
        "lengths": torch.full((B,), L),
    }


def time_steps(m: RetrievalModule, b: dict, warmup: int, repeats: int, bf16: bool) -> float:
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = m.training_step(b, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[200, 1024, 4096])
    p.add_argument("--models", nargs="+", default=["hstu", "hstu-compiled", "sasrec"],
                   help="hstu, hstu-compiled (attention core through torch.compile), sasrec, sasrec-no-attn-dropout")
    p.add_argument("--negatives", nargs="+", default=["sequence"], help="position, sequence, batch, subset, interleaved[:groups]")
    p.add_argument("--tokens", type=int, default=8192, help="tokens per step")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-items", type=int, default=3706)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.tokens} tokens/step")
    print("| model | length | batch | negatives | dtype | s/step | tokens/s |")
    print("|---|---|---|---|---|---|---|")
    for L in args.lengths:
        B = max(1, args.tokens // L)
        b = batch(B, L, args.num_items)
        for model in args.models:
            for neg in args.negatives:
                for bf16 in ([False, True] if args.bf16 else [False]):
                    torch.manual_seed(0)
                    s = time_steps(make(model, L, neg, args.num_items), b, args.warmup, args.repeats, bf16)
                    dtype = "bf16" if bf16 else "fp32"
                    print(f"| {model} | {L} | {B} | {neg} | {dtype} | {s:.3f} | {B * L / s:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
