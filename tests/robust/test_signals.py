import dataclasses

import numpy as np
import pytest
import torch

from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.robust.calibrator import sequence_features
from genrec.data import SequenceDataModule
from genrec.robust.attacks import generate, inject, train_counts
from genrec.robust.detector import roc_auc
from genrec.robust.signals import (AnomalySignal, CoordinationSignal, DenseBlockSignal, UserView, _rarest_per_row, holder_coherence, text_surprisal,
                                   anomaly_groups, anomaly_scores, interaction_matrix,
                                   log_count_windows)


def test_mean_fit_is_over_the_window_positions():
    torch.manual_seed(0)
    m = RetrievalModule(SASRec(dim=8, num_blocks=1, max_seq_len=6), num_items=30)
    f = sequence_features(m, [np.arange(1, 11), np.array([4, 5])], [np.arange(10), np.arange(2)], np.ones((2, 3)), max_len=6)
    torch.testing.assert_close(f.mean_fit, f.fit.sum(1) / f.lengths)
    assert f.lengths.tolist() == [6, 1]


def test_log_count_windows():
    hist = [np.arange(1, 11), np.array([4, 5]), np.zeros(0, np.int64)]
    counts = np.arange(31)
    cols = log_count_windows(hist, counts, (3, 8))
    assert cols.shape == (3, 3)
    # the whole history (not only the recommender's window), then the last w items; a short history: all of it
    expect = lambda w: [np.log1p(np.arange(1, 11)[-w:] if w else np.arange(1, 11)).mean(), np.log1p([4, 5]).mean(), 0.0]
    for c, w in enumerate((0, 3, 8)):
        torch.testing.assert_close(cols[:, c], torch.tensor(expect(w), dtype=torch.float32))
    torch.testing.assert_close(log_count_windows(hist, counts), cols[:, :1])  # the windows only add columns
    assert anomaly_groups(4) == [[0], [1, 2, 3]] and anomaly_groups(2) == [[0], [1]]


def test_anomaly_signal_scores_every_row_against_the_reference_users():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 1000, 101)
    real = [rng.integers(1, 101, rng.integers(5, 60)) for _ in range(300)]
    fit = torch.as_tensor(rng.normal(0.3, 0.05, 300), dtype=torch.float32)
    rare = np.argsort(counts[1:])[:5] + 1  # a long ordinary profile with the rarest items in its last 10
    decoy = np.r_[real[0][:50] if len(real[0]) >= 50 else np.resize(real[0], 50), np.repeat(rare, 2)]
    view = UserView(real + [decoy], [np.arange(len(h)) for h in real + [decoy]], torch.cat([fit, torch.tensor([0.3])]),
                    counts, num_reference=300)
    signal = AnomalySignal(windows=(10, 50))
    stats = signal.statistics(view)
    assert stats.shape == (301, 4)
    scores = signal.score(view)
    np.testing.assert_allclose(scores, anomaly_scores(stats, stats[:300], [[0], [1, 2, 3]]), rtol=1e-6)
    assert scores[300] > np.quantile(scores[:300], 0.99)  # the rare last window stands out
    # the reference is the data module's users: adding rows does not move their scores
    alone = signal.score(UserView(real, view.timestamps[:300], fit, counts, num_reference=300))
    np.testing.assert_allclose(scores[:300], alone, rtol=1e-6)
    # the whole history alone dilutes the window
    assert AnomalySignal(windows=()).score(view)[300] < scores[300]
    with pytest.raises(ValueError, match="reference users"):
        UserView(real, view.timestamps[:299], fit, counts, num_reference=300)


def test_anomaly_scores_take_the_most_anomalous_window_of_a_group():
    rng = np.random.default_rng(0)
    # columns: fit, whole-history log count, last-10 log count; user 0 is ordinary over its whole
    # history but its last window is far off (a long profile with its targets at the end)
    stats = torch.as_tensor(np.c_[rng.normal(0, 1, 300), rng.normal(5, 1, 300), rng.normal(5, 1, 300)], dtype=torch.float32)
    stats[0] = torch.tensor([0.0, 5.0, -5.0])
    grouped = anomaly_scores(stats, stats, [[0], [1, 2]])
    z = (stats - stats.median(0).values).abs() / (stats - stats.median(0).values).abs().median(0).values
    np.testing.assert_allclose(grouped, (z[:, 0] + z[:, 1:].max(1).values).numpy(), rtol=1e-5)
    assert np.argmax(grouped) == 0
    # the default, every column alone, sums all three
    np.testing.assert_allclose(anomaly_scores(stats, stats), z.sum(1).numpy(), rtol=1e-5)


