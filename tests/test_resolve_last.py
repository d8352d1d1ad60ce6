"""Which file ``--ckpt_path last`` means (genrec.resume.find_last), on plain folders."""
import os

from jsonargparse import Namespace

from genrec.resume import find_last


def touch(path, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, ns=(mtime, mtime))
    return path


def trainer_config(tmp_path, **extra):
    logger = [Namespace(class_path="lightning.pytorch.loggers.CSVLogger",
                        init_args=Namespace(save_dir=str(tmp_path / "runs"), name="exp"))]
    return Namespace(default_root_dir=str(tmp_path), logger=logger, callbacks=[], **extra)


def test_newest_last_checkpoint_across_run_folders(tmp_path):
    touch(tmp_path / "runs/exp/version_0/checkpoints/last.ckpt", 3_000)
    newest = touch(tmp_path / "runs/exp/version_1/checkpoints/last.ckpt", 5_000)
    touch(tmp_path / "runs/exp/version_1/checkpoints/epoch003.ckpt", 9_000)  # not a last checkpoint
    touch(tmp_path / "runs/other/version_7/checkpoints/last.ckpt", 9_000)  # another experiment
    assert find_last(trainer_config(tmp_path)) == newest


def test_slurm_requeue_checkpoint_and_explicit_dirpath_compete(tmp_path):
    touch(tmp_path / "runs/exp/version_0/checkpoints/last.ckpt", 3_000)
    hpc = touch(tmp_path / "hpc_ckpt_2.ckpt", 4_000)
    assert find_last(trainer_config(tmp_path)) == hpc
    explicit = touch(tmp_path / "ckpts/last-v1.ckpt", 6_000)
    cb = Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath=str(tmp_path / "ckpts")))
    config = trainer_config(tmp_path)
    config.callbacks = [cb]
    assert find_last(config) == explicit


def test_nothing_to_resume(tmp_path):
    assert find_last(trainer_config(tmp_path)) is None
    assert find_last(Namespace(default_root_dir=str(tmp_path), logger=False, callbacks=None)) is None
