"""train.py under DDP with 2 CPU processes (gloo), launched by Lightning exactly as users launch it."""
import json

import pytest

from genrec.cli import main as train_main
from tests.helpers import last_metrics, run_train
from tests.test_cli import tiny_args

pytestmark = pytest.mark.slow

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def as_test(args: list[str]) -> list[str]:
    args = list(args)
    args[0] = "test"
    i = args.index("--trainer.max_epochs")
    del args[i:i + 2]
    return args


def newest_run(tmp_path):
    return max((tmp_path / "runs" / "genrec").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def test_two_process_test_metrics_equal_one_process_on_the_same_checkpoint(tmp_path):
    # 121 users over 2 ranks in batches of 20: shards of 61 and 60 users, 4 and 3 batches. A padding
    # sampler would score one user twice.
    args = tiny_args(tmp_path, users=121) + ["--data.eval_batch_size", "20"]
    fit = train_main(args)
    ckpt = str(tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt")
    eval_users = fit.datamodule.eval_users.tolist()
    assert len(eval_users) == 121

    single = train_main(as_test(args) + ["--ckpt_path", ckpt]).trainer.callback_metrics
    run_train(as_test(args) + DDP + ["--ckpt_path", ckpt, "--trainer.callbacks+=tests.helpers.RecordEvalUsers",
                                     "--trainer.callbacks.folder", str(tmp_path / "users")], cwd=tmp_path)

    shards = [json.loads((tmp_path / "users" / f"test_users_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(shards) and sorted(shards[0] + shards[1]) == sorted(eval_users)  # each user once, none twice
    multi = last_metrics(newest_run(tmp_path), "test/")
    assert set(multi) == {k for k in single if k.startswith("test/")}
    for key, value in multi.items():
        assert value == pytest.approx(float(single[key]), abs=1e-6), key


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    # Only rank 1 sees the NaN; the verdict is all-reduced, so rank 0 stops too instead of waiting forever.
    args = tiny_args(tmp_path, epochs=2) + DDP
    i = args.index("--model")
    args[i + 1] = "tests.helpers.NaNLossModule"
    with pytest.raises(AssertionError) as failed:
        run_train(args + ["--model.nan_steps", "[1]", "--model.nan_rank", "1"], cwd=tmp_path, timeout=240)
    output = str(failed.value)
    assert "non-finite loss at global step 1 (rank 1): loss nan at epoch 0, batch 1" in output
    assert "non-finite loss at global step 1 (rank 0): non-finite gradient after epoch 0, batch 1" in output
