import lightning as L
import numpy as np
import pytest
import torch

from genrec.data import DataError, LoaderConfig, MultiDomainDataModule, SequenceDataModule
from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig

A = {"name": "a", "dataset": "synthetic", "dataset_options": {"num_users": 60, "num_items": 40, "num_interests": 5, "seed": 1}}
B = {"name": "b", "dataset": "synthetic", "dataset_options": {"num_users": 50, "num_items": 30, "num_interests": 5, "seed": 2}}


def multi(**kw):
    return MultiDomainDataModule(domains=[A, B], max_seq_len=8, loader=LoaderConfig(batch_size=16, eval_batch_size=16), **kw)


def single(spec):
    return SequenceDataModule(dataset="synthetic", dataset_options=spec["dataset_options"], max_seq_len=8)


def test_domains_sit_side_by_side_and_keep_every_interaction():
    dm, a, b = multi(), single(A), single(B)
    d = dm.data
    assert d.num_items == a.num_items + b.num_items and d.num_users == a.data.num_users + b.data.num_users
    assert dm.eval_domains == [("a", 1, a.num_items), ("b", a.num_items + 1, a.num_items + b.num_items)]
    # b's users come after a's, with b's item ids shifted past a's catalogue; nothing lost or changed
    np.testing.assert_array_equal(d.sequence(0), a.data.sequence(0))
    np.testing.assert_array_equal(d.sequence(a.data.num_users + 3), b.data.sequence(3) + a.num_items)
    assert d.num_interactions == a.data.num_interactions + b.data.num_interactions
    # item text is one table; each row keeps its domain's text
    assert d.item_text["title"].iloc[a.num_items + 1] == b.data.item_text["title"].iloc[1]
    assert d.item_text["domain"].iloc[1] == "a" and d.item_text["domain"].iloc[-1] == "b"
    assert d.item_ids[1].startswith("a:") and d.item_ids[-1].startswith("b:")


def test_each_eval_loader_holds_one_domains_users_and_targets():
    dm = multi()
    dm.setup("fit")
    (name_a, lo_a, hi_a), (name_b, lo_b, hi_b) = dm.eval_domains
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    for loader, (lo, hi) in zip(loaders, [(lo_a, hi_a), (lo_b, hi_b)]):
        for batch in loader:
            assert ((batch["target"] >= lo) & (batch["target"] <= hi)).all()
            seen = batch["items"][batch["items"] > 0]
            assert ((seen >= lo) & (seen <= hi)).all()
    assert sum(len(l.dataset) for l in loaders) == len(dm.eval_users)
    only_b = MultiDomainDataModule(domains=[A, B], eval_on=["b"], max_seq_len=8)
    only_b.setup("fit")
    assert [n for n, _, _ in only_b.eval_domains] == ["b"] and len(only_b.val_dataloader()) == 1


@pytest.mark.parametrize("kw, match", [
    ({"domains": []}, "data.domains is empty"),
    ({"domains": [A, {"dataset": "synthetic", "name": "a"}]}, "used twice"),
    ({"domains": [{"root": "x"}]}, r"data.domains\[0\] must be a mapping"),
    ({"domains": [{**A, "colour": 1}]}, r"data.domains\[0\] has unknown key"),
    ({"domains": [A], "eval_on": ["z"]}, "data.eval_on names unknown"),
    ({"domains": [A, {**B, "train_user_fraction": 0}]}, r"data.domains\[1\].train_user_fraction must be in \(0, 1\], got 0"),
    ({"domains": [{**A, "fraction_seed": -2}]}, r"data.domains\[0\].fraction_seed must be >= 0, got -2"),
    ({"domains": [{**A, "train_user_fraction": "10%"}]}, r"data.domains\[0\].train_user_fraction must be a number in \(0, 1\], got '10%'"),
    ({"domains": [{**A, "fraction_seed": 1.5}]}, r"data.domains\[0\].fraction_seed must be a whole number >= 0, got 1.5"),
])
def test_bad_domain_configs_are_named(kw, match):
    with pytest.raises(DataError, match=match):
        MultiDomainDataModule(**kw)


