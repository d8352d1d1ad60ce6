"""Checkpoint loading with errors a user can act on, instead of deep torch stack traces."""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from genrec.modules.optim import OptimConfig, schedule


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the data or model it is loaded into."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """The checkpoint at ``path``; ``mmap=True`` leaves tensors on disk until used (cheap to inspect)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist: pass the .ckpt file written by train.py (e.g. runs/<name>/version_0/checkpoints/last.ckpt)")
    verify_integrity(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except Exception as err:  # torch raises several unrelated types for a damaged file
        raise CheckpointMismatchError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); it is damaged or not a checkpoint: train again or pick another file") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointMismatchError(f"{path} is not a genrec checkpoint (no state_dict/hyper_parameters): pass a .ckpt written by train.py")
    return migrate(ckpt, str(path))


# (path, size, mtime) of files verified in this process: evaluation opens one checkpoint several times
_verified: set[tuple[str, int, int]] = set()


def verify_integrity(path: Path) -> None:
    """Check the CRC-32 of every member of the zip archive that ``torch.save`` writes (``torch.load`` does not)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified or not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        bad = f"? ({type(err).__name__}: {err})"
    if bad is not None:
        raise CheckpointMismatchError(f"checkpoint {path} is damaged: its member {bad} fails the CRC check (a bad disk or an "
                                      "interrupted copy); train again, or use another checkpoint of the run")
    _verified.add(key)


def config_class(hint: Any) -> type | None:
    """The dataclass a parameter's type hint names (``X`` or ``X | None``); None for any other hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
    return hint if dataclasses.is_dataclass(hint) else None


