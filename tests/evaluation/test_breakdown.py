"""Breakdowns by history length and target popularity against direct group means."""
import numpy as np
import pandas as pd
import pytest

from genrec.evaluation.breakdown import breakdown, history_bucket, markdown, plot, popularity_quintile
from genrec.evaluation.uncertainty import Bootstrap, per_user_metrics


def test_history_buckets_at_their_edges():
    got = history_bucket(np.array([1, 4, 5, 9, 10, 19, 20, 199, 200, 5000]))
    assert got.tolist() == ["1-4", "1-4", "5-9", "5-9", "10-19", "10-19", "20-49", "100-199", "200+", "200+"]


def test_popularity_quintiles_split_evenly_and_keep_ties_together():
    counts = np.arange(1, 101)
    labels = popularity_quintile(counts)
    assert pd.Series(labels).value_counts().sort_index().to_dict() == {
        "Q1 (1-20)": 20, "Q2 (21-40)": 20, "Q3 (41-60)": 20, "Q4 (61-80)": 20, "Q5 (81-100)": 20}
    tied = popularity_quintile(np.array([3] * 50 + [9] * 50))
    assert len(set(tied[:50])) == 1 and len(set(tied[50:])) == 1 and tied[0] != tied[-1]


def frame(users=400, seed=0):
    rng = np.random.default_rng(seed)
    history = rng.integers(2, 300, users)
    counts = rng.integers(0, 60, users)
    parts = []
    for scorer, scale in (("model", 3.0), ("popularity", 30.0)):
        ranks = rng.geometric(1 / scale, users) - 1
        parts.append(pd.DataFrame({"scorer": scorer, "user": np.arange(users), "history": history,
                                   "target_train_count": counts, "rank": ranks}).assign(**per_user_metrics(ranks, (10,), (10,))))
    return pd.concat(parts, ignore_index=True)


def test_group_metrics_equal_direct_group_means(tmp_path):
    f = frame()
    tables = breakdown(f, "hr@10", Bootstrap(200))
    model = f[f["scorer"] == "model"]
    direct = model.groupby(history_bucket(model["history"].to_numpy()))["hr@10"].mean()
    hist = tables["history"].set_index("group")
    assert list(hist.index) == ["1-4", "5-9", "10-19", "20-49", "50-99", "100-199", "200+"][-len(hist):]
    for group, value in direct.items():
        assert hist.loc[group, "model"] == pytest.approx(value)
        assert hist.loc[group, "model low"] <= value <= hist.loc[group, "model high"]
    pop = tables["popularity"]
    assert pop["users"].sum() == 400 and pop["group"].str.startswith("Q").all()
    assert (pop["model"] > pop["popularity"]).all()  # the planted gap shows in every quintile
    lines = markdown(tables, "hr@10", ["model", "popularity"])
    assert any(line.startswith("| Q1 (") for line in lines)
    png = plot(tables, "hr@10", ["model", "popularity"], tmp_path / "b.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
