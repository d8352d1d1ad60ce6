"""Per-step time of catalogue-constrained beam search against unconstrained beam search.

For catalogues of 10K, 100K and 1M items with T=4 tokens from the default FSQ codebook (15,360
codes; tuples drawn uniformly, duplicates dropped), times ``constrained_beam_search`` (CSR trie
gathers, history exclusion on) and ``beam_search`` (top-k over the whole codebook each step) on the
same log-probs, so only the search differs: a fixed random (B, W, V) tensor stands in for the
model, whose cost is the same for both. Reports the median over repeats of the time per step,
the growth from the smallest to the largest catalogue (goal: under 2x) and the overhead of the
constraint over unconstrained search (goal: under 1.3x). The last column times the search as the
generative module runs it: logits normalised over each beam's trie children (``normalize=True``).

    python benchmarks/decode_speed.py                 # about 1 minute on 2 CPU cores
    python benchmarks/decode_speed.py --device cuda --batch 1024
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from genrec.decoding import CodeTrie, beam_search, constrained_beam_search
from genrec.tokenizers.fsq import FSQ


def catalogue(n: int, depth: int, vocab: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.unique(rng.integers(0, vocab, (n, depth)), axis=0))


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--beam", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    vocab = FSQ().codebook_size
    B, W, T = args.batch, max(args.beam, args.k), args.depth
    logp = torch.randn(B, W, vocab, device=dev).log_softmax(-1)
    step = lambda t, prefix: logp[:, : prefix.shape[1]]  # noqa: E731
    exclude = torch.randint(1, min(args.sizes) + 1, (B, 50), device=dev)
    base = timed(lambda: beam_search(step, B, T, vocab, W, dev), args.repeats, sync) / T
    print(f"device {dev}, batch {B}, beam {W}, top-{args.k}, T={T}, codebook {vocab:,}; unconstrained: {base * 1e3:.2f} ms/step")
    print("| catalogue | trie build (s) | widest node per level | constrained ms/step | vs unconstrained | children-normalised ms/step |")
    print("|---|---|---|---|---|---|")
    per_step = []
    for n in args.sizes:
        codes = catalogue(n, T, vocab)
        start = time.perf_counter()
        trie = CodeTrie(codes).to(dev)
        build = time.perf_counter() - start
        t = timed(lambda: constrained_beam_search(step, trie, B, args.beam, args.k, exclude), args.repeats, sync) / T
        per_step.append(t)
        norm = timed(lambda: constrained_beam_search(step, trie, B, args.beam, args.k, exclude, normalize=True),
                     args.repeats, sync) / T
        print(f"| {len(codes):,} | {build:.2f} | {trie.max_branch} | {t * 1e3:.2f} | {t / base:.2f}x | {norm * 1e3:.2f} |")
    print(f"growth {args.sizes[0]:,} -> {args.sizes[-1]:,}: {per_step[-1] / per_step[0]:.2f}x (goal < 2x); "
          f"worst overhead vs unconstrained: {max(per_step) / base:.2f}x (goal < 1.3x)")


if __name__ == "__main__":
    main()
