"""Faults on the train.py path: non-finite losses and bad checkpoints."""
import json
import zipfile
from pathlib import Path

import pytest
import torch

from genrec.callbacks import NonFiniteLossGuard, NonFiniteLossError
from genrec.cli import main as train_main
from genrec.modules.checkpoints import CheckpointMismatchError
from tests.test_cli import tiny_args

import evaluate

NAN_MODULE = ["--model", "tests.helpers.NaNLossModule"]
SKIP = ["--trainer.callbacks+=genrec.callbacks.NonFiniteLossGuard", "--trainer.callbacks.action", "skip"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def with_module(args: list[str], module: list[str]) -> list[str]:
    i = args.index("--model")
    return args[:i] + module + args[i + 2:]


def last_ckpt(tmp_path, version=0):
    return tmp_path / "runs" / "genrec" / f"version_{version}" / "checkpoints" / "last.ckpt"


def test_nan_loss_stops_naming_step_and_batch(tmp_path):
    # 120 users in batches of 32: four batches per epoch, so step 5 is epoch 1, batch 1.
    args = with_module(tiny_args(tmp_path, epochs=2), NAN_MODULE) + ["--model.nan_steps", "[5]"]
    with pytest.raises(NonFiniteLossError, match=r"global step 5: loss nan at epoch 1, batch 1, users \["):
        train_main(args)


def test_nan_loss_skipped_when_configured(tmp_path):
    args = with_module(tiny_args(tmp_path, epochs=2), NAN_MODULE) + ["--model.nan_steps", "[2, 5]"] + SKIP
    with pytest.warns(UserWarning, match="skipped optimizer step 2: loss nan at epoch 0, batch 2"):
        cli = train_main(args)
    guards = [c for c in cli.trainer.callbacks if isinstance(c, NonFiniteLossGuard)]
    assert len(guards) == 1 and guards[0].action == "skip" and guards[0].skipped == 2
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
    # The skipped steps updated nothing: AdamW counted a step for every parameter only on the others.
    opt = cli.trainer.optimizers[0]
    steps = {int(opt.state[p]["step"]) for p in cli.model.parameters() if p in opt.state and p.requires_grad}
    assert steps == {cli.trainer.global_step - 2}


def test_skip_gives_up_after_max_skips(tmp_path):
    args = with_module(tiny_args(tmp_path, epochs=2), NAN_MODULE) + ["--model.nan_steps", "[1, 2, 3]"] + SKIP
    with pytest.raises(NonFiniteLossError, match=r"global step 2: .*1 steps were skipped already \(max_skips=1\)"):
        train_main(args + ["--trainer.callbacks.max_skips", "1"])


def test_resume_from_damaged_checkpoints_gets_clear_errors(tmp_path):
    train_main(tiny_args(tmp_path))
    good = last_ckpt(tmp_path).read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])  # as left by a disk that filled up mid-write
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00not a checkpoint")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, message in [(truncated, "cannot be read"), (garbage, "cannot be read"),
                          (foreign, "is not a genrec checkpoint")]:
        with pytest.raises(CheckpointMismatchError, match=message):
            train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", str(path)])
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", str(tmp_path / "missing.ckpt")])


def test_resume_with_another_model_shape_is_refused(tmp_path):
    train_main(tiny_args(tmp_path))
    args = tiny_args(tmp_path, epochs=2)
    args[args.index("--model.net.dim") + 1] = "8"
    with pytest.raises(CheckpointMismatchError, match=r"other settings than this command: model.net.dim: 16 in the checkpoint, 8 here"):
        train_main(args + ["--ckpt_path", str(last_ckpt(tmp_path))])
    # test takes the module's settings from the checkpoint, not the net's: the weights' shapes are checked
    args[0] = "test"
    with pytest.raises(CheckpointMismatchError, match=r"does not fit this model \(net.pos_emb.weight: checkpoint \(12, 16\) vs model \(12, 8\)"):
        train_main(args + ["--ckpt_path", str(last_ckpt(tmp_path))])


def test_resume_on_another_dataset_is_refused(tmp_path):
    train_main(tiny_args(tmp_path))
    args = tiny_args(tmp_path, epochs=2)
    args[args.index("--data.dataset_options") + 1] = json.dumps({"num_users": 120, "num_items": 90, "seed": 0})
    with pytest.raises(CheckpointMismatchError, match=r"data.dataset_options.num_items: 80 in the checkpoint, 90 here"):
        train_main(args + ["--ckpt_path", str(last_ckpt(tmp_path))])


@pytest.mark.parametrize("option, value, message", [
    ("--model.loss.num_negatives", "0", r"model.loss.num_negatives must be >= 1, got 0"),  # trained with loss 0, frozen
    ("--model.loss.temperature", "0", r"model.loss.temperature must be > 0"),
    ("--model.optim.lr", "-0.001", r"model.optim.lr must be > 0"),
    ("--model.optim.betas", "[0.9, 1.0]", r"model.optim.betas\[1\] must be >= 0 and < 1"),
    ("--model.hr_ks", "[0, 10]", r"model.hr_ks must be >= 1"),
    ("--model.net.dropout", "1.0", r"model.net.dropout must be >= 0 and < 1"),
    ("--model.net.num_blocks", "0", r"model.net.num_blocks must be >= 1"),
    ("--data.preprocess.min_user_interactions", "-1", r"data.preprocess.min_user_interactions must be >= 0"),
])
def test_out_of_range_option_is_refused_at_construction_naming_its_key(tmp_path, option, value, message):
    args = tiny_args(tmp_path)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    with pytest.raises(ValueError, match=message):
        train_main(args)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.ckpt"))


def corrupt_tensor_bytes(good: Path, bad: Path) -> None:
    """A copy of ``good`` with bytes of its largest tensor changed, size unchanged (what a bad disk leaves)."""
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:
        member = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    header = data[member.header_offset:member.header_offset + 30]
    start = member.header_offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    for i in range(start, start + member.file_size, 4):
        data[i] ^= 0xFF  # the low mantissa byte of each float32: finite values, slightly off
    bad.write_bytes(bytes(data))


def test_a_checkpoint_with_corrupted_tensor_bytes_is_refused_by_resume_and_evaluation(tmp_path):
    train_main(tiny_args(tmp_path))
    bad = tmp_path / "bad.ckpt"
    corrupt_tensor_bytes(last_ckpt(tmp_path), bad)
    assert bad.stat().st_size == last_ckpt(tmp_path).stat().st_size
    torch.load(bad, weights_only=False)  # torch itself reads it without complaint
    with pytest.raises(CheckpointMismatchError, match=r"bad.ckpt is damaged: its member .*/data/\d+ fails the CRC check"):
        evaluate.main(["model", "--ckpt", str(bad), "--out", str(tmp_path / "eval")])
    with pytest.raises(CheckpointMismatchError, match="is damaged"):
        train_main(tiny_args(tmp_path, epochs=2) + ["--ckpt_path", str(bad)])
    evaluate.main(["model", "--ckpt", str(last_ckpt(tmp_path)), "--out", str(tmp_path / "eval"), "--no-baseline"])  # the intact one loads
