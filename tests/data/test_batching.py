import numpy as np

from genrec.data.batching import LengthBucketBatchSampler


def lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(1, 200, n)


def test_every_window_once_per_epoch_and_order_changes_with_epoch():
    s = LengthBucketBatchSampler(lengths(), batch_size=32, pool_batches=8)
    first = list(s)
    assert sorted(i for b in first for i in b) == list(range(1000))
    assert len(first) == len(s)
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first


def test_batches_hold_similar_lengths():
    ls = lengths()
    bucketed = LengthBucketBatchSampler(ls, batch_size=32, pool_batches=32)
    spread = np.mean([ls[b].max() - ls[b].min() for b in bucketed])
    rng = np.random.default_rng(0)
    random_spread = np.mean([ls[b].max() - ls[b].min() for b in np.array_split(rng.permutation(1000), 32)])
    assert spread < random_spread / 10


def test_ranks_split_the_batches_evenly_and_cover_everything():
    ls = lengths(1001)
    ranks = [list(LengthBucketBatchSampler(ls, 16, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1
    seen = [i for r in ranks for b in r for i in b]
    assert set(seen) == set(range(1001))
    # no batch is shared by two ranks except the wrap-around padding at the end
    assert len(seen) - 1001 < 16 * 3
