"""Sharding and resumption properties of genrec.data.samplers, checked rank by rank in one process."""
import pytest
import torch

from genrec.data.samplers import EvalShardSampler, ResumableDataLoader, ShardedTrainSampler


class Indices(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


@pytest.mark.parametrize("n", [7, 8, 61, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_eval_shards_cover_every_user_exactly_once(n, world):
    shards = [list(EvalShardSampler(Indices(n), num_replicas=world, rank=r)) for r in range(world)]
    flat = [i for s in shards for i in s]
    assert sorted(flat) == list(range(n))  # no padding duplicates, nobody left out
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(EvalShardSampler(Indices(n), num_replicas=world, rank=r)) for r in range(world)] == list(map(len, shards))


def test_eval_shard_refuses_idle_ranks():
    with pytest.raises(ValueError, match="3 evaluation users cannot be shared by 4 processes"):
        EvalShardSampler(Indices(3), num_replicas=4, rank=0)


@pytest.mark.parametrize("n,world", [(50, 2), (51, 2), (53, 4)])
def test_train_shards_are_disjoint_equal_and_reshuffled(n, world):
    def epoch(e):
        shards = []
        for r in range(world):
            s = ShardedTrainSampler(Indices(n), num_replicas=world, rank=r, seed=3)
            s.set_epoch(e)
            shards.append(list(s))
        return shards

    shards = epoch(0)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // world
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat) == n - n % world
    assert epoch(0) == shards  # same seed and epoch: same order
    assert epoch(1) != shards


def test_rank_batches_of_one_step_form_the_single_process_batch():
    n, world, b = 64, 2, 4
    single = list(ShardedTrainSampler(Indices(n), num_replicas=1, rank=0, seed=9))
    ranks = [list(ShardedTrainSampler(Indices(n), num_replicas=world, rank=r, seed=9)) for r in range(world)]
    for step in range(n // (world * b)):
        together = sorted(i for r in ranks for i in r[step * b:(step + 1) * b])
        assert together == sorted(single[step * world * b:(step + 1) * world * b])


def loader(n=37, world=1, rank=0, batch=4, workers=0, seed=5):
    ds = Indices(n)
    return ResumableDataLoader(ds, ShardedTrainSampler(ds, num_replicas=world, rank=rank, seed=seed),
                               batch_size=batch, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [1, 2])
def test_loader_resumes_mid_epoch_where_it_stopped(workers, world):
    for rank in range(world):
        full = loader(world=world, rank=rank)
        full.sampler.set_epoch(2)
        expected = [b.tolist() for b in full]
        first = loader(world=world, rank=rank, workers=workers)
        first.sampler.set_epoch(2)
        it = iter(first)
        seen = [next(it).tolist() for _ in range(3)]
        state = first.state_dict()
        assert state["epoch"] == 2 and state["consumed"] == 3 * 4 * world

        resumed = loader(world=world, rank=rank, workers=workers, seed=123)  # the checkpoint's seed wins
        resumed.load_state_dict(state)
        rest = [b.tolist() for b in resumed]
        assert seen + rest == expected
        assert len(resumed) == len(expected)
        # The next epoch starts from its beginning again.
        resumed.sampler.set_epoch(3)
        assert len([b for b in resumed]) == len(expected)


def test_epoch_boundary_state_starts_the_next_epoch_afresh():
    first = loader()
    list(first)
    state = first.state_dict()
    assert state["consumed"] == 37  # one process drops nothing
    again = loader(seed=5)
    again.load_state_dict(state)
    again.sampler.set_epoch(1)
    assert sum(len(b) for b in again) == 37


def test_mid_epoch_state_refuses_another_world_size_or_batch():
    first = loader(world=2)
    it = iter(first)
    next(it)
    with pytest.raises(ValueError, match="saved mid-epoch by 2 process.*same number of processes"):
        loader(world=1).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="data.loader.batch_size=4"):
        loader(world=2, batch=8).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="had 37 sequences, this run has 40"):
        loader(n=40, world=2).load_state_dict(first.state_dict())
