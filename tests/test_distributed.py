"""train.py under DDP with 2 CPU processes (gloo), started by Lightning or by torchrun exactly as users start it."""
import json

import pytest
import yaml

from genrec.cli import main as train_main
from tests.helpers import REPO, last_metrics, run_train
from tests.test_cli import tiny_args

pytestmark = pytest.mark.slow

# The shipped GPU config, pointed at 2 CPU processes (gloo): exactly what the README tells users to run.
# |2-process - 1-process| measured on this test's setup (torch 2.13 CPU): hr@10 .020, ndcg@10 .013,
# mrr .009; the bounds are about 3x that, near the spread between two seeds of the 1-process run.
TOLERANCE = {"val/hr@10": 0.06, "val/ndcg@10": 0.04, "val/mrr": 0.04}

DDP = ["--config", str(REPO / "configs" / "trainer" / "ddp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]


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


@pytest.mark.parametrize("shards", ["interleaved", "contiguous"])
def test_two_process_test_metrics_equal_one_process_on_the_same_checkpoint(tmp_path, shards):
    # 121 users over 2 ranks in batches of 20: shards of 61 and 60 users, 4 and 3 batches. A padding
    # sampler would score one user twice.
    args = tiny_args(tmp_path, users=121) + ["--data.loader.eval_batch_size", "20", "--data.loader.shards", shards]
    fit = train_main(args)
    ckpt = str(tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt")
    eval_users = fit.datamodule.eval_users.tolist()
    assert len(eval_users) == 121

    single = train_main(as_test(args) + ["--ckpt_path", ckpt]).trainer.callback_metrics
    # Started by torchrun (the multi-node launcher); Lightning joins its processes instead of starting its own.
    run_train(as_test(args) + DDP + ["--ckpt_path", ckpt, "--trainer.callbacks+=tests.helpers.RecordEvalUsers",
                                     "--trainer.callbacks.folder", str(tmp_path / "users")], cwd=tmp_path,
              launcher=("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"))

    users = [json.loads((tmp_path / "users" / f"test_users_rank{r}.json").read_text()) for r in (0, 1)]
    assert all(users) and sorted(users[0] + users[1]) == sorted(eval_users)  # each user once, none twice
    if shards == "contiguous":
        assert max(users[0]) < min(users[1])  # each rank a block of users
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


def test_two_process_training_shards_data_and_matches_one_process(tmp_path, monkeypatch):
    # Same seed and global batch (2 x 16 vs 1 x 32): the step batches hold the same users; negatives
    # and dropout differ (drawn per rank), so metrics agree within a tolerance, not exactly.
    args = tiny_args(tmp_path, users=200, epochs=3)
    args[args.index("--data.loader.batch_size") + 1] = "16"
    (tmp_path / "ddp").mkdir()
    ddp_args = list(args)
    ddp_args[ddp_args.index("--data") + 1] = "tests.helpers.CountingDataModule"
    run_train(ddp_args + DDP + ["--data.count_dir", str(tmp_path / "builds"),
                                "--trainer.callbacks+=tests.helpers.RecordTrainUsers",
                                "--trainer.callbacks.folder", str(tmp_path / "users")],
              cwd=tmp_path / "ddp", env={"GENREC_CACHE": str(tmp_path / "ddp_cache")})
    ddp_run = tmp_path / "ddp" / "runs" / "genrec" / "version_0"
    multi = last_metrics(ddp_run, "val/")

    assert len(list((tmp_path / "builds").iterdir())) == 1  # prepared once on the node, loaded by the other rank
    shards = [json.loads((tmp_path / "users" / f"train_users_rank{r}.json").read_text()) for r in (0, 1)]
    for epoch in ("0", "1", "2"):
        a, b = shards[0][epoch], shards[1][epoch]
        assert len(a) == len(b) == 100 and not set(a) & set(b)  # disjoint, equal, nothing padded
    assert shards[0]["0"] != shards[0]["1"]  # reshuffled every epoch

    # Validation during DDP fit is exact too: one process validating the final checkpoint agrees.
    monkeypatch.chdir(tmp_path / "ddp")
    check = as_test(args)
    check[0] = "validate"
    validated = train_main(check + ["--ckpt_path", str(ddp_run / "checkpoints" / "last.ckpt")]).trainer.callback_metrics
    for key, value in multi.items():
        assert value == pytest.approx(float(validated[key]), abs=1e-6), key

    (tmp_path / "one").mkdir()
    monkeypatch.chdir(tmp_path / "one")
    single_args = list(args)
    single_args[single_args.index("--data.loader.batch_size") + 1] = "32"
    single = train_main(single_args).trainer.callback_metrics
    assert multi["val/hr@10"] > 1.5 * 10 / 80  # it learned: well above chance among <= 80 candidates
    for key in ("val/hr@10", "val/ndcg@10", "val/mrr"):
        assert multi[key] == pytest.approx(float(single[key]), abs=TOLERANCE[key]), key


@pytest.mark.parametrize("name,nodes,devices", [("ddp.yaml", 1, -1), ("ddp-2x8.yaml", 2, 8)])
def test_shipped_ddp_configs_resolve(name, nodes, devices, capsys):
    with pytest.raises(SystemExit) as done:
        train_main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"),
                    "--config", str(REPO / "configs" / "trainer" / name), "--print_config"])
    assert done.value.code == 0
    trainer = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (trainer["num_nodes"], trainer["devices"], trainer["accelerator"]) == (nodes, devices, "gpu")
    assert trainer["strategy"]["class_path"] == "lightning.pytorch.strategies.DDPStrategy"
    assert trainer["strategy"]["init_args"]["find_unused_parameters"] is False
