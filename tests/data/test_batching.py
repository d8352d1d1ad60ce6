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


def test_domain_steps_are_one_domain_each_and_shares_follow_the_balance():
    from genrec.data.batching import DomainBlockSampler, domain_blocks

    domains = np.repeat([0, 1, 2], [800, 150, 50])
    for balance, expected in ((0.0, [25, 5, 1]), (1.0, [11, 10, 10])):
        assert domain_blocks(np.array([800, 150, 50]), 31, balance).tolist() == expected
        s = DomainBlockSampler(range(1000), domains, batch_size=32, balance=balance, lengths=lengths(), seed=0)
        steps = batches(s, 32)
        assert len(steps) == 31 and all(len(b) == 32 for b in steps)
        assert all(len(set(domains[b])) == 1 for b in steps)
        per_domain = np.bincount([domains[b[0]] for b in steps], minlength=3)
        assert per_domain.tolist() == expected
    # balanced: the 50-window domain is cycled through whole permutations (each window 6 or 7 times)
    picks = np.array(list(s))
    small = np.bincount(picks[domains[picks] == 2], minlength=1000)[950:]
    assert small.min() >= 6 and small.max() <= 7
    s.set_epoch(1)
    assert np.array(list(s)).tolist() != picks.tolist()


def test_domain_steps_shard_across_ranks_and_resume_mid_epoch():
    from genrec.data.batching import DomainBlockSampler
    from genrec.data.samplers import ResumableDataLoader

    domains = np.repeat([0, 1], [300, 60])
    ranks = [DomainBlockSampler(range(360), domains, batch_size=8, balance=0.5, num_replicas=2, rank=r, seed=3)
             for r in range(2)]
    a, b = (batches(r, 8) for r in ranks)
    assert len(a) == len(b) and all(domains[x[0]] == domains[y[0]] for x, y in zip(a, b))  # one step, one domain

    def load():
        return ResumableDataLoader(list(range(360)), DomainBlockSampler(range(360), domains, 8, 0.5, seed=3), batch_size=8)
    full = [x.tolist() for x in load()]
    first = load()
    it = iter(first)
    seen = [next(it).tolist() for _ in range(5)]
    resumed = load()
    resumed.load_state_dict(first.state_dict())
    assert seen + [x.tolist() for x in resumed] == full
    done = load()
    list(done)
    after = load()
    after.load_state_dict(done.state_dict())  # an epoch boundary: the next epoch is whole
    after.sampler.set_epoch(1)
    assert len(list(after)) == len(full)