def with_configs(cls: type, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` of ``cls.__init__`` with the dicts of its dataclass arguments turned back into dataclasses."""
    hints = typing.get_type_hints(cls.__init__)
    configs = {name: config_class(hints.get(name)) for name, value in args.items() if isinstance(value, dict)}
    return {name: configs[name](**value) if configs.get(name) else value for name, value in args.items()}


def import_path(path: str) -> Any:
    """The object a dotted path ``pkg.mod.Name`` names."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build_net(net_config: dict, source: str | Path = "checkpoint") -> nn.Module:
    """Instantiate ``{"class_path": "pkg.mod.Class", "init_args": {...}}``."""
    try:
        cls = import_path(net_config["class_path"])
    except (KeyError, ValueError, ImportError, AttributeError) as err:
        raise CheckpointMismatchError(f"{source}: cannot rebuild the net from {net_config!r} ({err})") from None
    return cls(**with_configs(cls, net_config.get("init_args", {})))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or for a run folder the best checkpoint its newest ``last*.ckpt`` records."""
    path = Path(path)
    if not path.is_dir():
        return path
    folder = path / "checkpoints"
    lasts = sorted(folder.glob("last*.ckpt"))
    if not lasts:
        raise FileNotFoundError(f"{path} holds no checkpoints/last.ckpt: pass a run folder written by train.py or a .ckpt file")
    newest_step, best = -1, None
    for last in lasts:
        ckpt = load_checkpoint(last)
        for key, value in ckpt.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and value.get("best_model_path") and ckpt.get("global_step", 0) > newest_step:
                newest_step, best = ckpt.get("global_step", 0), Path(value["best_model_path"])
    if best is None:
        return max(lasts, key=lambda f: f.stat().st_mtime)
    for candidate in (best, folder / best.name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{path}: the best checkpoint recorded by the run, {best.name}, is missing from {folder}; "
                            "pass a checkpoint file explicitly")


def class_path(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def module_class_path(ckpt: dict) -> str:
    """The class path of the Lightning module that wrote ``ckpt`` (``checkpoint_identity``)."""
    return ckpt.get("genrec", {}).get("module") or "genrec.modules.retrieval_module.RetrievalModule"

def checkpoint_identity(module: Any) -> dict[str, Any]:
    """What evaluate.py needs to rebuild a run: the module's and its data module's class paths."""
    dm = getattr(module.trainer, "datamodule", None) if module._trainer is not None else None
    return {"module": class_path(module), "datamodule": class_path(dm) if dm else None}


# -- old formats: ``STEPS[v]`` turns version v into v + 1; version 0 (no version recorded) covers every
# checkpoint before versions, so each step rewrites only the old spelling it finds.

VERSION_KEY = "genrec_checkpoint_version"


def module_files_renamed(ckpt: dict) -> None:
    """retrieval.py and generative.py became retrieval_module.py and generative_module.py."""
    genrec = ckpt.get("genrec") or {}
    for old in ("retrieval.RetrievalModule", "generative.GenerativeModule"):
        if genrec.get("module") == f"genrec.modules.{old}":
            genrec["module"] = f"genrec.modules.{old.replace('.', '_module.')}"


def hstu_attention_option(ckpt: dict) -> None:
    """HSTU's ``compile_attention: bool`` became ``attention: compiled``."""
    args = ((ckpt.get("genrec") or {}).get("net") or {}).get("init_args") or {}
    if "compile_attention" in args:
        args["attention"] = "compiled" if args.pop("compile_attention") else args.get("attention", "dense")


RETRIEVAL_FLAT = {"loss": ("loss", "kind"), **{k: ("loss", k) for k in ("num_negatives", "negatives", "negative_groups", "temperature")},
                  **{k: ("optim", k) for k in ("lr", "weight_decay", "betas", "lr_schedule", "warmup_steps", "min_lr_ratio")}}
RETRIEVAL_OPTIM = {"lr": 1e-3, "weight_decay": 0.0, "betas": (0.9, 0.98), "lr_schedule": "constant", "warmup_steps": 0,
                   "min_lr_ratio": 0.0}
LOADER_FLAT = ("train_windows", "stochastic_length", "bucket_by_length", "batch_size", "eval_batch_size", "num_workers")


def options_grouped(ckpt: dict) -> None:
    """The retrieval module's flat loss and optimiser options became ``loss`` and ``optim``, the data
    module's flat loader options ``loader``."""
    hp = ckpt["hyper_parameters"]
    if (ckpt.get("genrec") or {}).get("module", "").endswith(".RetrievalModule") and not isinstance(hp.get("optim"), dict):
        groups = {"loss": {}, "optim": dict(RETRIEVAL_OPTIM)}
        for key, (group, field) in RETRIEVAL_FLAT.items():
            if key in hp:
                groups[group][field] = hp.pop(key)
        hp.update(groups)
    data = ckpt.get("datamodule_hyper_parameters")
    if data and any(k in data for k in LOADER_FLAT):
        data["loader"] = {**(data.get("loader") or {}), **{k: data.pop(k) for k in LOADER_FLAT if k in data}}


def optimiser_grouped(ckpt: dict) -> None:
    """The tokenizer autoencoder's and the encoder fine-tuning's ``lr`` and ``weight_decay`` became ``optim``."""
    hp = ckpt["hyper_parameters"]
    if "optim" not in hp and "lr" in hp:
        hp["optim"] = {k: hp.pop(k) for k in ("lr", "weight_decay") if k in hp}


HSTU_TIME_FLAT = {"use_time_bias": "enabled", "num_time_buckets": "num_buckets", "query_time": "query_time"}
KCORE_FLAT = ("min_user_interactions", "min_item_interactions")


def narrower_constructors(ckpt: dict) -> None:
    """HSTU's flat ``use_time_bias``, ``num_time_buckets`` and ``query_time`` became ``time_bias``; the
    sequence data module's k-core thresholds and ``use_cache`` moved into ``preprocess``; the generative
    module's ``tokenizer_ckpt`` and ``tokenizer_config`` became ``tokenizer`` (the arguments)."""
    hp = ckpt["hyper_parameters"]
    if isinstance(hp.get("tokenizer_config"), dict):
        hp.pop("tokenizer_ckpt", None)
        hp["tokenizer"] = hp.pop("tokenizer_config")
    net = (ckpt.get("genrec") or {}).get("net") or {}
    args = net.get("init_args") or {}
    if net.get("class_path", "").endswith(".HSTU") and any(k in args for k in HSTU_TIME_FLAT):
        args["time_bias"] = {new: args.pop(old) for old, new in HSTU_TIME_FLAT.items() if old in args}
    data = ckpt.get("datamodule_hyper_parameters")
    if data and "domains" not in data and any(k in data for k in (*KCORE_FLAT, "use_cache")):
        data["preprocess"] = {**(data.get("preprocess") or {}),
                              **{k: data.pop(k) for k in (*KCORE_FLAT, "use_cache") if k in data}}


def lambda_schedule_replaced(ckpt: dict) -> None:
    """genrec's hand-written ``LambdaLR`` became torch's schedulers (``optim.schedule``): an old state
    becomes the new scheduler's progress at the same step, replayed to it."""
    states = ckpt.get("lr_schedulers") or []
    if not any("lr_lambdas" in state for state in states):
        return
    optim = ckpt["hyper_parameters"].get("optim") or {}
    config = OptimConfig(**{k: optim[k] for k in ("lr_schedule", "warmup_steps") if k in optim})
    if config.lr_schedule == "constant" and config.warmup_steps <= 1:
        ckpt["lr_schedulers"] = []  # a constant rate: no scheduler to resume (``optim.adamw``)
        return

    def progress(state: dict) -> dict:
        return {k: v for k, v in state.items() if k in ("last_epoch", "_step_count", "_is_initial")} | (
            {"_schedulers": [progress(s) for s in state["_schedulers"]]} if "_schedulers" in state else {})

    replaced = []
    for old in states:
        scheduler = schedule(torch.optim.AdamW([nn.Parameter(torch.zeros(1))]), config, old["last_epoch"] + config.warmup_steps + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping without optimizer steps
            for _ in range(old["last_epoch"]):
                scheduler.step()
        replaced.append({**progress(scheduler.state_dict()), "base_lrs": old["base_lrs"], "_last_lr": old["_last_lr"]})
    ckpt["lr_schedulers"] = replaced


STEPS: list[Callable[[dict], None]] = [module_files_renamed, hstu_attention_option, options_grouped, optimiser_grouped,
                                       narrower_constructors, lambda_schedule_replaced]
VERSION = len(STEPS)


def migrate(ckpt: dict, source: str = "checkpoint") -> dict:
    """``ckpt`` in today's format (changed in place, and returned)."""
    version = ckpt.get(VERSION_KEY, 0)
    if not isinstance(version, int) or not 0 <= version <= VERSION:
        raise CheckpointMismatchError(f"{source} has {VERSION_KEY}={version!r}, but this genrec reads versions 0..{VERSION}: "
                         "it was written by a newer genrec; update genrec to load it")
    for step in STEPS[version:]:
        step(ckpt)
    ckpt[VERSION_KEY] = VERSION
    return ckpt
