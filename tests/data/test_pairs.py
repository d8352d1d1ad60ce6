"""PairDataModule: encoder fine-tuning pairs from the training parts of several domains."""
import numpy as np
import pytest

from genrec.data import LoaderConfig
from genrec.data.pairs import PairConfig, PairDataModule
from genrec.errors import DataError
from tests.helpers import text_domain

# y, z (domain one) and s, t (domain two) are only ever validation and test targets
ONE = {"u0": "abcyz", "u1": "bcayz", "u2": "cabzy", "u3": "aabyz"}
TWO = {f"v{i}": "pqrst" if i % 2 else "pqrts" for i in range(6)}
TITLES = {c: f"item {c}" for c in "abcyzpqrst"}


def module(tmp_path, batch_size=2, domain_balance=1.0, two_options=None, **pairing):
    one = text_domain(tmp_path / "one", ONE, {k: TITLES[k] for k in "abcyz"})
    two = text_domain(tmp_path / "two", TWO, {k: TITLES[k] for k in "pqrst"})
    dm = PairDataModule([{"name": "one", "dataset": "plain", "root": str(one)},
                         {"name": "two", "dataset": "plain", "root": str(two), **(two_options or {})}],
                        PairConfig(**pairing), domain_balance, loader=LoaderConfig(batch_size=batch_size))
    dm.setup("fit")
    return dm


def all_batches(dm):
    return list(dm.train_dataloader())


def decoded(dm, ids):
    return [dm.data.item_ids[i].split(":")[1] for i in ids if i]


def test_pairs_come_from_training_parts_only_and_repeats_are_left_out_and_counted(tmp_path, caplog):
    with caplog.at_level("INFO"):
        dm = module(tmp_path, domain_balance=0.0)
    pairs = sorted((decoded(dm, q.tolist())[-1], decoded(dm, [p])[0])
                   for b in all_batches(dm) for q, p in zip(b["query"], b["positive"].tolist()))
    # an epoch draws 9 blocks of 2 of the 19 pairs: every one whose domain has room
    everything = {("a", "b"), ("b", "c"), ("c", "a"), ("p", "q"), ("q", "r")}
    assert set(pairs) == everything
    assert not {"y", "z", "s", "t"} & {item for pair in pairs for item in pair}  # held-out targets never enter
    assert len(dm.pairs) == 7 + 12 and dm.pairs.left_out.sum() == 1  # u3's a -> a
    assert "one 7 (1 repeats left out), two 12 (0 repeats left out)" in caplog.text


def test_a_user_query_holds_the_last_history_items_oldest_first(tmp_path):
    dm = module(tmp_path, query="user", history=2, batch_size=19, domain_balance=0.0, batches="mixed")
    rows = {(tuple(decoded(dm, q.tolist())), decoded(dm, [p])[0], int(n))
            for b in all_batches(dm) for q, p, n in zip(b["query"], b["positive"].tolist(), b["lengths"])}
    assert (("a", "b"), "c", 2) in rows and (("a",), "b", 1) in rows and (("c", "a"), "b", 2) in rows
    assert (("a", "a"), "b", 2) in rows and not any(p in q for q, p, _ in rows)  # u3's (a) -> a is a repeat
    assert dm.pairs.left_out.sum() == 1
    with pytest.raises(DataError, match="data.pairing.history"):
        module(tmp_path / "x", query="user", history=0)


def test_domain_batches_hold_one_domain_and_balance_evens_the_domains_out(tmp_path):
    dm = module(tmp_path, domain_balance=1.0)
    per_domain = np.bincount([int(b["domain"][0]) for b in all_batches(dm)], minlength=2)
    assert all(len(set(b["domain"].tolist())) == 1 for b in all_batches(dm))
    assert abs(per_domain[0] - per_domain[1]) <= 1  # 7 and 12 pairs, drawn equally often
    unbalanced = np.bincount([int(b["domain"][0]) for b in all_batches(module(tmp_path / "u", domain_balance=0.0))])
    assert unbalanced.tolist() == [3, 6]  # as the data come: 7 : 12
    mixed = module(tmp_path / "m", batches="mixed", batch_size=6)
    assert any(len(set(b["domain"].tolist())) == 2 for b in all_batches(mixed))


def test_a_domain_trained_on_a_share_of_its_users_gives_pairs_of_those_users_only(tmp_path, caplog):
    with caplog.at_level("INFO"):
        dm = module(tmp_path, domain_balance=0.0, two_options={"train_user_fraction": 0.5, "fraction_seed": 1})
    lo, hi = dm.user_ranges["two"]
    chosen = np.flatnonzero(dm.train_user_mask[lo:hi]) + lo
    assert len(chosen) == 3  # 3 of the 6 users of domain two
    two_users = dm.pairs.user[dm.pair_domain == 1]
    assert set(two_users.tolist()) == set(chosen.tolist()) and len(two_users) == 3 * 2  # 2 pairs each
    assert (dm.pair_domain == 0).sum() == 7  # domain one keeps all its pairs
    assert "one 7 (1 repeats left out), two 6 (0 repeats left out)" in caplog.text
    assert len(dm.test_sets[1]) == 6  # every user of two is still evaluated
