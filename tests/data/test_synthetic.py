"""The synthetic source: deterministic, shaped like the options, and carrying the structure it promises."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from genrec.data.raw import DataError, RawData
from genrec.data.registry import get_source
from genrec.data.synthetic import SyntheticOptions, SyntheticSource, generate

SMALL = dict(num_users=300, num_items=200, num_interests=10, mean_length=20)


@pytest.fixture(scope="module")
def default() -> tuple[RawData, np.ndarray]:
    return generate()


def indices(column: pd.Series) -> np.ndarray:
    return column.str[1:].astype(int).to_numpy()


def test_same_options_give_identical_tables_and_another_seed_does_not() -> None:
    (a, succ_a), (b, succ_b) = generate(SyntheticOptions(**SMALL)), generate(SyntheticOptions(**SMALL))
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    np.testing.assert_array_equal(succ_a, succ_b)
    c, _ = generate(SyntheticOptions(**SMALL, seed=1))
    assert not a.interactions.equals(c.interactions)


def test_catalogue_does_not_depend_on_the_users() -> None:
    a, succ_a = generate(SyntheticOptions(**SMALL))
    b, succ_b = generate(SyntheticOptions(**{**SMALL, "num_users": 50, "transition_prob": 0.2}))
    pd.testing.assert_frame_equal(a.items, b.items)
    np.testing.assert_array_equal(succ_a, succ_b)


def test_tables_match_the_options() -> None:
    raw, successors = generate(SyntheticOptions(**SMALL, min_length=7))
    inter, items = raw.interactions, raw.items
    assert raw.name == "synthetic" and raw.has_timestamps
    assert list(inter.columns) == ["user", "item", "timestamp"] and inter["timestamp"].dtype == np.int64
    assert list(items.columns) == ["item", "title", "description", "categories"]
    assert inter["user"].nunique() == 300
    assert items["item"].tolist() == [f"i{k}" for k in range(200)]
    assert inter["item"].isin(items["item"]).all()
    assert inter.groupby("user").size().min() >= 7
    assert not inter.duplicated(["user", "item"]).any()
    assert successors.shape == (200, 3) and not (successors == np.arange(200)[:, None]).any()


def test_users_may_exhaust_the_whole_catalogue_without_repeats() -> None:
    raw, _ = generate(SyntheticOptions(num_users=20, num_items=8, num_interests=2, mean_length=8, min_length=8))
    per_user = raw.interactions.groupby("user")["item"]
    assert (per_user.nunique() == 8).all() and (per_user.size() == 8).all()


def test_popularity_is_heavy_tailed(default: tuple[RawData, np.ndarray]) -> None:
    counts = default[0].interactions["item"].value_counts().to_numpy()  # descending
    assert counts[: len(counts) // 10].sum() / counts.sum() > 0.3


def test_timestamps_increase_per_user_from_different_starts(default: tuple[RawData, np.ndarray]) -> None:
    inter = default[0].interactions
    assert inter.groupby("user", sort=False)["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()
    gaps = inter.groupby("user", sort=False)["timestamp"].diff().dropna()
    assert gaps.min() >= 60 and gaps.max() > 7 * 86_400  # a minute up to more than a week
    assert inter.groupby("user")["timestamp"].min().nunique() > 0.9 * inter["user"].nunique()


@pytest.mark.parametrize("transition_prob", [0.0, 0.6, 0.9])
def test_successor_pairs_follow_the_transition_prob(transition_prob: float) -> None:
    raw, successors = generate(SyntheticOptions(num_users=500, transition_prob=transition_prob))
    user, item = indices(raw.interactions["user"]), indices(raw.interactions["item"])
    same = user[1:] == user[:-1]
    follows = (successors[item[:-1][same]] == item[1:][same, None]).any(axis=1)
    assert follows.mean() == pytest.approx(transition_prob, abs=0.08)


def test_last_item_predicts_the_next_far_better_than_popularity(default: tuple[RawData, np.ndarray]) -> None:
    """Leave-one-out HR@10 with the user's history excluded, both rankings fitted on the training prefix."""
    inter = default[0].interactions
    user, item = indices(inter["user"]), indices(inter["item"])
    n_users, n_items = user.max() + 1, item.max() + 1
    last = np.r_[user[1:] != user[:-1], True]
    train = ~last & ~np.r_[last[1:], False]  # the last two per user are test and validation
    popularity = np.bincount(item[train], minlength=n_items).astype(float)
    pair = train[:-1] & train[1:] & (user[1:] == user[:-1])
    bigram = np.zeros((n_items, n_items))
    np.add.at(bigram, (item[:-1][pair], item[1:][pair]), 1.0)

    history = np.zeros((n_users, n_items), dtype=bool)
    history[user[~last], item[~last]] = True
    target, previous = item[last], item[np.flatnonzero(last) - 1]

    def hit_rate(scores: np.ndarray) -> float:
        scores = np.where(history, -np.inf, scores)
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        return float((top == target[:, None]).any(axis=1).mean())

    by_popularity = hit_rate(np.broadcast_to(popularity, (n_users, n_items)))
    by_last_item = hit_rate(bigram[previous] * popularity.sum() + popularity)  # popularity breaks ties
    assert by_popularity < 0.1
    assert by_last_item >= 3 * by_popularity


def test_item_text_shares_words_within_an_interest(default: tuple[RawData, np.ndarray]) -> None:
    items = default[0].items
    assert items["categories"].nunique() == 20
    filler = {"a", "with", "and", "for", "lovers", "of"}
    text = items["title"] + " " + items["description"]
    words = [set(re.findall(r"[a-z]+", t.lower())) - filler for t in text]
    vocab = sorted(set().union(*words))
    present = np.array([[w in ws for w in vocab] for ws in words], dtype=float)  # (I, V)
    shares = (present @ present.T) > 0
    same = items["categories"].to_numpy()[:, None] == items["categories"].to_numpy()[None, :]
    np.fill_diagonal(same, False)
    across = ~same
    np.fill_diagonal(across, False)
    assert shares[same].mean() > 0.9
    assert shares[across].mean() < 0.1


@pytest.mark.parametrize(
    "option, value",
    [
        ("num_users", 0),
        ("num_items", "many"),
        ("num_interests", 300),  # more than num_items // 4
        ("mean_length", 0),
        ("min_length", 0),
        ("popularity_exponent", -1.0),
        ("transition_prob", 1.5),
        ("seed", -1),
        ("num_user", 10),  # a misspelt option
    ],
)
def test_bad_option_raises_naming_it(option: str, value: object) -> None:
    with pytest.raises(DataError, match=option):
        SyntheticSource(**{option: value})


def test_registered_source_loads_and_fingerprints_by_options() -> None:
    source = get_source("synthetic", **SMALL)
    assert isinstance(source, SyntheticSource) and source.input_files() == []
    assert source.load().interactions.equals(generate(SyntheticOptions(**SMALL))[0].interactions)
    spelt_out = get_source("synthetic", **SMALL, seed=0, transition_prob=0.6)
    assert spelt_out.fingerprint() == source.fingerprint()
    assert get_source("synthetic", **SMALL, seed=1).fingerprint() != source.fingerprint()
