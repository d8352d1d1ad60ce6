import numpy as np
import pytest
import torch

from genrec.data import DataError, LoaderConfig, SequenceDataModule
from genrec.robust import AttackConfig, AttackedDataModule
from genrec.robust.attacks import FakeProfiles, generate, segment_items, text_neighbours, train_counts
from genrec.recommender import VectorRecommender
from genrec.robust.metrics import interacted, target_metrics
from tests.robust.helpers import HashingEncoder

SYN = {"num_users": 300, "num_items": 200, "seed": 5}


def make(attack=None, cls=AttackedDataModule, **kw):
    kw = {"dataset": "synthetic", "dataset_options": SYN, "max_seq_len": 20, "loader": LoaderConfig(batch_size=64), **kw}
    dm = cls(**kw, attack=attack) if cls is AttackedDataModule else cls(**kw)
    dm.setup("fit")
    return dm


def batches(loader):
    return [{k: v.clone() for k, v in b.items()} for b in loader]


@pytest.mark.parametrize("kind", ["random", "bandwagon", "segment", "model", "copy", "augmented"])
def test_attack_writes_training_only(kind):
    clean = make(cls=SequenceDataModule)
    own = {"segment": {"segment_field": "categories"}, "model": {"surrogate_epochs": 1, "model_steps": 8}}.get(kind, {})
    dm = make({"kind": kind, "seed": 1, **own})
    real = clean.data.num_users
    assert len(dm.fakes) == 3 and dm.data.num_users == real + 3  # 1% of 300
    assert dm.is_fake.sum() == 3 and not dm.is_fake[:real].any()
    for a, b in zip(batches(clean.val_dataloader()) + batches(clean.test_dataloader()),
                    batches(dm.val_dataloader()) + batches(dm.test_dataloader())):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    np.testing.assert_array_equal(dm.train_end[:real], clean.train_end)
    np.testing.assert_array_equal(dm.data.items[: len(clean.data.items)], clean.data.items)
    fake_windows = [u for u, _, _ in (dm.train_set[i] for i in range(len(dm.train_set))) if u >= real]
    assert sorted(fake_windows) == [real, real + 1, real + 2]
    real_lengths = set((clean.train_end - clean.data.offsets[:-1]).tolist())
    for u in range(real, real + 3):
        seq = dm.data.sequence(u)
        assert set(dm.targets) <= set(seq.tolist())
        assert len(seq) in real_lengths or len(seq) == len(dm.targets) + 1 or kind in ("copy", "augmented")
        assert dm.train_end[u] == dm.data.offsets[u + 1]  # every fake item is training data
        assert np.isin(dm.targets, seq[-20:]).all()  # targets inside the model's window


def _without(seq, items):
    return seq[~np.isin(seq, items)]


def test_copy_fakes_are_real_histories_with_the_targets_spliced_in():
    clean = make(cls=SequenceDataModule, dataset_options={**SYN, "num_users": 2000})
    data, end = clean.data, clean.train_end
    fakes = generate(data, end, {"kind": "copy", "seed": 1, "targets_in_last": 10, "target_repeats": 2}, window=20)
    assert len(fakes) == len(fakes.donors) == 20 and len(set(fakes.donors.tolist())) > 15
    for seq, stamps, d in zip(fakes.sequences, fakes.timestamps, fakes.donors):
        own, own_t = data.items[data.offsets[d]:end[d]], data.timestamps[data.offsets[d]:end[d]]
        assert len(seq) == len(own) + 10  # every target twice, inserted
        planted = [i for i in range(len(seq) - 10, len(seq)) if seq[i] in fakes.targets]
        assert sorted(np.bincount(seq[len(seq) - 10:], minlength=data.num_items + 1)[fakes.targets]) >= [2] * 5
        # without the inserted items, a fake is exactly its donor's training history, items and times
        np.testing.assert_array_equal(_without(seq, fakes.targets), _without(own, fakes.targets))
        np.testing.assert_array_equal(stamps[~np.isin(seq, fakes.targets)], own_t[~np.isin(own, fakes.targets)])
        assert (np.diff(stamps) >= 0).all() and planted  # inserted items borrow their neighbour's time
    # a random subset of the targets per fake
    subset = generate(data, end, {"kind": "copy", "seed": 2, "targets_per_fake": 2}, window=20)
    for seq, d in zip(subset.sequences, subset.donors):
        assert len(seq) == end[d] - data.offsets[d] + 2
    carried = [frozenset(q[-20:][np.isin(q[-20:], subset.targets)].tolist()) for q in subset.sequences]
    assert all(len(c) >= 2 for c in carried) and len(set(carried)) > 1  # fakes carry different subsets
    with pytest.raises(DataError, match="targets_per_fake"):
        generate(data, end, {"kind": "copy", "targets_per_fake": 6}, window=20)
    # the donors travel with the saved profiles
    assert FakeProfiles.from_state(fakes.state()).donors.tolist() == fakes.donors.tolist()


