"""Per-user metrics and bootstrap intervals against their definitions and a loop bootstrap."""
import numpy as np
import pytest
import torch

from genrec.metrics import RankingMetrics
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_ci, paired_bootstrap, per_user_metrics, resampled_means


def loop_bootstrap(values: np.ndarray, resamples: int, seed: int, level: float) -> tuple[float, float]:
    """The textbook bootstrap, one resample at a time, with the percentile read off the sorted means."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(values), size=len(values))
        means.append(sum(values[i] for i in drawn) / len(values))
    means.sort()

    def quantile(q: float) -> float:  # numpy's default (linear) rule, written out
        h = (len(means) - 1) * q
        lo = int(np.floor(h))
        return means[lo] + (h - lo) * (means[min(lo + 1, len(means) - 1)] - means[lo])

    tail = (1 - level) / 2
    return quantile(tail), quantile(1 - tail)


@pytest.mark.parametrize("max_rank", [None, 20])
def test_per_user_metrics_average_to_the_streamed_metrics(max_rank):
    ranks = torch.randint(0, 21 if max_rank else 300, (257,))
    streamed = RankingMetrics((1, 10), (10, 20), mrr=True, max_rank=max_rank)
    streamed.update(ranks)
    per_user = per_user_metrics(ranks.numpy(), (1, 10), (10, 20), True, max_rank)
    assert list(per_user) == list(streamed.compute())
    for key, value in streamed.compute().items():
        assert per_user[key].mean() == pytest.approx(float(value), abs=1e-12), key


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_intervals_equal_a_loop_bootstrap(level):
    rng = np.random.default_rng(3)
    hits = (rng.random(37) < 0.3).astype(float)
    gains = np.where(hits > 0, 1 / np.log2(rng.integers(0, 10, 37) + 2.0), 0.0)
    boot = Bootstrap(resamples=300, seed=11, level=level)  # 300: blocks of 250 and 50 must chain
    ci = bootstrap_ci({"hr@10": hits, "ndcg@10": gains}, boot)
    for name, values in (("hr@10", hits), ("ndcg@10", gains)):
        assert ci[name] == pytest.approx(loop_bootstrap(values, 300, 11, level), abs=1e-12), name
        assert ci[name][0] <= values.mean() <= ci[name][1]


def test_interval_width_matches_the_binomial_standard_error():
    hits = (np.random.default_rng(0).random(4000) < 0.2).astype(float)
    low, high = bootstrap_ci({"hr@10": hits}, Bootstrap(2000, seed=1))["hr@10"]
    se = np.sqrt(hits.mean() * (1 - hits.mean()) / len(hits))
    assert (high - low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_seed_decides_the_draws():
    values = np.random.default_rng(0).random((50, 2))
    same = resampled_means(values, Bootstrap(100, seed=5))
    assert np.array_equal(same, resampled_means(values, Bootstrap(100, seed=5)))
    assert not np.array_equal(same, resampled_means(values, Bootstrap(100, seed=6)))


def test_paired_bootstrap_detects_a_planted_difference():
    rng = np.random.default_rng(1)
    base = (rng.random(2000) < 0.2).astype(float)
    better = np.maximum(base, (rng.random(2000) < 0.05).astype(float))  # ~4 points of HR more, same users
    out = paired_bootstrap({"hr@10": better}, {"hr@10": base}, Bootstrap(1000, seed=0))["hr@10"]
    assert out["diff"] == pytest.approx(better.mean() - base.mean())
    assert 0 < out["low"] < out["diff"] < out["high"] and out["p"] < 0.01


def test_paired_bootstrap_does_not_reject_a_null_difference_more_than_its_level():
    # Two runs that differ per user, but by a symmetric coin: no real difference. At a 5% level the
    # test may reject about 1 in 20 such pairs, not many more.
    rejected = 0
    for seed in range(100):
        rng = np.random.default_rng(100 + seed)
        a = (rng.random(300) < 0.3).astype(float)
        b = np.where(rng.random(300) < 0.5, a, (rng.random(300) < 0.3).astype(float))
        b, a = np.where(rng.random(300) < 0.5, (a, b), (b, a))
        out = paired_bootstrap({"hr@10": a}, {"hr@10": b}, Bootstrap(400, seed=seed))["hr@10"]
        rejected += out["p"] < 0.05
    assert rejected <= 12


def test_identical_runs_differ_by_nothing():
    a = (np.random.default_rng(0).random(100) < 0.5).astype(float)
    out = paired_bootstrap({"hr@10": a}, {"hr@10": a.copy()})["hr@10"]
    assert out == {"diff": 0.0, "low": 0.0, "high": 0.0, "p": 1.0}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="resamples"):
        Bootstrap(resamples=0)
    with pytest.raises(ValueError, match="level"):
        Bootstrap(level=1.0)


def test_a_negative_bootstrap_seed_is_refused_before_any_evaluation():
    # numpy would refuse it only when the intervals are drawn, after the whole evaluation
    with pytest.raises(ValueError, match=r"bootstrap seed \(--seed\) must be >= 0, got -1"):
        Bootstrap(100, seed=-1)
