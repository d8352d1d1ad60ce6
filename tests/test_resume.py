"""Stop a real training process mid-epoch (SIGKILL; SIGTERM), resume with --ckpt_path last, end where an uninterrupted run ends."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genrec.cli import main as train_main
from tests.helpers import REPO
from tests.test_cli import tiny_args

pytestmark = pytest.mark.slow

# Checkpoints every 3 steps (last.ckpt only) beside the usual best-by-val/ndcg@10 one.
CALLBACKS = """\
trainer:
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {monitor: val/ndcg@10, mode: max, save_last: true, filename: best}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_top_k: 0, save_last: true, every_n_train_steps: 3}
"""


def args_for(tmp_path):
    # 200 users in batches of 16: 13 steps per epoch; 2 epochs with dropout, so RNG state matters.
    (tmp_path / "callbacks.yaml").write_text(CALLBACKS)
    args = tiny_args(tmp_path, users=200, epochs=2)
    args[args.index("--data.loader.batch_size") + 1] = "16"
    return args[:1] + ["--config", str(tmp_path / "callbacks.yaml")] + args[1:] + [
        "--trainer.deterministic", "true", "--model.net.dropout", "0.3"]


def paused_run(args: list[str], callback: str, work: Path, marker: Path, before: str) -> subprocess.Popen:
    """``train.py ARGS`` in a real process in ``work``, held before step 17 by ``tests.helpers.CALLBACK``;
    returned once it is held there (``marker`` written). ``before``: what the test does next, for its messages."""
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args, f"--trainer.callbacks+=tests.helpers.{callback}",
         "--trainer.callbacks.step", "17", "--trainer.callbacks.marker", str(marker)],
        cwd=work, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"training exited before {before} ({proc.returncode}): {proc.stderr.read()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail("training did not reach step 17 in 240 s")
            time.sleep(0.2)
    except BaseException:
        proc.kill()
        proc.wait()
        proc.stderr.close()
        raise
    return proc


def stop(proc: subprocess.Popen, sig: int, timeout: float = 180) -> tuple[int, str]:
    """Send ``sig`` to a ``paused_run`` process and wait for it; (exit status, its stderr)."""
    try:
        os.kill(proc.pid, sig)
        stderr = proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    args = args_for(tmp_path)
    (tmp_path / "whole").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = train_main(args)
    assert whole.trainer.global_step == 26

    # The same run in a real process, frozen before step 17 (epoch 1, batch 4) and killed there:
    # the newest checkpoint is from step 15 (epoch 1, batch 2), saved mid-epoch.
    work = tmp_path / "killed"
    work.mkdir()
    marker = tmp_path / "paused"
    proc = paused_run(args, "PauseAt", work, marker, "the kill")
    assert stop(proc, signal.SIGKILL)[0] == -signal.SIGKILL
    assert marker.read_text() == "1 4"
    saved = torch.load(work / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert (saved["global_step"], saved["epoch"]) == (15, 1)

    monkeypatch.chdir(work)
    resumed = train_main(args + ["--ckpt_path", "last"])
    assert resumed.trainer.global_step == 26
    assert (work / "runs" / "genrec" / "version_1").is_dir()  # the continuation logs to a new run folder
    for key, value in whole.trainer.callback_metrics.items():
        if key.startswith("val/"):
            assert float(resumed.trainer.callback_metrics[key]) == float(value), key
    theirs = resumed.model.state_dict()
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name


def test_sigterm_exits_143_after_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    # Before, a SIGTERM (preemption, kill, Kubernetes, timeout) ended training with status 0 and no
    # checkpoint of the state it stopped in, so schedulers took the run for finished.
    args = args_for(tmp_path)
    (tmp_path / "whole").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = train_main(args)

    work = tmp_path / "signalled"
    work.mkdir()
    marker = tmp_path / "waiting"
    status, stderr = stop(paused_run(args, "PauseUntilSignalled", work, marker, "the signal"), signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, stderr[-4000:]
    folder = work / "runs" / "genrec" / "version_0" / "checkpoints"
    saved = torch.load(folder / "last-sigterm.ckpt", weights_only=False)
    assert (saved["global_step"], saved["epoch"]) == (18, 1)  # the batch in flight was finished
    assert not (folder / "final.ckpt").exists()

    monkeypatch.chdir(work)
    resumed = train_main(args + ["--ckpt_path", "last"])
    assert resumed.trainer.ckpt_path.endswith("last-sigterm.ckpt")
    assert resumed.trainer.global_step == 26
    theirs = resumed.model.state_dict()
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(tensor, theirs[name]), name