def test_anomaly_scores_are_two_sided():
    rng = np.random.default_rng(0)
    stats = torch.as_tensor(np.c_[rng.normal(0, 1, 200), rng.normal(5, 2, 200)], dtype=torch.float32)
    stats[0, 0], stats[1, 0], stats[2, 1] = -8, 8, 5 + 16  # fakes below, above, and on the other statistic
    s = anomaly_scores(stats, stats)
    assert set(np.argsort(-s)[:3]) == {0, 1, 2}
    # median and MAD in units: the same score after shifting and scaling a statistic
    moved = stats * torch.tensor([3.0, 1.0]) + torch.tensor([10.0, 0.0])
    np.testing.assert_allclose(anomaly_scores(moved, moved), s, rtol=1e-4)
    # scored against another reference: a user at the reference's median scores 0
    ref = stats[3:]
    assert anomaly_scores(ref.median(0).values[None], ref)[0] == pytest.approx(0, abs=1e-6)


def _view(histories, counts):
    return UserView(histories, [np.arange(len(h)) for h in histories], torch.zeros(len(histories)), counts, len(histories))


def test_item_bursts_are_binomial_z_scores_of_recent_counts():
    hist = [np.array([1, 2, 3, 4]), np.array([2, 3]), np.array([4, 4, 1, 2, 5])]
    z = CoordinationSignal(windows=(2,)).item_bursts(hist, 2, 5)
    c = np.bincount(np.concatenate(hist), minlength=6).astype(float)
    r = np.bincount(np.concatenate([h[-2:] for h in hist]), minlength=6).astype(float)
    rho = 6 / 11
    np.testing.assert_allclose(z, (r - rho * c) / np.sqrt(rho * (1 - rho) * c + 1))
    with pytest.raises(ValueError, match="windows"):
        CoordinationSignal(windows=())
    with pytest.raises(ValueError, match="threshold"):
        CoordinationSignal(threshold=-1)


@pytest.mark.parametrize("attack, auc", [({"kind": "copy", "targets_in_last": 10}, 0.9),
                                         ({"kind": "augmented", "targets_in_last": 10}, 0.9),
                                         ({"kind": "copy", "targets_in_last": 10, "targets_per_fake": 2}, 0.75)])
def test_coordination_finds_imitation_fakes_without_knowing_the_targets(attack, auc):
    """Fakes that copy real histories look real one by one; their shared recent items give them away."""
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 2000, "num_items": 500, "seed": 4},
                            max_seq_len=50)
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    fakes = generate(data, end, {**attack, "seed": 1, "budget": 0.02}, window=50)
    poisoned, pend = inject(data, end, fakes)
    histories = [poisoned.items[poisoned.offsets[u]:pend[u]] for u in range(poisoned.num_users)]
    fake = np.arange(poisoned.num_users) >= data.num_users
    view = _view(histories, train_counts(poisoned, pend))
    scores = CoordinationSignal().score(view)
    assert roc_auc(scores, fake) > auc  # two of five targets per fake: each target's burst is smaller
    assert roc_auc(AnomalySignal().score(view), fake) < 0.75  # per-user statistics barely see them
    # on the clean data nothing stands out: most users score 0
    clean = CoordinationSignal(windows=(10,)).score(_view(histories[: data.num_users], train_counts(data, end)))
    assert (clean == 0).mean() > 0.5


def _attacked_histories(attack, dataset_options, budget=0.02):
    dm = SequenceDataModule(dataset="synthetic", dataset_options=dataset_options, max_seq_len=50)
    dm.setup("fit")
    data, end = dm.data, dm.train_end
    clean = [data.items[data.offsets[u]:end[u]] for u in range(data.num_users)]
    if attack is None:
        return clean, None, data.num_items
    fakes = generate(data, end, {**attack, "seed": 1, "budget": budget}, window=50)
    poisoned, pend = inject(data, end, fakes)
    histories = [poisoned.items[poisoned.offsets[u]:pend[u]] for u in range(poisoned.num_users)]
    return histories, np.arange(poisoned.num_users) >= data.num_users, data.num_items


# 2,000 items: the least popular half, where targets come from, is rare as in real logs. The
# generator's successor chains make organic pairs of lift up to about 38, so the lift bar sits above.
STRUCTURED = {"num_users": 2000, "num_items": 2000, "seed": 4}
DENSE = {"min_lift": 30.0, "min_support": 0.005}


@pytest.mark.parametrize("attack, auc", [({"kind": "copy", "splice": "anywhere"}, 0.95),
                                         ({"kind": "augmented", "splice": "mixed"}, 0.95),
                                         ({"kind": "copy", "splice": "anywhere", "targets_per_fake": [3, 5]}, 0.9)])