def test_a_retrieval_model_ranks_each_user_within_their_own_domain():
    dm = multi()
    dm.setup("fit")
    model = RetrievalModule(SASRec(dim=8, num_blocks=1, num_heads=1, max_seq_len=8), num_items=dm.num_items,
                            loss=LossConfig(num_negatives=8), hr_ks=(1, 10), ndcg_ks=(10,))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=dm)
    logged = trainer.callback_metrics
    assert {"val/hr@10", "val/a/hr@10", "val/b/hr@10"} <= set(logged)
    # the pooled figure is the user-weighted mean of the domains'
    n_a, n_b = (len(s) for s in dm.val_sets)
    pooled = (logged["val/a/hr@10"] * n_a + logged["val/b/hr@10"] * n_b) / (n_a + n_b)
    assert logged["val/hr@10"].item() == pytest.approx(pooled.item(), abs=1e-6)
    # within a domain, a rank counts only that domain's items: by hand for a batch of domain b
    batch = next(iter(dm.val_dataloader()[1]))
    _, lo, hi = dm.eval_domains[1]
    model.eval()
    model.on_validation_epoch_start()
    with torch.no_grad():
        ranks = model.rank_targets(batch, model.val_metrics, (lo, hi))
        scores = model.user_vectors(batch) @ model.item_vectors().T
    for r in range(len(batch["target"])):
        s = scores[r].clone()
        s[batch["exclude"][r]] = float("-inf")
        mine = s[lo : hi + 1]
        t = batch["target"][r]
        ahead = (mine > scores[r, t]).sum() + ((mine == scores[r, t]) & (torch.arange(lo, hi + 1) < t)).sum()
        assert ranks[r].item() == ahead.item()


def test_every_training_batch_is_one_domains_and_balance_sets_the_mix():
    sizes = {}
    for balance in (0.0, 1.0):
        dm = MultiDomainDataModule(domains=[A, B], max_seq_len=8, domain_balance=balance, loader=LoaderConfig(batch_size=4))
        dm.setup("fit")
        first_b = dm.item_ranges["b"][0]
        counts = {"a": 0, "b": 0}
        for batch in dm.train_dataloader():
            items = batch["items"][batch["items"] > 0]
            in_b = items >= first_b
            assert in_b.all() or (~in_b).all()  # never two domains in one step
            counts["b" if in_b.all() else "a"] += len(batch["user"])
        sizes[balance] = counts
    # 60 vs 50 users in 27 steps of 4: in proportion 15 vs 12 steps, balanced 14 vs 13
    assert (sizes[0.0]["a"], sizes[0.0]["b"]) == (60, 48) and (sizes[1.0]["a"], sizes[1.0]["b"]) == (56, 52)


def test_validation_samples_users_per_domain_but_test_keeps_them_all():
    dm = multi(val_users_per_domain=20)
    dm.setup("fit")
    full = multi()
    full.setup("fit")
    assert [len(s) for s in dm.val_sets] == [20, 20]
    assert [len(s) for s in dm.test_sets] == [len(s) for s in full.test_sets]
    again = multi(val_users_per_domain=20)
    again.setup("fit")  # the same sample every time
    np.testing.assert_array_equal(dm.val_sets[0].users, again.val_sets[0].users)


@pytest.mark.parametrize("kw, match", [
    ({"domain_balance": 1.5}, "data.domain_balance must be in"),
    ({"val_users_per_domain": -1}, "data.val_users_per_domain"),
])
def test_bad_sampling_options_are_named(kw, match):
    with pytest.raises(DataError, match=match):
        multi(**kw)


def test_a_domain_can_train_on_a_share_of_its_users_drawn_as_few_shot_draws_them(caplog):
    from genrec.data.fewshot import FewShotDataModule

    with caplog.at_level("INFO"):
        dm = MultiDomainDataModule(domains=[A, {**B, "train_user_fraction": 0.2, "fraction_seed": 3}], max_seq_len=8)
        dm.setup("fit")
    full = multi()
    full.setup("fit")
    lo, hi = dm.user_ranges["b"]
    few = FewShotDataModule(train_user_fraction=0.2, fraction_seed=3, dataset="synthetic",
                            dataset_options=B["dataset_options"], max_seq_len=8)
    few.setup("fit")
    trained = dm.train_set.users
    np.testing.assert_array_equal(np.unique(trained[trained >= lo]) - lo, few.train_users)  # the same 10 users
    np.testing.assert_array_equal(trained[trained < lo], full.train_set.users[full.train_set.users < lo])  # a: all
    assert len(few.train_users) == 10 and "domain 'b': training on 10 of its 50 users" in caplog.text
    assert [len(s) for s in dm.test_sets] == [len(s) for s in full.test_sets]  # evaluation keeps everyone
    assert [len(s) for s in dm.val_sets] == [len(s) for s in full.val_sets]
