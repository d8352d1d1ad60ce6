"""What ``--ckpt_path`` means for train.py, settled before Lightning builds anything (docs/distributed.md).

``last``: the newest ``last*.ckpt`` (or SLURM ``hpc_ckpt_*.ckpt``) of the experiment's run with this
command's model and data settings; a run folder: its newest ``last*.ckpt``. On ``fit`` a checkpoint of
other settings is refused, and the W&B run id it holds is passed back to the W&B logger.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from genrec.callbacks import WandbRunId
from genrec.modules.checkpoints import CheckpointMismatchError, import_path, load_checkpoint

# Values of ckpt_path that Lightning resolves itself.
_SYMBOLIC = {"best", "hpc", "registry"}
# Settings a resumed run may change: linked from the data, where the files are, how fast they load.
# Every other model and data setting makes another run.
MAY_DIFFER = {"model.num_items", "model.dataset_fingerprint", "model.tokenizer", "data.root", "data.cache_dir",
              "data.download", "data.use_cache", "data.preprocess.use_cache", "data.preprocess.verify_cache",
              "data.preprocess.memory", "data.loader.num_workers", "data.loader.eval_batch_size",
              "data.loader.release_pages_every"}


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


def last_checkpoints(trainer: Any) -> list[Path]:
    """Every ``last*.ckpt`` of the experiment and SLURM requeue checkpoint, the most recently written first."""
    found = [p for d in checkpoint_dirs(trainer) if d.is_dir() for p in d.glob("last*.ckpt") if p.is_file()]
    found += [p for p in Path(_get(trainer, "default_root_dir", os.getcwd())).glob("hpc_ckpt_*.ckpt") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def find_last(trainer: Any) -> Path | None:
    """The most recently written ``last*.ckpt`` of the experiment (or SLURM requeue checkpoint), or None."""
    return next(iter(last_checkpoints(trainer)), None)


def _plain(value: Any) -> Any:
    """Namespaces, tuples and dataclass dicts as JSON values, so equal settings compare equal."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    return json.loads(json.dumps(value, default=str))


def _canonical(class_path: Any) -> Any:
    """``genrec.models.SASRec`` and ``genrec.models.sasrec.SASRec`` name one class."""
    try:
        cls = import_path(str(class_path))
        return f"{cls.__module__}.{cls.__qualname__}"
    except (ValueError, ImportError, AttributeError):
        return class_path


def _flat(tree: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(tree, dict) or not tree:
        return {prefix: _canonical(tree) if prefix.endswith(".class_path") else tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        # jsonargparse nests a class's arguments under init_args; checkpoints do not
        out.update(_flat(value, prefix if key == "init_args" else f"{prefix}.{key}"))
    return out


def _settings(section: Any, prefix: str) -> dict[str, Any]:
    """``{"model.optim.lr": 0.002, "model.net.dim": 64, ...}`` of a config section (class_path, init_args)."""
    return _flat(_plain(section), prefix) if section is not None else {}


def _checkpoint_settings(ckpt: dict) -> dict[str, Any]:
    def section(hparams: dict | None) -> dict:
        hparams = dict(hparams or {})
        out = {k: v for k, v in hparams.items() if not k.startswith("_")}
        return {"class_path": hparams["_class_path"], **out} if "_class_path" in hparams else out

    model = section(ckpt.get("hyper_parameters"))
    net = ckpt.get("genrec", {}).get("net")
    if net:  # RetrievalModule keeps the net out of its hyper-parameters (it is a module)
        model["net"] = net
    return {**_flat(_plain(model), "model"), **_flat(_plain(section(ckpt.get("datamodule_hyper_parameters"))), "data")}


def run_differences(config: Any, ckpt: dict) -> list[str]:
    """The model and data settings in which this command and the checkpoint's run differ, as
    ``"model.optim.lr: 0.002 in the checkpoint, 0.01 here"``; keys only one side has are left out."""
    ours = {**_settings(_get(config, "model"), "model"), **_settings(_get(config, "data"), "data")}
    theirs = _checkpoint_settings(ckpt)
    # the checkpoint's seed goes on (RankStepSeed), so another one makes another run; a random one is not compared
    seed = _get(config, "seed_everything")
    saved = ckpt.get("callbacks", {}).get("RankStepSeed", {}).get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and saved is not None:
        ours["seed_everything"], theirs["seed_everything"] = seed, saved
    return [f"{key}: {theirs[key]!r} in the checkpoint, {ours[key]!r} here" for key in sorted(ours.keys() & theirs.keys())
            if key not in MAY_DIFFER and ours[key] != theirs[key]]


def _newest_of_folder(folder: Path) -> Path:
    found = sorted(list((folder / "checkpoints").glob("last*.ckpt")) + list(folder.glob("last*.ckpt")),
                   key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise FileNotFoundError(f"--ckpt_path {folder} is a folder without last*.ckpt files (nor checkpoints/last*.ckpt): "
                                "pass a run folder written by train.py or a .ckpt file")
    return found[-1]


def _last_of_this_run(config: Any) -> tuple[Path | None, dict | None]:
    """The newest last checkpoint of the experiment whose run has this command's settings."""
    skipped = []
    for path in last_checkpoints(config.trainer):
        ckpt = load_checkpoint(path, mmap=True)
        differences = run_differences(config, ckpt)
        if not differences:
            if skipped:
                warnings.warn("--ckpt_path last: skipped the checkpoints of other runs of this experiment: "
                              + "; ".join(skipped), stacklevel=2)
            return path, ckpt
        skipped.append(f"{path} ({', '.join(differences)})")
    if skipped:
        warnings.warn("--ckpt_path last: no checkpoint of a run with these settings, so this is a new run; skipped those "
                      "of other runs of this experiment: " + "; ".join(skipped), stacklevel=2)
    return None, None


def prepare(config: Any, subcommand: str | None) -> None:
    """Resolve and check ``config.ckpt_path`` in place; on ``fit``, continue the checkpoint's run (and W&B run)."""
    ckpt_path = _get(config, "ckpt_path")
    if not ckpt_path or ckpt_path in _SYMBOLIC or "://" in str(ckpt_path):
        return
    ckpt = None
    if ckpt_path == "last":
        found, ckpt = _last_of_this_run(config) if subcommand == "fit" else (find_last(config.trainer), None)
        if found is None:
            return  # Lightning warns that there is nothing to resume and starts afresh
        config.ckpt_path = ckpt_path = str(found)
    elif Path(ckpt_path).is_dir():
        config.ckpt_path = ckpt_path = str(_newest_of_folder(Path(ckpt_path)))
    ckpt = ckpt if ckpt is not None else load_checkpoint(ckpt_path, mmap=True)
    if subcommand != "fit":
        return
    differences = run_differences(config, ckpt)
    if differences:
        raise CheckpointMismatchError(
            f"--ckpt_path {ckpt_path} belongs to a run with other settings than this command: {'; '.join(differences)}. "
            "Resuming would go on with the checkpoint's settings and drop these. To continue that run, pass its own "
            "config (config.yaml in its run folder); to start a new run with these settings, leave out --ckpt_path"
        )
    wandb_id = ckpt.get(WandbRunId.KEY)
    if not wandb_id:
        return
    for spec in _specs(_get(config.trainer, "logger")):
        args = _get(spec, "init_args")
        is_wandb = "Wandb" in str(_get(spec, "class_path", ""))
        if is_wandb and args is not None and not _get(args, "id") and not _get(args, "version"):
            args["id"] = wandb_id