def test_dense_block_finds_imitation_fakes_wherever_their_targets_sit(attack, auc):
    histories, fake, num_items = _attacked_histories(attack, STRUCTURED)
    scores = DenseBlockSignal(**DENSE).score(_view(histories, np.zeros(num_items + 1)))
    assert roc_auc(scores, fake) > auc
    # the recent-window signal is blind to targets spliced anywhere
    assert roc_auc(CoordinationSignal().score(_view(histories, np.zeros(num_items + 1))), fake) < 0.8
    # position-free: shuffling every history changes no score
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(h) for h in histories]
    np.testing.assert_allclose(DenseBlockSignal(**DENSE).score(_view(shuffled, np.zeros(num_items + 1))), scores)


def test_dense_block_flags_no_block_where_there_is_none():
    """Items drawn independently of each other (one interest, no successor chains): no item pair is
    held together beyond chance, so no pair is strong and every user scores 0, at the defaults and
    at the test's bar; the same data with copy fakes added has exactly their block."""
    flat = {"num_users": 2000, "num_items": 2000, "seed": 4, "transition_prob": 0.0, "num_interests": 1}
    clean, _, num_items = _attacked_histories(None, flat)
    for signal in (DenseBlockSignal(), DenseBlockSignal(**DENSE)):
        assert signal.strong_pairs(clean, num_items).nnz == 0
        assert (signal.score(_view(clean, np.zeros(num_items + 1))) == 0).all()
    histories, fake, _ = _attacked_histories({"kind": "copy", "splice": "anywhere"}, flat)
    signal = DenseBlockSignal()
    pairs = signal.strong_pairs(histories, num_items).tocoo()
    targets = np.unique(np.concatenate([h[np.isin(h, pairs.row)] for h in histories[-3:]]))
    assert len(targets) == 5 and pairs.nnz == 2 * 10  # the five targets' ten pairs, nothing else
    scores = signal.score(_view(histories, np.zeros(num_items + 1)))
    assert (scores[fake] > 0).all() and (scores[~fake] == 0).mean() > 0.95


