"""data.loader.shards=contiguous: each DDP rank owns one block of the data, checked rank by rank in one process."""
import numpy as np
import pytest
import yaml

from genrec.cli import main as train_main
from genrec.data import LoaderConfig, SequenceDataModule
from genrec.data.batching import BucketedTrainSampler, DomainBlockSampler
from genrec.data.samplers import EvalShardSampler, ResumableDataLoader, ShardedTrainSampler, block
from tests.conftest import REPO
from tests.data.test_samplers import Indices


def lengths(n, seed=0):
    return np.random.default_rng(seed).integers(2, 200, n)


def sampler(kind, n, world, rank, epoch=0, shards="contiguous", seed=3, batch=4):
    if kind == "plain":
        s = ShardedTrainSampler(Indices(n), num_replicas=world, rank=rank, seed=seed, shards=shards)
    else:
        s = BucketedTrainSampler(Indices(n), lengths(n), batch, num_replicas=world, rank=rank, seed=seed, shards=shards)
    s.set_epoch(epoch)
    return s


@pytest.mark.parametrize("kind", ["plain", "bucketed"])
@pytest.mark.parametrize("n,world", [(50, 2), (51, 2), (53, 4), (1001, 3)])
def test_contiguous_shards_are_disjoint_blocks_covering_all_but_fewer_than_world(kind, n, world):
    def epoch(e):
        return [list(sampler(kind, n, world, r, e)) for r in range(world)]

    shards = epoch(0)
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == n // world  # same steps on every rank
    flat = [i for s in shards for i in s]
    assert len(set(flat)) == len(flat) == n - n % world
    bounds = [block(n, world, r) for r in range(world)]
    assert [b.start for b in bounds[1:]] == [b.stop for b in bounds[:-1]] and bounds[-1].stop == n
    for r, s in enumerate(shards):
        assert set(s) <= set(bounds[r])
        assert len(bounds[r]) - len(s) <= 1
    assert epoch(0) == shards  # same seed and epoch: same order
    later = epoch(1)
    assert later != shards and all(set(a) <= set(b) for a, b in zip(later, bounds))


def test_a_longer_block_leaves_out_a_different_sample_each_epoch():
    left_out = set()
    for e in range(12):
        s = set(sampler("plain", 51, 2, 1, e))  # rank 1 owns 26 and takes 25
        left_out |= set(block(51, 2, 1)) - s
    assert len(left_out) > 1


@pytest.mark.parametrize("kind", ["plain", "bucketed"])
def test_ranks_of_equal_blocks_do_not_share_one_shuffle_pattern(kind):
    a, b = (np.array(list(sampler(kind, 200, 2, r))) for r in range(2))
    assert not np.array_equal(a - 0, b - 100)


@pytest.mark.parametrize("kind", ["plain", "bucketed"])
def test_one_process_contiguous_is_interleaved(kind):
    for e in range(3):
        assert list(sampler(kind, 97, 1, 0, e)) == list(sampler(kind, 97, 1, 0, e, shards="interleaved"))


def test_bucketed_contiguous_batches_hold_similar_lengths_inside_each_block():
    n, world, batch = 2000, 2, 32
    ls = lengths(n)
    for r in range(world):
        order = np.array(list(sampler("bucketed", n, world, r, batch=batch)))
        spread = [np.ptp(ls[order[i:i + batch]]) for i in range(0, len(order) - batch + 1, batch)]
        random = [np.ptp(ls[np.random.default_rng(i).choice(n, batch)]) for i in range(len(spread))]
        assert np.median(spread) < np.median(random) / 4


@pytest.mark.parametrize("n", [7, 8, 61])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_contiguous_eval_shards_score_every_user_once_each_rank_a_block_of_keys(n, world):
    keys = np.random.default_rng(n).permutation(n) * 10  # e.g. user indices of a set sorted by history length
    shards = [list(EvalShardSampler(Indices(n), world, r, shards="contiguous", keys=keys)) for r in range(world)]
    assert sorted(i for s in shards for i in s) == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert all(s == sorted(s) for s in shards)  # the set's own order inside the shard
    ranked = [sorted(keys[s]) for s in shards]
    assert all(a[-1] < b[0] for a, b in zip(ranked, ranked[1:]))
    plain = [list(EvalShardSampler(Indices(n), world, r, shards="contiguous")) for r in range(world)]
    assert plain == [list(block(n, world, r)) for r in range(world)]


def test_an_unknown_shards_value_is_refused():
    with pytest.raises(ValueError, match="data.loader.shards must be 'interleaved' or 'contiguous'"):
        LoaderConfig(shards="blocks")
    with pytest.raises(ValueError, match="data.loader.shards"):
        ShardedTrainSampler(Indices(10), num_replicas=1, rank=0, shards="blocks")


