"""Run bookkeeping: run folders no two runs share, and resumption only of the same run."""
import os
import subprocess
import sys

import pytest

from genrec.cli import main as train_main
from genrec.loggers import claim_run_folder
from genrec.modules.checkpoints import CheckpointMismatchError
from tests.helpers import REPO
from tests.test_cli import tiny_args


def test_claimed_run_folders_are_never_handed_out_twice(tmp_path):
    (tmp_path / "exp" / "version_3").mkdir(parents=True)
    (tmp_path / "exp" / "version_x").mkdir()  # not a run number
    assert [claim_run_folder(tmp_path / "exp") for _ in range(3)] == [4, 5, 6]
    assert claim_run_folder(tmp_path / "new") == 0


@pytest.mark.slow
def test_two_trainings_started_together_get_their_own_run_folders(tmp_path):
    # Both processes pick their run folder, then wait for each other before either creates it.
    # Before run folders were claimed atomically both wrote into version_0: one crashed in the CSV
    # logger, the other exited 0 with the first run's validation numbers in its metrics.csv.
    procs = []
    for seed in (1, 2):
        args = tiny_args(tmp_path) + ["--seed_everything", str(seed), "--model.folder", str(tmp_path / "barrier")]
        args[args.index("--model") + 1] = "tests.helpers.RendezvousModule"
        procs.append(subprocess.Popen([sys.executable, str(REPO / "train.py"), *args], cwd=tmp_path, text=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    errors = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(e[-3000:] for e in errors)
    runs = sorted((tmp_path / "runs" / "genrec").glob("version_*"))
    assert [r.name for r in runs] == ["version_0", "version_1"]
    seeds = set()
    for run in runs:
        assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
        assert (run / "metrics.csv").read_text().count("\n") >= 2
        seeds.add(next(line for line in (run / "config.yaml").read_text().splitlines() if line.startswith("seed_everything")))
    assert seeds == {"seed_everything: 1", "seed_everything: 2"}  # each folder holds its own run


def steps_per_epoch(users=120, batch_size=32):
    return -(-users // batch_size)


def test_ckpt_path_last_continues_only_a_run_with_the_same_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = train_main(tiny_args(tmp_path))  # lr 0.001
    assert first.trainer.global_step == steps_per_epoch()

    # A new experiment with another lr under the same name: before, it continued the first run
    # (already at max_epochs, so it trained nothing) with lr 0.001, exit 0 and no warning.
    with pytest.warns(UserWarning, match=r"no checkpoint of a run with these settings.*model.optim.lr: 0.001 in the checkpoint, 0.01 here"):
        other = train_main(tiny_args(tmp_path) + ["--model.optim.lr", "0.01", "--ckpt_path", "last"])
    assert other.model.hparams.optim["lr"] == 0.01 and other.trainer.global_step == steps_per_epoch()
    assert other.trainer.log_dir.endswith("version_1")

    # The first run's job, requeued with one more epoch: it continues its own run, not the newer
    # checkpoint of the lr 0.01 run.
    with pytest.warns(UserWarning, match="skipped the checkpoints of other runs"):
        resumed = train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", "last"])
    assert resumed.model.hparams.optim["lr"] == 0.001 and resumed.trainer.global_step == 2 * steps_per_epoch()
    assert "version_0/checkpoints/last" in resumed.trainer.ckpt_path


def test_an_explicit_checkpoint_of_other_settings_is_refused_naming_the_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train_main(tiny_args(tmp_path))
    ckpt = tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt"
    args = tiny_args(tmp_path, epochs=2) + ["--model.optim.lr", "0.01", "--data.max_seq_len", "10", "--ckpt_path", str(ckpt)]
    with pytest.raises(CheckpointMismatchError, match=r"data.max_seq_len: 12 in the checkpoint, 10 here; "
                                                      r"model.optim.lr: 0.001 in the checkpoint, 0.01 here"):
        train_main(args)
    # the run folder itself names its newest last checkpoint; trainer settings may change
    resumed = train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", str(ckpt.parent.parent)])
    assert resumed.trainer.global_step == 2 * steps_per_epoch()


def test_resuming_with_another_seed_is_refused_naming_it(tmp_path, monkeypatch):
    # Before, the resumed run went on with the checkpoint's seed (RankStepSeed's state, the data order)
    # and dropped this command's, without a word.
    monkeypatch.chdir(tmp_path)
    train_main(tiny_args(tmp_path))
    ckpt = tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt"
    args = tiny_args(tmp_path, epochs=2)
    args[args.index("--seed_everything") + 1] = "7"
    with pytest.raises(CheckpointMismatchError, match=r"seed_everything: 0 in the checkpoint, 7 here"):
        train_main(args + ["--ckpt_path", str(ckpt)])
    with pytest.warns(UserWarning, match=r"no checkpoint of a run with these settings.*seed_everything: 0 in the checkpoint, 7 here"):
        fresh = train_main(args + ["--ckpt_path", "last"])
    assert fresh.trainer.global_step == 2 * steps_per_epoch() and fresh.trainer.log_dir.endswith("version_1")