def test_strong_pairs_are_the_pairs_of_enough_support_and_lift():
    rng = np.random.default_rng(3)
    histories = [rng.choice(np.arange(1, 41), rng.integers(3, 12), replace=False) for _ in range(400)]
    for h in histories[:30]:  # 30 users hold items 41 and 42 together, 10 more hold 41 alone
        h.resize(len(h) + 2, refcheck=False)
        h[-2:] = [41, 42]
    histories += [np.array([41, 5]) for _ in range(10)]
    signal = DenseBlockSignal(min_lift=5.0, min_support=0.05, max_items=50)
    pairs = signal.strong_pairs(histories, 42).toarray()
    x = np.zeros((len(histories), 43))
    for u, h in enumerate(histories):
        x[u, h] = 1
    co, deg, n = x.T @ x, x.sum(0), len(histories)
    lift = co * n / np.maximum(np.outer(deg, deg), 1)
    strong = (co >= np.ceil(0.05 * n)) & (lift >= 5.0) & ~np.eye(43, dtype=bool)
    assert strong[41, 42] and strong.sum() == 2  # only the planted pair
    np.testing.assert_allclose(pairs, np.where(strong, 1 + np.log(np.where(strong, lift, 5.0) / 5.0), 0), rtol=1e-5)
    scores = signal.score(_view(histories, np.zeros(43)))
    np.testing.assert_allclose(scores, x[:, 41] * x[:, 42] * pairs[41, 42], rtol=1e-5)
    # max_items: co-occurrence counts only each user's rarest candidate items
    m = interaction_matrix([np.array([1, 2, 3]), np.array([3, 4])], 4)
    kept = _rarest_per_row(m, np.array([0, 5, 1, 9, 2]), 2)
    assert kept.toarray().tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 1, 1]]  # item 3, the most popular, dropped from row 0
    for bad in ({"min_lift": 1.0}, {"min_support": 0.0}, {"min_support": 1.0}, {"max_items": 1}, {"chunk": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DenseBlockSignal(**bad)


def test_dense_block_counts_in_chunks_as_in_one_block():
    histories, _, num_items = _attacked_histories({"kind": "copy", "splice": "anywhere"}, STRUCTURED)
    whole = DenseBlockSignal(**DENSE).strong_pairs(histories, num_items)
    chunked = DenseBlockSignal(**DENSE, chunk=7).strong_pairs(histories, num_items)
    assert whole.nnz > 20 and (whole != chunked).nnz == 0


def _two_tastes(rng):
    """600 users of two tastes (40 of items 1-100, or 40 of 101-200); 40 users of the first taste
    also hold the organic pair 201-202 (a sequel pair); 30 users drawn from both tastes carry the
    planted items 203-205 (copy fakes on random donors)."""
    histories = [rng.choice(np.arange(1, 101) if u < 300 else np.arange(101, 201), 40, replace=False) for u in range(600)]
    organic = rng.choice(300, 40, replace=False)
    planted = rng.choice(600, 30, replace=False)
    for u in organic:
        histories[u] = np.r_[histories[u], 201, 202]
    for u in planted:
        histories[u] = np.r_[histories[u], 203, 204, 205]
    return histories, organic, planted


def test_lockstep_pairs_keep_planted_pairs_and_drop_pairs_of_one_taste():
    histories, organic, planted = _two_tastes(np.random.default_rng(0))
    users = interaction_matrix(histories, 205)
    coherence = holder_coherence(users, np.array([201, 203, 203, 204]), np.array([202, 204, 205, 205]))
    assert coherence[0] > 0.2 and (np.abs(coherence[1:]) < 0.05).all()
    view = _view(histories, np.zeros(206))
    dense = DenseBlockSignal(min_lift=5.0, min_support=0.03).score(view)
    lockstep = DenseBlockSignal(min_lift=5.0, min_support=0.03, max_coherence=0.1).score(view)
    only_organic = np.setdiff1d(organic, planted)
    assert (dense[only_organic] > 0).all() and (lockstep[only_organic] == 0).all()
    assert (lockstep[planted] >= 3).all()  # three planted pairs, each of weight >= 1
    rest = np.setdiff1d(np.arange(600), np.r_[organic, planted])
    assert (lockstep[rest] == 0).all()


def test_signals_are_typed_configs_with_weight_and_confident_flag():
    signal = DenseBlockSignal(max_coherence=0.1, flag_above=2.0, weight=0.5)
    assert signal.name == "dense_block" and not signal.needs_model and AnomalySignal().needs_model
    with pytest.raises(TypeError):
        DenseBlockSignal(0.5)  # keywords only: a list of options read like the YAML
    for bad in ({"weight": 1.5}, {"weight": -0.1}, {"flag_above": 0.0}, {"max_coherence": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DenseBlockSignal(**bad)


def test_text_surprisal_is_the_mean_of_the_most_surprising_items_against_the_rest():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 4))
    histories = [np.array([1, 2, 3, 4]), np.array([5]), np.array([6, 7, 8, 9, 10, 11, 12])]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def direct(h, k):
        if len(h) < 2:
            return 0.0
        rest = [np.delete(unit[h], j, 0).mean(0) for j in range(len(h))]
        s = [1 - unit[i] @ r / np.linalg.norm(r) for i, r in zip(h, rest)]
        return np.mean(sorted(s, reverse=True)[:k])

    np.testing.assert_allclose(text_surprisal(histories, vectors, 3), [direct(h, 3) for h in histories], rtol=1e-6)
    # an item unlike the rest of its history stands out
    close = np.tile(unit[1], (5, 1)) + 0.01 * rng.normal(size=(5, 4))
    table = np.vstack([np.zeros(4), close, -unit[1]])
    assert text_surprisal([np.arange(1, 6), np.arange(1, 7)], table, 1)[1] > 1.5


def _subset_block(rng, organic_holders=30):
    """600 users of two tastes; 60 copy fakes (random donors' histories) each carry 3 of the 5 targets
    201-205, and ``organic_holders`` real users hold target 205 too, so some of its pairs miss the lift bar."""
    histories = [rng.choice(np.arange(1, 101) if u < 300 else np.arange(101, 201), 40, replace=False) for u in range(600)]
    for u in rng.choice(600, organic_holders, replace=False):
        histories[u] = np.r_[histories[u], 205]
    for d in rng.choice(600, 60):
        histories.append(rng.permutation(np.r_[histories[d][histories[d] != 205], rng.choice(np.arange(201, 206), 3, replace=False)]))
    return histories, np.arange(len(histories)) >= 600


def test_lockstep_groups_flag_every_fake_carrying_a_subset_of_the_targets():
    """Lockstep pairs link the targets into one group; a fake holding 3 of its 5 items holds 3 of its
    pairs, whether or not each pair passed the bars alone (summing the strong pairs held leaves some
    of these fakes below flag_above)."""
    histories, fake = _subset_block(np.random.default_rng(0))
    view = _view(histories, np.zeros(206))
    signal = DenseBlockSignal(min_lift=5.0, min_support=0.02, max_coherence=0.1, flag_above=2.0)
    users = interaction_matrix(histories, 205)
    pairs = signal.strong_pairs(histories, 205)
    per_pair = np.asarray((users @ pairs).multiply(users).sum(1)).ravel() / 2
    assert (per_pair[fake] <= signal.flag_above).sum() > 0  # the weak pairs' holders, missed pair by pair
    groups = signal.lockstep_groups(users, pairs)
    assert (groups[201:206] == groups[201]).all() and (groups[201] >= 0) and (groups >= 0).sum() == 5
    scores = signal.score(view)
    np.testing.assert_array_equal(scores[fake], 3.0)  # three items of the group: three pairs
    assert (scores[~fake] <= signal.flag_above).all()


def test_lockstep_groups_leave_a_series_of_one_taste_unflagged():
    """Organic co-occurrence: 60 users of the first taste hold a four-film series (201-204), a dense
    block of strong pairs; its holders share a taste, so no pair is lockstep and nobody scores."""
    rng = np.random.default_rng(1)
    histories = [rng.choice(np.arange(1, 101) if u < 300 else np.arange(101, 201), 40, replace=False) for u in range(600)]
    for u in rng.choice(300, 60, replace=False):
        histories[u] = np.r_[histories[u], 201, 202, 203, 204]
    signal = DenseBlockSignal(min_lift=5.0, min_support=0.02, max_coherence=0.1, flag_above=2.0)
    assert signal.strong_pairs(histories, 204).nnz == 2 * 6  # the series' six pairs are strong
    assert (signal.score(_view(histories, np.zeros(205))) == 0).all()


def test_min_group_flags_two_target_fakes_and_leaves_a_lone_lockstep_pair():
    """100 fakes carrying 2 of 5 targets each hold one pair of a five-item lockstep group; 30 real users
    of both tastes who hold one more pair (206, 207) hold a lockstep pair that stands alone. Counting
    only groups of three items or more flags every fake at one pair and nobody else; with two-item
    groups counting, that pair's holders are flagged too."""
    rng = np.random.default_rng(4)
    histories = [rng.choice(np.arange(1, 101) if u < 600 else np.arange(101, 201), 40, replace=False) for u in range(1200)]
    lone = rng.choice(1200, 30, replace=False)
    for u in lone:
        histories[u] = np.r_[histories[u], 206, 207]
    for d in rng.choice(1200, 100):
        histories.append(rng.permutation(np.r_[np.setdiff1d(histories[d], [206, 207]), rng.choice(np.arange(201, 206), 2, replace=False)]))
    fake = np.arange(len(histories)) >= 1200
    view = _view(histories, np.zeros(208))
    signal = DenseBlockSignal(min_lift=5.0, min_support=0.005, max_coherence=0.1, flag_above=0.5)
    groups = signal.lockstep_groups(interaction_matrix(histories, 207), signal.strong_pairs(histories, 207))
    assert (groups[201:206] == groups[201]).all() and groups[201] >= 0
    assert groups[206] == groups[207] >= 0 and groups[206] != groups[201]
    scores = dataclasses.replace(signal, min_group=3).score(view)
    assert (scores[fake] > signal.flag_above).all() and (scores[~fake] == 0).all()
    pairs_too = signal.score(view)
    assert (pairs_too[lone] > signal.flag_above).all() and (pairs_too[fake] > signal.flag_above).all()
    with pytest.raises(ValueError, match="min_group"):
        DenseBlockSignal(min_group=1)
    with pytest.raises(ValueError, match="max_coherence"):
        DenseBlockSignal(min_group=3)  # without lockstep groups min_group would be ignored


def test_min_holders_sets_a_floor_under_the_support_fraction():
    """On a small log the support fraction is a handful of users: ``min_holders`` keeps a pair held
    by fewer users out, however high its lift."""
    rng = np.random.default_rng(3)
    histories = [rng.choice(np.arange(1, 41), 8, replace=False) for _ in range(200)]
    for h in histories[:6]:
        h[-2:] = [41, 42]  # 6 users, 3% of them: above a 1% support fraction, below 8 holders
    loose = DenseBlockSignal(min_lift=5.0, min_support=0.01).strong_pairs(histories, 42)
    floored = DenseBlockSignal(min_lift=5.0, min_support=0.01, min_holders=8).strong_pairs(histories, 42)
    assert loose[41, 42] > 0 and floored[41, 42] == 0
    with pytest.raises(ValueError, match="min_holders"):
        DenseBlockSignal(min_holders=1)
