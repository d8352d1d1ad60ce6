"""What ``--ckpt_path`` means for train.py, settled before Lightning builds anything.

* ``last`` finds the newest ``last*.ckpt`` of this experiment, across all its run folders
  (``<save_dir>/<name>/version_*/checkpoints``) and any explicit ``ModelCheckpoint(dirpath=...)``,
  or a newer SLURM requeue checkpoint (``<default_root_dir>/hpc_ckpt_*.ckpt``).
  Lightning alone would look only in the new run's folder, which is empty, and start from scratch.
  When there is none yet (the first submission of a job that always passes ``--ckpt_path last``),
  ``last`` is left to Lightning, which warns and trains from the start.
* An explicit or found checkpoint is opened (memory-mapped, so cheaply) and refused with a clear
  error when it is missing, damaged or not a genrec checkpoint.
* The W&B run id stored by ``genrec.callbacks.WandbRunId`` is passed back to the W&B logger, so
  the resumed run continues the same W&B run.

Every rank does the same on the same files, so ranks agree on the checkpoint they resume.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genrec.callbacks import WandbRunId
from genrec.modules.checkpoints import load_checkpoint

# Values of ckpt_path that Lightning resolves itself.
_SYMBOLIC = {"best", "hpc", "registry"}


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    value = node.get(key, default) if hasattr(node, "get") else getattr(node, key, default)
    return default if value is None else value


def _specs(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def checkpoint_dirs(trainer: Any) -> list[Path]:
    """Folders where this experiment's runs keep checkpoints (newest-first search happens later)."""
    root = Path(_get(trainer, "default_root_dir", os.getcwd()))
    dirs = []
    for cb in _specs(_get(trainer, "callbacks")):
        if str(_get(cb, "class_path", "")).endswith("ModelCheckpoint") and _get(_get(cb, "init_args"), "dirpath"):
            dirs.append(Path(_get(_get(cb, "init_args"), "dirpath")))
    loggers = _specs(_get(trainer, "logger", True))
    if loggers and _get(loggers[0], "init_args") is not None:
        # Lightning puts checkpoints under the first logger's <save_dir>/<name>/<version>/checkpoints.
        args = _get(loggers[0], "init_args")
        base = Path(_get(args, "save_dir", root)) / str(_get(args, "name", "lightning_logs"))
        dirs += sorted(base.glob("*/checkpoints"))
    else:
        dirs.append(root / "checkpoints")
    return dirs


def find_last(trainer: Any) -> Path | None:
    """The most recently written ``last*.ckpt`` of the experiment, or None.

    Lightning's SLURM auto-requeue saves ``hpc_ckpt_<n>.ckpt`` in ``default_root_dir`` when the job
    is signalled; it is usually the freshest state, so it competes too.
    """
    found = [p for d in checkpoint_dirs(trainer) if d.is_dir() for p in d.glob("last*.ckpt") if p.is_file()]
    found += [p for p in Path(_get(trainer, "default_root_dir", os.getcwd())).glob("hpc_ckpt_*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def prepare(config: Any, subcommand: str | None) -> None:
    """Resolve and check ``config.ckpt_path`` in place; on ``fit``, continue the checkpoint's W&B run."""
    ckpt_path = _get(config, "ckpt_path")
    if not ckpt_path or ckpt_path in _SYMBOLIC or "://" in str(ckpt_path):
        return
    if ckpt_path == "last":
        found = find_last(config.trainer)
        if found is None:
            return  # Lightning warns that there is nothing to resume and starts afresh
        config.ckpt_path = ckpt_path = str(found)
    ckpt = load_checkpoint(ckpt_path, mmap=True)
    wandb_id = ckpt.get(WandbRunId.KEY)
    if subcommand != "fit" or not wandb_id:
        return
    for spec in _specs(_get(config.trainer, "logger")):
        args = _get(spec, "init_args")
        is_wandb = "Wandb" in str(_get(spec, "class_path", ""))
        if is_wandb and args is not None and not _get(args, "id") and not _get(args, "version"):
            args["id"] = wandb_id
