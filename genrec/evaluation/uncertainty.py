"""Per-user metrics and bootstrap uncertainty over users (docs/evaluation.md).

Percentile intervals resample the users ``resamples`` times (seeded); a paired comparison resamples the
per-user differences, with the two-sided p-value ``min(1, 2 * min(1 + #(d* <= 0), 1 + #(d* >= 0)) / (R + 1))``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Resamples drawn per block: the (block, U) count matrix stays small for any number of users.
_BLOCK = 250


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap settings: ``resamples`` draws of the users, ``seed`` of the draws, interval ``level``."""

    resamples: int = 1000
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"bootstrap resamples must be at least 1, got {self.resamples}")
        if not 0 < self.level < 1:
            raise ValueError(f"bootstrap level must be in (0, 1), got {self.level}")
        if self.seed < 0:  # numpy would refuse it only after the whole evaluation
            raise ValueError(f"bootstrap seed (--seed) must be >= 0, got {self.seed}")

    def describe(self) -> str:
        return (f"{self.level:.0%} confidence intervals: percentile bootstrap over users "
                f"({self.resamples:,} resamples with replacement, seed {self.seed})")


def per_user_metrics(ranks: np.ndarray, hr_ks: Sequence[int], ndcg_ks: Sequence[int], mrr: bool = True,
                     max_rank: int | None = None) -> dict[str, np.ndarray]:
    """Each user's HR@k, NDCG@k (and MRR) from 0-based target ranks (U,), as ``RankingMetrics`` sums them."""
    r = np.asarray(ranks, dtype=np.float64)
    gain = 1.0 / np.log2(r + 2.0)
    out = {f"hr@{k}": (r < k).astype(np.float64) for k in sorted(set(hr_ks))}
    out |= {f"ndcg@{k}": np.where(r < k, gain, 0.0) for k in sorted(set(ndcg_ks))}
    if mrr:
        out["mrr"] = np.where(r < (np.inf if max_rank is None else max_rank), 1.0 / (r + 1.0), 0.0)
    return out


def resampled_means(values: np.ndarray, boot: Bootstrap) -> np.ndarray:
    """(R, M) means of ``values`` (U, M) over ``boot.resamples`` resamples of its rows, each one row of counts."""
    values = np.asarray(values, dtype=np.float64)
    users = values.shape[0]
    if users < 1:
        raise ValueError("the bootstrap needs at least one user")
    rng = np.random.default_rng(boot.seed)
    means = []
    for start in range(0, boot.resamples, _BLOCK):
        block = min(_BLOCK, boot.resamples - start)
        drawn = rng.integers(0, users, size=(block, users))  # (b, U) user indices
        rows = np.arange(block)[:, None] * users
        counts = np.bincount((rows + drawn).ravel(), minlength=block * users).reshape(block, users)  # (b, U)
        means.append(counts.astype(np.float64) @ values / users)  # (b, M)
    return np.concatenate(means)


def _interval(means: np.ndarray, level: float) -> np.ndarray:
    """(2, M) percentile bounds of resampled means (R, M)."""
    tail = (1.0 - level) / 2.0
    return np.quantile(means, [tail, 1.0 - tail], axis=0)


def bootstrap_ci(metrics: dict[str, np.ndarray], boot: Bootstrap = Bootstrap()) -> dict[str, tuple[float, float]]:
    """Percentile interval of each metric's mean over users; ``metrics`` maps name -> (U,) per-user values."""
    names = list(metrics)
    bounds = _interval(resampled_means(np.stack([metrics[n] for n in names], 1), boot), boot.level)
    return {n: (float(bounds[0, i]), float(bounds[1, i])) for i, n in enumerate(names)}


def paired_bootstrap(a: dict[str, np.ndarray], b: dict[str, np.ndarray], boot: Bootstrap = Bootstrap()
                     ) -> dict[str, dict[str, float]]:
    """Mean difference ``a - b`` of each metric over the same users, its paired interval and p-value."""
    names = [n for n in a if n in b]
    if not names:
        raise ValueError(f"the runs share no metric (one has {sorted(a)}, the other {sorted(b)})")
    diff = np.stack([np.asarray(a[n], np.float64) - np.asarray(b[n], np.float64) for n in names], 1)  # (U, M)
    means = resampled_means(diff, boot)  # (R, M)
    bounds = _interval(means, boot.level)
    below = 1 + (means <= 0).sum(0)
    above = 1 + (means >= 0).sum(0)
    p = np.minimum(1.0, 2.0 * np.minimum(below, above) / (boot.resamples + 1))
    observed = diff.mean(0)
    return {n: {"diff": float(observed[i]), "low": float(bounds[0, i]), "high": float(bounds[1, i]), "p": float(p[i])}
            for i, n in enumerate(names)}


def add_bootstrap_arguments(parser: Any) -> None:
    """``--bootstrap R`` and ``--seed``, read back by ``bootstrap_from``."""
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="R",
                        help="resamples of the users for the 95%% confidence intervals (0: no intervals)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")


def bootstrap_from(args: Any) -> Bootstrap | None:
    return Bootstrap(args.bootstrap, args.seed) if args.bootstrap else None
