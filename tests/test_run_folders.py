"""Run bookkeeping with real train.py processes: run folders no two runs share."""
import os
import subprocess
import sys

import pytest

from genrec.loggers import claim_run_folder
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