def test_augmented_fakes_extend_a_real_history_with_popular_fillers_and_the_targets():
    clean = make(cls=SequenceDataModule, dataset_options={**SYN, "num_users": 2000})
    data, end = clean.data, clean.train_end
    counts = train_counts(data, end)
    popular = set((np.argsort(-counts[1:], kind="stable")[:100] + 1).tolist())  # the popular half of 200
    fakes = generate(data, end, {"kind": "augmented", "seed": 1, "filler_fraction": 0.5}, window=20)
    for seq, d in zip(fakes.sequences, fakes.donors):
        own = data.items[data.offsets[d]:end[d]]
        assert len(seq) == len(own) + round(0.5 * len(own)) + 5
        rest, own = _without(seq, fakes.targets), _without(own, fakes.targets)
        it = iter(rest.tolist())
        assert all(x in it for x in own.tolist())  # the donor's history, in order
        extra = rest.tolist()
        for x in own.tolist():
            extra.remove(x)
        assert set(extra) <= popular and not set(extra) & set(own.tolist())  # popular items the donor never had
        assert len(extra) == len(set(extra))  # drawn without repeats
        assert np.isin(fakes.targets, seq[-20:]).all()


def test_targets_come_from_the_least_popular_half_and_avoid_list():
    clean = make(cls=SequenceDataModule)
    counts = train_counts(clean.data, clean.train_end)
    seen = np.flatnonzero(counts[1:] > 0) + 1
    cutoff = np.sort(counts[seen])[len(seen) // 2 - 1]
    dm = make({"seed": 2})
    assert (counts[dm.targets] <= cutoff).all() and (counts[dm.targets] > 0).all()
    other = make({"seed": 2, "avoid_targets": dm.targets.tolist()})
    assert not set(other.targets) & set(dm.targets)


def test_seeded_and_repeatable():
    a, b, c = make({"kind": "bandwagon", "seed": 3}), make({"kind": "bandwagon", "seed": 3}), make({"kind": "bandwagon", "seed": 4})
    assert a.fakes.state() == b.fakes.state()
    assert a.fakes.state() != c.fakes.state()
    assert FakeProfiles.from_state(a.fakes.state()).state() == a.fakes.state()


def test_bandwagon_fills_with_popular_items():
    dm = make({"kind": "bandwagon", "popular_fraction": 0.1, "seed": 0})
    counts = train_counts(dm.clean_data, dm.train_end[: dm.num_real_users])
    popular = set((np.argsort(-counts[1:], kind="stable")[:20] + 1).tolist())
    for seq in dm.fakes.sequences:
        filler = [i for i in seq.tolist() if i not in set(dm.targets)]
        assert set(filler) <= popular


def test_segment_fills_with_items_sharing_all_of_a_targets_values():
    dm = make({"kind": "segment", "segment_field": "categories", "seed": 0})
    text = dm.data.item_text["categories"]
    values = [set(v.split(", ")) for v in text]
    for seq in dm.fakes.sequences:
        for i in set(seq.tolist()) - set(dm.targets):
            assert any(values[t] <= values[i] for t in dm.targets)
    with pytest.raises(DataError, match="segment_field='genres'.*categories"):
        segment_items(dm.data, dm.targets, "genres")


def test_text_neighbours_are_each_targets_nearest_items_by_text():
    dm = make()
    data = dm.data
    targets = np.array([3, 40])
    pool = text_neighbours(data, targets, 4, encoder={"kind": "tests.robust.helpers.HashingEncoder"})
    texts = data.item_text.astype(str).agg(". ".join, axis=1).tolist()
    emb = HashingEncoder().encode(texts[1:])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sims = emb[targets - 1] @ emb.T
    sims[np.arange(2), targets - 1] = -np.inf  # a target is not its own neighbour
    kth = np.sort(sims, axis=1)[:, -4]  # each target's 4th-best similarity (ties may pick either)
    assert 4 <= len(pool) <= 8 and not set(targets) & set(pool.tolist())
    assert ((sims[:, pool - 1] >= kth[:, None] - 1e-5).any(0)).all()  # every pooled item is a top-4 of a target
    with pytest.raises(DataError, match="segment_neighbours"):
        AttackConfig.from_dict({"kind": "segment", "segment_neighbours": -1})
    assert AttackConfig.from_dict({"kind": "segment", "segment_neighbours": 50}).label() == "segment (segment_neighbours 50)"


def test_model_based_profiles_end_with_the_targets():
    dm = make({"kind": "model", "seed": 0, "surrogate_epochs": 1, "model_steps": 6, "candidates": 4})
    for seq in dm.fakes.sequences:
        assert sorted(seq[-5:].tolist()) == dm.targets.tolist()
        assert not np.isin(dm.targets, seq[:-5]).any()


SMALL_MODEL = {"surrogate_epochs": 1, "model_steps": 6, "candidates": 4}


@pytest.mark.parametrize("kind", ["random", "model"])
def test_targets_in_last_places_every_target_among_the_last_items(kind):
    opts = {"kind": kind, "seed": 0, "targets_in_last": 8, **(SMALL_MODEL if kind == "model" else {})}
    dm, default = make(opts), make({**opts, "targets_in_last": None})
    spread = False
    for seq, plain in zip(dm.fakes.sequences, default.fakes.sequences):
        assert len(seq) == len(plain) and sorted(seq[-8:][np.isin(seq[-8:], dm.targets)].tolist()) == dm.targets.tolist()
        assert not np.isin(dm.targets, seq[:-8]).any()
        spread |= not np.isin(seq[-5:], dm.targets).all()
        if kind == "model":  # the same fillers, in the same order, with the targets moved among them
            assert seq[~np.isin(seq, dm.targets)].tolist() == plain[:-5].tolist()
    assert spread  # not simply appended at the end


@pytest.mark.parametrize("kind", ["random", "model"])
def test_target_repeats_plant_every_target_that_many_times_inside_the_window(kind):
    opts = {"kind": kind, "seed": 1, "target_repeats": 3, **(SMALL_MODEL if kind == "model" else {})}
    dm, once = make(opts), make({**opts, "target_repeats": 1})
    assert dm.targets.tolist() == once.targets.tolist()
    for seq, seq1 in zip(dm.fakes.sequences, once.fakes.sequences):
        assert len(seq) == max(len(seq1), 16)  # the donor's length, or room for 15 targets + 1
        window = seq[-20:]
        for t in dm.targets:
            assert (seq == t).sum() == (window == t).sum() == 3
        if kind == "model":
            assert sorted(seq[-15:].tolist()) == sorted(dm.targets.tolist() * 3)


def test_bad_options_name_the_key():
    with pytest.raises(DataError, match="unknown attack option.*'budgte'"):
        AttackConfig.from_dict({"budgte": 0.1})
    with pytest.raises(DataError, match="attack.kind"):
        AttackConfig(kind="shilling")
    with pytest.raises(DataError, match="attack.budget"):
        AttackConfig(budget=0)
    with pytest.raises(DataError, match="attack.target_repeats"):
        AttackConfig(target_repeats=0)


def test_checkpointed_fakes_replace_regenerated_ones():
    dm = make({"kind": "random", "seed": 0})
    other = make({"kind": "random", "seed": 9})
    dm.load_state_dict(other.state_dict())
    assert dm.fakes.state() == other.fakes.state()
    fake_items = [dm.data.sequence(u).tolist() for u in range(dm.num_real_users, dm.data.num_users)]
    assert fake_items == [s.tolist() for s in other.fakes.sequences]


class FixedScorer(VectorRecommender):
    """Scores each item by a fixed vector, the same for all users."""

    def __init__(self, scores):
        self.scores = torch.as_tensor(scores, dtype=torch.float32)

    def user_vectors(self, batch):
        return torch.ones(len(batch["user"]), 1)

    def item_vectors(self):
        return self.scores[:, None]


def test_target_metrics_count_only_users_who_never_saw_the_target():
    dm = make(cls=SequenceDataModule)
    n = dm.num_items
    targets = np.array([3, 7])
    seen = interacted(dm.data, targets)
    scores = np.zeros(n + 1)
    scores[3], scores[7] = 10.0, 9.0  # target 3 first, target 7 second for everyone who has not seen them
    out = target_metrics(FixedScorer(scores), dm.test_dataloader(), dm.data, targets, k=50)
    users = dm.eval_users
    assert out["pairs"] == int((~seen[users]).sum())
    assert out["t_hr@50"] == pytest.approx(1.0)
    n3, n7 = (~seen[users, 0]).sum(), (~seen[users, 1]).sum()
    # For a user who saw neither, 7 is second; for a user who saw 3 (excluded), 7 is first.
    first7 = (~seen[users, 1] & seen[users, 0]).sum()
    expected = (n3 + first7 + (n7 - first7) / np.log2(3)) / (n3 + n7)
    assert out["t_ndcg@50"] == pytest.approx(expected)
    scores[3] = scores[7] = -1.0  # both last: no hits
    assert target_metrics(FixedScorer(scores), dm.test_dataloader(), dm.data, targets, k=50)["t_hr@50"] == 0


def test_a_negative_attack_seed_is_refused_by_its_key_name():
    with pytest.raises(DataError, match=r"attack.seed must be an integer in \[0, 2\*\*63\), got -1"):
        AttackConfig(seed=-1)
    with pytest.raises(DataError, match="attack.seed"):
        AttackedDataModule(attack={"kind": "random", "seed": -1}, dataset="synthetic")


def _long_histories():
    """Long histories, so that a profile's last ``window`` positions are a small part of it."""
    dm = make(cls=SequenceDataModule, dataset_options={"num_users": 1000, "num_items": 2000, "seed": 7,
                                                        "min_length": 60, "mean_length": 90}, max_seq_len=10)
    return dm.data, dm.train_end


def _planted(fakes, data, end):
    """(sequence, positions of its targets) of the fakes whose donor never had a target (there, every
    target in the profile was planted)."""
    for i, seq in enumerate(fakes.sequences):
        d = fakes.donors[i] if fakes.donors is not None else None
        if d is None or not np.isin(fakes.targets, data.items[data.offsets[d]:end[d]]).any():
            yield seq, np.flatnonzero(np.isin(seq, fakes.targets))


def test_the_attack_config_lives_apart_and_keeps_every_spelling():
    from genrec import robust
    from genrec.robust import attack_config, attacks, surrogate

    assert attacks.AttackConfig is robust.AttackConfig is attack_config.AttackConfig
    assert surrogate.ModelAttack is attack_config.ModelAttack
    old = {"kind": "copy", "budget": 0.02, "seed": 3, "targets_in_last": 10}  # as configs and older checkpoints spell it
    config = AttackConfig.from_dict(old)
    assert config.splice == "recent" and config.label() == "copy (budget 0.02, targets_in_last 10)"
    assert AttackConfig.from_dict(config.to_dict()) == config
    assert AttackConfig.from_dict({"kind": "copy", "splice": "anywhere", "targets_per_fake": [2, 4]}).label() == \
        "copy (splice anywhere, targets_per_fake [2, 4])"


@pytest.mark.parametrize("splice", ["recent", "anywhere", "mixed"])
@pytest.mark.parametrize("kind", ["copy", "augmented", "random"])
def test_splice_puts_the_targets_recent_anywhere_or_either_per_fake(kind, splice):
    data, end = _long_histories()
    fakes = generate(data, end, {"kind": kind, "seed": 3, "budget": 0.1, "splice": splice}, window=10)
    assert len(fakes) == 100
    in_window, spread = [], []
    for seq, pos in _planted(fakes, data, end):
        assert sorted(seq[pos].tolist()) == fakes.targets.tolist()  # every target once
        in_window.append(pos.min() >= len(seq) - 10)
        spread.append(pos.min() / len(seq))
    assert len(in_window) > 60
    share = np.mean(in_window)
    if splice == "recent":
        assert share == 1.0
    elif splice == "anywhere":  # a 10-item tail of 60+ items holds all five by chance almost never
        assert share < 0.05 and np.mean(spread) < 0.5
    else:
        assert 0.35 < share < 0.65


@pytest.mark.parametrize("splice", ["recent", "anywhere", "mixed"])
def test_imitations_borrow_their_donors_timestamps_wherever_the_targets_go(splice):
    data, end = _long_histories()
    for kind in ("copy", "augmented"):
        fakes = generate(data, end, {"kind": kind, "seed": 5, "splice": splice, "budget": 0.03}, window=10)
        for seq, stamps, d in zip(fakes.sequences, fakes.timestamps, fakes.donors):
            own_t = data.timestamps[data.offsets[d]:end[d]]
            assert len(stamps) == len(seq) and (np.diff(stamps) >= 0).all()  # still in time order
            assert np.isin(stamps, own_t).all()  # every time is one of the donor's
            if kind == "copy":
                np.testing.assert_array_equal(_without(seq, fakes.targets),
                                              _without(data.items[data.offsets[d]:end[d]], fakes.targets))


def test_targets_per_fake_as_a_range_draws_a_subset_size_per_fake():
    data, end = _long_histories()
    fakes = generate(data, end, {"kind": "copy", "seed": 2, "budget": 0.1, "targets_per_fake": [2, 4],
                                 "splice": "anywhere"}, window=10)
    sizes = [len(set(seq[np.isin(seq, fakes.targets)].tolist())) for seq in fakes.sequences]
    assert set(sizes) == {2, 3, 4}  # every size in the range occurs, nothing outside it
    for seq, d in zip(fakes.sequences, fakes.donors):  # each carried target once, nothing else added
        assert len(seq) == end[d] - data.offsets[d] + len(set(seq[np.isin(seq, fakes.targets)].tolist()))
    restored = FakeProfiles.from_state(fakes.state())  # as a checkpoint holds them
    assert restored.config == fakes.config and restored.config.label() == fakes.config.label()
    with pytest.raises(DataError, match="targets_per_fake"):
        generate(data, end, {"kind": "copy", "targets_per_fake": [2, 6]}, window=10)
    for bad in ([3, 2], [0, 2], [1, 2, 3], 0, True):
        with pytest.raises(DataError, match="attack.targets_per_fake"):
            AttackConfig.from_dict({"kind": "copy", "targets_per_fake": bad})
    with pytest.raises(DataError, match="attack.splice"):
        AttackConfig(splice="middle")


@pytest.mark.parametrize("budget, expected", [(0.005, 5), (0.01, 10), (0.02, 20), (0.03, 30)])
def test_the_budget_is_that_share_of_the_real_users(budget, expected):
    data, end = _long_histories()
    assert len(generate(data, end, {"kind": "copy", "seed": 1, "budget": budget, "splice": "mixed"}, window=10)) == expected


def test_model_based_profiles_spread_their_targets_with_splice_anywhere():
    dm = make({"kind": "model", "seed": 0, "surrogate_epochs": 1, "model_steps": 6, "candidates": 4, "splice": "anywhere"})
    plain = make({"kind": "model", "seed": 0, "surrogate_epochs": 1, "model_steps": 6, "candidates": 4})
    moved = 0
    for seq, base in zip(dm.fakes.sequences, plain.fakes.sequences):
        assert seq[~np.isin(seq, dm.targets)].tolist() == base[:-5].tolist()  # the same fillers, in order
        moved += not np.isin(seq[-5:], dm.targets).all()
    assert moved == len(dm.fakes)


@pytest.mark.parametrize("options, digest", [
    ({"kind": "random"}, "7c419c498fa6dd3b"),
    ({"kind": "bandwagon", "target_repeats": 2}, "7297f8c15da65bd3"),
    ({"kind": "copy", "targets_in_last": 10}, "8e333d3c017b4b26"),
    ({"kind": "copy", "targets_per_fake": 2}, "b3f55fa72408b8b4"),
    ({"kind": "augmented"}, "3459bff610725eaa"),
])
def test_the_default_splice_draws_the_fakes_it_drew_before_splice_existed(options, digest):
    """Digests of the fakes the generator drew before ``splice`` and subset ranges were added: the
    attacks in saved configs and in the README's commands stay the same attacks."""
    import hashlib

    dm = make(cls=SequenceDataModule, dataset_options={"num_users": 300, "num_items": 200, "seed": 5})
    f = generate(dm.data, dm.train_end, {**options, "seed": 7, "budget": 0.05}, window=20)
    drawn = np.concatenate([*f.sequences, *f.timestamps]).astype(np.int64).tobytes()
    assert hashlib.sha256(drawn).hexdigest()[:16] == digest


def test_each_kind_holds_only_its_own_options():
    from genrec.robust.attack_config import ATTACKS, CopyAttack, ModelAttack

    model = AttackConfig.from_dict({"kind": "model", "candidates": 8, "budget": 0.02})
    assert isinstance(model, ModelAttack) and model.candidates == 8
    assert set(model.to_dict()) == {"kind", "budget", "num_targets", "targets", "avoid_targets", "seed", "targets_in_last",
                                    "splice", "target_repeats", "surrogate_epochs", "surrogate_dim", "candidates", "model_steps"}
    assert not hasattr(AttackConfig.from_dict({"kind": "copy"}), "candidates")
    for kind, cls in ATTACKS.items():  # the plain-dict spelling goes round unchanged
        attack = AttackConfig.from_dict({"kind": kind, "seed": 4})
        assert type(attack) is cls and AttackConfig.from_dict(attack.to_dict()) == attack
    with pytest.raises(DataError, match="attack.kind 'copy' is a CopyAttack"):
        AttackConfig(kind="copy")
    assert CopyAttack(targets_per_fake=[1, 2]).subset_sizes() == (1, 2)


def test_an_old_flat_config_loads_when_other_kinds_options_hold_their_defaults():
    flat = {"kind": "copy", "budget": 0.02, "num_targets": 5, "targets": None, "avoid_targets": [], "seed": 3,
            "targets_in_last": None, "splice": "anywhere", "target_repeats": 1, "popular_fraction": 0.5,
            "segment_field": "genres", "segment_neighbours": 0, "surrogate_epochs": 10, "surrogate_dim": 32,
            "candidates": 32, "model_steps": 50, "targets_per_fake": 2, "filler_fraction": 0.3}  # all 18, as saved before
    attack = AttackConfig.from_dict(flat)
    assert attack.to_dict() == {k: v for k, v in flat.items() if k in attack.to_dict()} and attack.targets_per_fake == 2
    with pytest.raises(DataError, match=r"attack.candidates is read by kind model, not by kind 'copy'"):
        AttackConfig.from_dict({**flat, "candidates": 8})
    with pytest.raises(DataError, match=r"attack.popular_fraction is read by kind bandwagon and augmented, not by kind 'copy'"):
        AttackConfig.from_dict({**flat, "popular_fraction": 0.1})
