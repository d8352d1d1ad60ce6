"""Speed and memory of streamed full-catalogue evaluation (``genrec.evaluation``).

Times ``target_ranks`` + ``RankingMetrics`` (all cut-offs, history excluded) on random vectors:

* ``ml1m``: ML-1M-sized, 6,040 users x 3,706 items, D=50, histories of 20..310 items (mean ~165);
* ``1m``: 10,000 users x 1,000,000 items, D=50, histories of 200 items;

and, on the ML-1M case, torchmetrics' RetrievalHitRate / RetrievalNormalizedDCG (top_k=10) fed the
full score matrix with the same items excluded, checking that HR@10 and NDCG@10 agree. Each
measurement runs in its own process so that its peak RSS (``ru_maxrss``) is its own; "inputs" is the
RSS once torch is imported and the vectors exist, so the difference is what evaluation adds.
Random float scores have no ties, so torchmetrics' unspecified tie order cannot make a difference.
Queries are noisy copies of the target vectors, so hits are common enough to compare.

    python benchmarks/eval_speed.py            # about 1.5 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch

from genrec.metrics import RankingMetrics, target_ranks

RUNS = {"genrec": 3, "torchmetrics": 1}  # one torchmetrics run already takes ~10 s


@dataclass(frozen=True)
class Case:
    users: int
    items: int
    dim: int
    history: tuple[int, int]  # min and max history length, drawn uniformly per user
    batch: int  # users per target_ranks call
    chunk: int  # items per matmul; batch * chunk ~ 4M floats keeps a chunk in cache on CPU


CASES = {
    "ml1m": Case(users=6040, items=3706, dim=50, history=(20, 310), batch=1024, chunk=4096),
    "1m": Case(users=10_000, items=1_000_000, dim=50, history=(200, 200), batch=1024, chunk=4096),
}


def make_inputs(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(case.items + 1, case.dim, generator=g)  # (N+1, D)
    targets = torch.randint(1, case.items + 1, (case.users,), generator=g)  # (U,)
    # Noisy copies of the target vectors put the metrics well above zero, so the value check has teeth.
    query = items[targets] + 3 * torch.randn(case.users, case.dim, generator=g)  # (U, D)
    lo, hi = case.history
    history = torch.randint(1, case.items + 1, (case.users, hi), generator=g)  # (U, H)
    lengths = torch.randint(lo, hi + 1, (case.users, 1), generator=g)
    history[torch.arange(hi) >= lengths] = 0
    return query, items, targets, history


def streamed(case: Case, query, items, targets, history) -> dict[str, float]:
    metric = RankingMetrics()
    for i in range(0, case.users, case.batch):
        batch = slice(i, i + case.batch)
        metric.update(target_ranks(query[batch], items, targets[batch], history[batch], chunk_size=case.chunk))
    return {k: v.item() for k, v in metric.compute().items()}


def with_torchmetrics(case: Case, query, items, targets, history) -> dict[str, float]:
    from torchmetrics.retrieval import RetrievalHitRate, RetrievalNormalizedDCG

    users = torch.arange(case.users)
    scores = query @ items.T  # (U, N+1): the full matrix torchmetrics needs
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep.scatter_(1, history, False)
    keep[:, 0] = False
    keep[users, targets] = True
    relevant = torch.zeros_like(keep)
    relevant[users, targets] = True
    indexes = users[:, None].expand_as(keep)
    out = {}
    for name, metric in (("hr@10", RetrievalHitRate(top_k=10)), ("ndcg@10", RetrievalNormalizedDCG(top_k=10))):
        metric.update(scores[keep], relevant[keep], indexes[keep])
        out[name] = metric.compute().item()
    return out


def measure(case_name: str, method: str) -> dict:
    """Runs in a child process: median time over RUNS, values, and RSS high-water marks in MiB."""
    torch.manual_seed(0)
    case = CASES[case_name]
    inputs = make_inputs(case)
    inputs_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fn = streamed if method == "genrec" else with_torchmetrics
    times = []
    for _ in range(RUNS[method]):
        start = time.perf_counter()
        values = fn(case, *inputs)
        times.append(time.perf_counter() - start)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "values": values, "inputs_rss": inputs_rss, "peak_rss": peak_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return

    load_before = os.getloadavg()[0]
    runs = [("ml1m", "genrec"), ("ml1m", "torchmetrics"), ("1m", "genrec")]
    results = {}
    for case_name, method in runs:
        child = subprocess.run(
            [sys.executable, __file__, "--child", case_name, method], check=True, capture_output=True, text=True
        )
        results[case_name, method] = json.loads(child.stdout.strip().splitlines()[-1])

    # Other processes on the same cores slow multi-threaded torch far more than their share.
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"1-min load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; seconds = median over runs\n"
    )
    print("| case | users | items | D | batch | chunk | method | runs | seconds | inputs RSS MiB | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for (case_name, method), r in results.items():
        c = CASES[case_name]
        print(
            f"| {case_name} | {c.users:,} | {c.items:,} | {c.dim} | {c.batch} | {c.chunk} | {method} | {RUNS[method]} "
            f"| {r['seconds']:.2f} | {r['inputs_rss']:.0f} | {r['peak_rss']:.0f} |"
        )

    ours, theirs = results["ml1m", "genrec"], results["ml1m", "torchmetrics"]
    print("\nML-1M case, genrec vs torchmetrics.retrieval (top_k=10):")
    for key in ("hr@10", "ndcg@10"):
        a, b = ours["values"][key], theirs["values"][key]
        print(f"  {key}: {a:.6f} vs {b:.6f} (|diff| {abs(a - b):.1e})")
    print(f"  time: torchmetrics / genrec = {theirs['seconds'] / ours['seconds']:.1f}x")
    print("\n1M case, all metrics:", {k: round(v, 5) for k, v in results["1m", "genrec"]["values"].items()})


if __name__ == "__main__":
    main()
