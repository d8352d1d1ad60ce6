import numpy as np

from genrec.data.batching import BucketedTrainSampler, bucketed_order


def lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(1, 200, n)


def batches(sampler, size):
    order = list(sampler)
    return [order[i : i + size] for i in range(0, len(order), size)]


def test_every_window_once_per_epoch_and_order_changes_with_epoch():
    ls = lengths()
    s = BucketedTrainSampler(range(1000), ls, batch_size=32, seed=0)
    first = list(s)
    assert sorted(first) == list(range(1000))
    s.set_epoch(1)
    assert list(s) != first
    s.set_epoch(0)
    assert list(s) == first


def test_batches_hold_similar_lengths():
    ls = lengths()
    s = BucketedTrainSampler(range(1000), ls, batch_size=32, seed=0)
    spread = np.mean([ls[b].max() - ls[b].min() for b in batches(s, 32)])
    rng = np.random.default_rng(0)
    random_spread = np.mean([ls[b].max() - ls[b].min() for b in np.array_split(rng.permutation(1000), 32)])
    assert spread < random_spread / 10


def test_ranks_get_disjoint_shards_from_the_same_buckets():
    ls = lengths(1001)
    ranks = [BucketedTrainSampler(range(1001), ls, batch_size=16, num_replicas=3, rank=r, seed=7) for r in range(3)]
    shards = [list(r) for r in ranks]
    assert len({len(s) for s in shards}) == 1
    assert not (set(shards[0]) & set(shards[1]) or set(shards[1]) & set(shards[2]))
    assert len(set().union(*map(set, shards))) == 1001 - 1001 % 3
    # the three rank batches of one step come from one length bucket
    first_step = [i for r in ranks for i in batches(r, 16)[0]]
    assert len(first_step) == 48
    assert ls[first_step].max() - ls[first_step].min() < 30


def test_bucketed_order_is_a_permutation_for_any_size():
    rng = np.random.default_rng(0)
    for n, block in [(0, 4), (5, 8), (17, 4), (300, 7)]:
        order = bucketed_order(lengths(n) if n else np.zeros(0, int), block, rng, pool_blocks=3)
        assert sorted(order.tolist()) == list(range(n))