def test_one_domain_steps_refuse_contiguous_shards():
    with pytest.raises(ValueError, match="data.loader.shards: 'contiguous' is not supported with one-domain steps"):
        DomainBlockSampler(Indices(40), np.arange(40) % 2, 4, num_replicas=2, rank=0, seed=0, shards="contiguous")


def loader(kind, world, rank, shards="contiguous", n=83, batch=4, workers=0):
    return ResumableDataLoader(Indices(n), sampler(kind, n, world, rank, shards=shards, batch=batch),
                               batch_size=batch, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", ["plain", "bucketed"])
def test_contiguous_loader_resumes_mid_epoch_where_it_stopped(kind, workers):
    world = 2
    for rank in range(world):
        full = loader(kind, world, rank)
        full.sampler.set_epoch(2)
        expected = [b.tolist() for b in full]
        first = loader(kind, world, rank, workers=workers)
        first.sampler.set_epoch(2)
        it = iter(first)
        seen = [next(it).tolist() for _ in range(3)]
        state = first.state_dict()
        assert state["consumed"] == 3 * 4 * world and state["shards"] == "contiguous"
        resumed = loader(kind, world, rank, workers=workers)
        resumed.load_state_dict(state)
        assert seen + [b.tolist() for b in resumed] == expected


def test_mid_epoch_state_refuses_the_other_shards_mode():
    first = loader("plain", 2, 0)
    it = iter(first)
    next(it)
    with pytest.raises(ValueError, match="saved mid-epoch with data.loader.shards=contiguous; this run has interleaved"):
        loader("plain", 2, 0, shards="interleaved").load_state_dict(first.state_dict())
    old = {k: v for k, v in loader("plain", 2, 0, shards="interleaved").state_dict().items() if k != "shards"}
    old["consumed"] = 8  # a checkpoint written before the option existed was interleaved
    with pytest.raises(ValueError, match="shards=interleaved; this run has contiguous"):
        loader("plain", 2, 0).load_state_dict(old)


def test_a_run_with_the_other_shards_setting_is_another_run():
    from genrec.resume import run_differences

    saved = {"datamodule_hyper_parameters": {"loader": {"batch_size": 8, "shards": "interleaved"}}}
    config = {"data": {"init_args": {"loader": {"batch_size": 8, "shards": "contiguous"}}}}
    assert run_differences(config, saved) == ["data.loader.shards: 'interleaved' in the checkpoint, 'contiguous' here"]


@pytest.mark.parametrize("windows", ["last", "all"])
def test_the_datamodule_gives_each_rank_a_block_of_users(windows, monkeypatch):
    import genrec.data.samplers as samplers

    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 90, "num_items": 80, "seed": 1},
                            max_seq_len=8, loader=LoaderConfig(batch_size=4, shards="contiguous", train_windows=windows))
    dm.prepare_data()
    dm.setup("fit")
    trained, evaluated = [], []
    for rank in range(3):
        monkeypatch.setattr(samplers, "world", lambda rank=rank: (3, rank))
        trained.append(sorted(set(dm.train_set.users[list(dm.train_dataloader().sampler)].tolist())))
        evaluated.append(sorted(dm.val_set.users[list(dm.val_dataloader().sampler)].tolist()))
    # windows in users' file order: blocks of users (with all windows, a user's may straddle two blocks)
    assert all(a[-1] < b[0] if windows == "last" else a[-1] <= b[0] for a, b in zip(trained, trained[1:]))
    assert all(a[-1] < b[0] for a, b in zip(evaluated, evaluated[1:]))
    assert sorted(u for e in evaluated for u in e) == sorted(dm.val_set.users.tolist())


def test_shards_parse_from_yaml_and_the_command_line(tmp_path, capsys):
    base = ["fit", "--config", str(REPO / "configs" / "quickstart.yaml")]
    conf = tmp_path / "shards.yaml"
    conf.write_text(yaml.safe_dump({"data": {"init_args": {"loader": {"shards": "contiguous"}}}}))
    for extra in (["--config", str(conf)], ["--data.loader.shards", "contiguous"]):
        with pytest.raises(SystemExit) as done:
            train_main(base + extra + ["--print_config"])
        assert done.value.code == 0
        assert yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["loader"]["shards"] == "contiguous"
    with pytest.raises(SystemExit) as done:
        train_main(base + ["--data.loader.shards", "blocks", "--print_config"])
    assert done.value.code != 0
    assert "blocks" in capsys.readouterr().err
