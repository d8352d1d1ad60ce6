"""The README's first command, exactly as written, and the claim made for it."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_quickstart_beats_popularity_threefold(tmp_path):
    env = {"WANDB_MODE": "disabled", "PATH": "/usr/bin:/bin", "GENREC_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    train = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs/quickstart.yaml"),
             "--trainer.enable_progress_bar", "false"]
    subprocess.run(train, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=2400)
    ckpt = tmp_path / "runs/genrec/version_0/checkpoints/last.ckpt"
    subprocess.run([sys.executable, str(REPO / "evaluate.py"), "model", "--ckpt", str(ckpt)], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=300)
    report = json.loads((tmp_path / "runs/genrec/version_0/test_metrics.json").read_text())
    model, pop = report["metrics"]["model"], report["metrics"]["popularity"]
    assert model["hr@10"] >= 3 * pop["hr@10"], report
