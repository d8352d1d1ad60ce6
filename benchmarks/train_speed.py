"""Training throughput (tokens/s) and peak memory of HSTU and SASRec at growing sequence lengths.

Same width and depth for both (d 50, 2 blocks, 1 head, ML-1M-sized catalogue of 3,706 items,
128 sampled negatives); each step trains on a fixed budget of tokens (batch = tokens / length),
full-length sequences (the padded worst case), forward + backward + AdamW. Prints the median of
--repeats timed steps after --warmup steps, per model, length and options. Models: ``hstu``
(dense attention), ``hstu-blocked`` (``attention: blocked``, 256 queries per block),
``hstu-jagged`` (``attention: jagged``: the batch packed without padding; ``hstu-jagged:64``: 64 queries per
block), ``hstu-compiled``,
``sasrec`` (``scaled_dot_product_attention``, the reference Transformer). With ``--skewed`` the
sequences of a batch have skewed lengths (log-normal, median L/4, σ 1, clipped to [2, L]; the
batch is still padded to L, and its real tokens are reported), as user histories have.

With ``--memory`` every row runs in a fresh process and also reports its peak memory: the
process's peak resident set during the steps minus its resident set before the first one
(model, optimizer state and batch built) on CPU, and on CUDA (``--device cuda``) the peak
allocated GPU memory during the steps minus the allocation before them. ``--bf16`` times bf16
autocast too (on CUDA the HSTU paper's setting).

    python benchmarks/train_speed.py                      # lengths 200 1024 4096
    python benchmarks/train_speed.py --memory --models hstu hstu-blocked sasrec --lengths 200 1024 4096 8192 --tokens 32768
    python benchmarks/train_speed.py --memory --skewed --models hstu hstu-blocked hstu-jagged sasrec --lengths 1024 4096 --tokens 32768
    python benchmarks/train_speed.py --device cuda --bf16 --memory --models hstu hstu-blocked hstu-jagged sasrec \
        --lengths 1024 4096 8192 16384 --tokens 65536     # a lent GPU: the same table
    python benchmarks/train_speed.py --lengths 200 --negatives position sequence interleaved:8
    python benchmarks/train_speed.py --lengths 200 --models sasrec sasrec-no-attn-dropout   # configs/sasrec/ml-1m.yaml
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from genrec.models import HSTU, SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig


def make(model: str, length: int, negatives: str, num_items: int) -> RetrievalModule:
    if model.startswith("hstu"):
        model, _, block = model.partition(":")  # e.g. hstu-jagged:64, queries per attention block
        net = HSTU(dim=50, num_blocks=2, num_heads=1, max_seq_len=length,
                   attention={"hstu-compiled": "compiled", "hstu-blocked": "blocked", "hstu-jagged": "jagged"}.get(model, "dense"),
                   attention_block=int(block or 256))
    else:
        # sasrec: dropout 0.2 on attention weights too (the paper's); sasrec-no-attn-dropout: none there
        net = SASRec(dim=50, num_blocks=2, num_heads=1, max_seq_len=length,
                     attn_dropout=0.0 if model == "sasrec-no-attn-dropout" else None)
    neg, _, groups = negatives.partition(":")  # e.g. interleaved:16
    m = RetrievalModule(net, num_items=num_items, loss=LossConfig(negatives=neg, negative_groups=int(groups or 8)))
    m.log = lambda *args, **kwargs: None  # no trainer attached
    return m


def batch(B: int, L: int, num_items: int, skewed: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    items = torch.randint(1, num_items + 1, (B, L + 1), generator=g)
    lengths = torch.full((B,), L)
    if skewed:
        lengths = (torch.randn(B, generator=g) + torch.log(torch.tensor(L / 4))).exp().round().clamp(2, L).long()
        lengths[0] = L  # the batch is padded to L
        items[:, :-1][torch.arange(L)[None, :] >= lengths[:, None]] = 0
    return {
        "user": torch.arange(B),
        "items": items[:, :-1],
        "timestamps": torch.cumsum(torch.randint(1, 86_400, (B, L), generator=g), dim=1),
        "targets": items[:, 1:] * (torch.arange(L)[None, :] < lengths[:, None]),
        "lengths": lengths,
    }


def time_steps(m: RetrievalModule, b: dict, warmup: int, repeats: int, bf16: bool) -> float:
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    device = next(m.parameters()).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(warmup + repeats):
        sync()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = m.training_step(b, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_one(model: str, L: int, neg: str, bf16: bool, args) -> dict[str, float]:
    """One row in this process: median s/step and the peak memory the steps added (MiB)."""
    B = max(1, args.tokens // L)
    device = torch.device(args.device)
    b = {k: v.to(device) for k, v in batch(B, L, args.num_items, args.skewed).items()}
    torch.manual_seed(0)
    m = make(model, L, neg, args.num_items).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _rss_mib()
    s = time_steps(m, b, args.warmup, args.repeats, bf16)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"s": s, "batch": B, "tokens": int(b["lengths"].sum()), "peak_mib": peak - before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[200, 1024, 4096])
    p.add_argument("--models", nargs="+", default=["hstu", "hstu-compiled", "sasrec"],
                   help="hstu, hstu-compiled (attention core through torch.compile), sasrec, sasrec-no-attn-dropout")
    p.add_argument("--negatives", nargs="+", default=["sequence"], help="position, sequence, interleaved[:groups]")
    p.add_argument("--tokens", type=int, default=8192, help="tokens per step")
    p.add_argument("--bf16", action="store_true", help="also time bf16 autocast")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--num-items", type=int, default=3706)
    p.add_argument("--memory", action="store_true", help="run each row in a fresh process and report its peak memory")
    p.add_argument("--skewed", action="store_true", help="skewed sequence lengths within each batch (padded to L)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--one", nargs=4, metavar=("MODEL", "LENGTH", "NEGATIVES", "BF16"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:  # a child of --memory: one row, printed as JSON
        model, L, neg, bf16 = args.one
        print(json.dumps(run_one(model, int(L), neg, bf16 == "1", args)))
        return
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {args.tokens} tokens/step")
    print("| model | length | batch | negatives | dtype | s/step | real tokens/s |" + (" peak MiB |" if args.memory else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if args.memory else ""))
    for L in args.lengths:
        for model in args.models:
            for neg in args.negatives:
                for bf16 in ([False, True] if args.bf16 else [False]):
                    if args.memory:
                        child = [sys.executable, __file__, "--one", model, str(L), neg, str(int(bf16)),
                                 "--tokens", str(args.tokens), "--warmup", str(args.warmup),
                                 "--repeats", str(args.repeats), "--num-items", str(args.num_items), "--device", args.device,
                                 *(["--skewed"] if args.skewed else [])]
                        done = subprocess.run(child, capture_output=True, text=True)
                        if done.returncode:
                            print(f"| {model} | {L} | | {neg} | | failed (exit {done.returncode}: "
                                  f"{done.stderr.strip().splitlines()[-1:]}) | | |", flush=True)
                            continue
                        r = json.loads(done.stdout.strip().splitlines()[-1])
                    else:
                        r = run_one(model, L, neg, bf16, args)
                    dtype = "bf16" if bf16 else "fp32"
                    row = f"| {model} | {L} | {r['batch']} | {neg} | {dtype} | {r['s']:.3f} | {r['tokens'] / r['s']:,.0f} |"
                    print(row + (f" {r['peak_mib']:,.0f} |" if args.memory else ""), flush=True)


if __name__ == "__main__":
    main()
