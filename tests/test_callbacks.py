"""Unit checks of genrec.callbacks and of how the CLI adds them to every run."""
import pytest
from jsonargparse import Namespace

from genrec.callbacks import NonFiniteLossGuard, RankStepSeed
from genrec.cli import REQUIRED_CALLBACKS, with_required_callbacks


def test_batch_seeds_differ_by_rank_and_batch_and_repeat_by_position():
    seeder = RankStepSeed(seed=0)
    seeds = {(r, e, b): seeder.batch_seed(r, e, b) for r in range(4) for e in range(3) for b in range(50)}
    assert len(set(seeds.values())) == len(seeds)  # every rank, epoch and batch draws its own stream
    assert RankStepSeed(seed=0).batch_seed(1, 2, 3) == seeds[(1, 2, 3)]
    assert RankStepSeed(seed=1).batch_seed(1, 2, 3) != seeds[(1, 2, 3)]
    assert all(0 <= s < 2**63 for s in seeds.values())  # valid for torch.manual_seed


def test_seed_is_kept_in_checkpoints():
    restored = RankStepSeed(seed=99)
    restored.load_state_dict(RankStepSeed(seed=7).state_dict())
    assert restored.seed == 7


def test_guard_validates_its_options():
    with pytest.raises(ValueError, match="action must be 'stop' or 'skip', got 'ignore'"):
        NonFiniteLossGuard(action="ignore")
    with pytest.raises(ValueError, match="max_skips must be >= 0"):
        NonFiniteLossGuard(max_skips=-1)


def test_required_callbacks_are_added_once_and_the_last_configured_wins():
    user = Namespace(class_path="genrec.callbacks.NonFiniteLossGuard", init_args=Namespace(action="skip"))
    default = Namespace(class_path="genrec.callbacks.NonFiniteLossGuard", init_args=Namespace())
    out = with_required_callbacks([default, Namespace(class_path="x.Other"), user])
    paths = [c.class_path for c in out]
    assert sorted(paths) == sorted(["x.Other", *REQUIRED_CALLBACKS])
    assert next(c for c in out if c.class_path.endswith("NonFiniteLossGuard")).init_args.action == "skip"
    assert [c.class_path for c in with_required_callbacks(None)] == REQUIRED_CALLBACKS
