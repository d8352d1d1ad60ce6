"""The CPU timings and rounding behind three choices in the code, measured on this machine.

1. ``genrec.metrics._count_greater`` counts scores above each user's target by summing the flags
   eight bytes at a time, since a plain sum over a bool tensor costs a multiple of the comparison.
2. ``genrec.callbacks.NonFiniteLossGuard`` checks one stacked sum of the gradients, not
   ``isfinite().all()`` per gradient.
3. ``genrec.metrics._target_scores`` scores targets by a matmul, as the chunks are scored: an
   elementwise dot product sums in another order and may differ in the last bit.

    python benchmarks/cpu_choices.py            # a few seconds; docs/performance.md quotes it
"""
from __future__ import annotations

import argparse
import timeit

import torch

from genrec.metrics import _count_greater, _padded, _target_scores


def best(fn, number: int = 20) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=32768, help="items scored at once")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    s, th = torch.randn(args.users, args.chunk), torch.randn(args.users)  # (B, C), (B,)
    flags = torch.empty(args.users, _padded(args.chunk), dtype=torch.bool)
    compare = best(lambda: torch.gt(s, th[:, None], out=flags[:, : args.chunk]))
    bool_sum = best(lambda: (s > th[:, None]).sum(1))
    packed = best(lambda: _count_greater(s, th, flags))
    print(f"counting (B {args.users}, C {args.chunk}): comparison {compare * 1e3:.2f} ms, "
          f"comparison + bool sum {bool_sum * 1e3:.2f} ms, _count_greater {packed * 1e3:.2f} ms")

    grads = [torch.randn(n) for n in (3707 * 50, 50 * 50, 200 * 50, 3 * 50 * 50, 50)] * 4  # SASRec-sized
    per_tensor = best(lambda: all(bool(torch.isfinite(g).all()) for g in grads))
    stacked = best(lambda: bool(torch.isfinite(torch.stack([g.sum(dtype=torch.float32) for g in grads])).all()))
    print(f"non-finite gradient check: isfinite().all() per tensor {per_tensor * 1e3:.2f} ms, "
          f"one stacked sum {stacked * 1e3:.2f} ms ({per_tensor / stacked:.1f}x)")

    q, items = torch.randn(4096, 64), torch.randn(10_001, 64)
    targets = torch.randint(1, 10_001, (4096,))
    differ = ((q * items[targets]).sum(-1) != _target_scores(q, items, targets)).float().mean().item()
    print(f"target scores: an elementwise dot differs from the matmul for {differ:.1%} of random targets")


if __name__ == "__main__":
    main()
