"""Top-K recommendations written to a file, one row per (user, position) (docs/evaluation.md).

    python evaluate.py recommend --ckpt runs/genrec/version_0 --k 100 --on all --out recs.parquet
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from genrec.data import sources
from genrec.errors import DataError
from genrec.evaluation.recommendations import recommendation_table
from genrec.evaluation.text_baseline import add_text_arguments, baseline_recommender
from genrec.evaluation.runner import add_data_options, data_overrides
from genrec.modules.eval_loop import DomainEvalLoop
from genrec.outputs import check_outputs, format_of, record_outputs

Format = Literal["parquet", "csv", "jsonl"]
FORMATS = ("parquet", "csv", "jsonl")
SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


def write_table(table: pd.DataFrame, path: Path, fmt: Format) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        table.to_parquet(path, index=False)
    elif fmt == "csv":
        table.to_csv(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True, force_ascii=False)


class RecommendationWriter(BasePredictionWriter):
    """Writes ``predict_step`` outputs to ``path`` as ``format`` (default: the suffix's); ``k`` sets the
    module's ``predict_k``. An existing ``path`` is refused unless genrec wrote it for the same ``owner``
    (default: the checkpoint and ``k``) or ``overwrite``. Under DDP, rank 0 merges every rank's shard.
    """

    def __init__(self, path: str, format: Format | None = None, k: int | None = None, overwrite: bool = False,
                 owner: dict[str, Any] | None = None):
        super().__init__(write_interval="batch")
        if format is not None and format not in FORMATS:
            raise ValueError(f"recommendation format must be one of {FORMATS}, got {format!r}")
        if k is not None and k < 1:
            raise ValueError(f"recommendation k must be at least 1, got {k}")
        self.path, self.k, self.overwrite, self.owner = Path(path), k, overwrite, owner
        self.format = format_of(self.path, format, SUFFIXES, "format")
        self._parts: list[dict[str, np.ndarray]] = []

    def _owner(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        if self.owner is not None:
            return self.owner
        ckpt = trainer.ckpt_path
        return {"command": "recommend", "checkpoint": str(Path(ckpt).resolve()) if ckpt else None, "k": pl_module.predict_k}

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._parts = []
        if self.k is not None:
            pl_module.predict_k = self.k
        check_outputs([self.path], self._owner(trainer, pl_module), self.overwrite)  # every rank: all stop together

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: dict[str, torch.Tensor],
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        self._parts.append({k: v.detach().cpu().numpy() for k, v in prediction.items()})

    def _shard(self, rank: int) -> Path:
        return self.path.with_name(f"{self.path.name}.rank{rank}.npz")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        k = pl_module.predict_k
        mine = {key: np.concatenate([p[key] for p in self._parts]) if self._parts else np.zeros((0,) + (k,) * (key != "user"))
                for key in ("user", "items", "scores")}
        self._parts = []
        if trainer.world_size == 1:
            shards = [mine]
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(self._shard(trainer.global_rank), **mine)
            trainer.strategy.barrier("recommendation shards written")
            if trainer.global_rank != 0:
                return
            shards = []
            for rank in range(trainer.world_size):
                with np.load(self._shard(rank)) as shard:
                    shards.append({key: shard[key] for key in shard.files})
                self._shard(rank).unlink()
        users = np.concatenate([s["user"] for s in shards]).astype(np.int64)
        if len(np.unique(users)) != len(users):
            raise RuntimeError("a user was predicted on two ranks: the predict sampler must not pad its shards")
        table = recommendation_table(trainer.datamodule.data, users, np.concatenate([s["items"] for s in shards]).astype(np.int64),
                                     np.concatenate([s["scores"] for s in shards]))
        write_table(table, self.path, self.format)
        record_outputs([self.path], self._owner(trainer, pl_module))
        print(f"wrote {len(users):,} users' top {k} to {self.path}")


def read_user_ids(path: str) -> list[str]:
    """The raw user ids in ``path`` (one per line, or a CSV/Parquet with ``user_id``) in file order, each
    once, in canonical form (docs/datasets.md); what that changed is printed."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--users {path}: no such file (one raw user id per line, or a CSV/Parquet with a user_id column)")
    counts: dict[str, int] = {}
    try:
        if file.suffix == ".parquet":
            frame, where = sources.read_parquet(file), lambda i: f"row {i + 1}"
        elif file.suffix == ".csv":
            frame, where = sources.parse_csv(file, file, dtype={"user_id": str}), lambda i: f"line {i + 2}"
        else:
            text = sources.decode(file.read_bytes(), file, "utf-8")
            lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            frame, where = pd.DataFrame({"user_id": [line for _, line in lines]}), lambda i: f"line {lines[i][0]}"
        if frame.empty:
            raise DataError(f"{file} holds no user ids; list one raw user id per line, or give a CSV/Parquet file a "
                            "user_id column with one a row")
        column = sources.select_columns(frame, {"user_id": "user"}, file)["user"]
        ids = sources.canonical_ids(column, "user", file, where, counts).tolist()
    except DataError as err:
        raise DataError(f"--users {err}") from None
    unique = list(dict.fromkeys(ids))
    changed = {**counts, "listed_again": len(ids) - len(unique)}
    if any(changed.values()):
        print(f"--users {path}: " + ", ".join(f"{key}={count:,}" for key, count in changed.items() if count))
    return unique


def user_indices(ids: list[str], path: str, data: Any) -> np.ndarray:
    """The user indices of raw user ``ids`` (read from ``path``), in their order."""
    index = {str(u): i for i, u in enumerate(data.user_ids)}
    unknown = [u for u in ids if u not in index]
    if unknown:
        raise DataError(f"--users {path}: {len(unknown):,} user id(s) not in dataset {data.name!r}, e.g. {unknown[:5]}")
    return np.array([index[u] for u in ids], np.int64)


def add_arguments(parser: Any) -> None:
    """``evaluate.py recommend``'s options, added to its jsonargparse ``parser``."""
    parser.add_argument("--ckpt", type=Optional[str], default=None,
                        help="checkpoint written by train.py, or a run folder (its best checkpoint); or --baseline")
    parser.add_argument("--baseline", type=Optional[Literal["text", "popularity"]], default=None,
                        help="instead of a checkpoint, a training-free recommender as evaluate.py baseline scores it, on the "
                        "data the --data options name (text: the text options below, e.g. a fine-tuned --encoder)")
    add_text_arguments(parser)
    parser.add_argument("--k", type=int, default=10, help="items per user")
    parser.add_argument("--on", type=Literal["test", "val", "all"], default="test",
                        help="test/val: each user's history before that split's target (as evaluation ranks it); "
                             "all: every user's full history, the next item after everything seen")
    parser.add_argument("--users", type=Optional[str], default=None,
                        help="only these raw user ids: a text file (one per line), or a CSV/Parquet with user_id")
    parser.add_argument("--out", type=Optional[str], default=None, help="output file, its format named by its suffix: "
                        ".parquet, .csv or .jsonl (unset: <run folder>/recommendations_<on>.<format>)")
    parser.add_argument("--format", type=Optional[Format], default=None,
                        help="file format; must agree with the suffix of --out (unset: the suffix's, else parquet)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when another checkpoint, request or program wrote it")
    parser.add_argument("--accelerator", type=str, default="auto", help="Lightning accelerator")
    parser.add_argument("--devices", type=Union[int, list[int], str], default=1,
                        help="Lightning devices (a count, a list such as [0, 1], or auto); more than one shards users under DDP")
    add_data_options(parser, "those the checkpoint was trained with")


class BaselineModule(DomainEvalLoop, L.LightningModule):
    """A training-free ``Recommender`` with the trained modules' ``predict_step``."""

    def __init__(self, recommender: Any, k: int = 10):
        super().__init__()
        self.recommender, self.predict_k = recommender, k

    def recommend(self, batch: dict[str, torch.Tensor], k: int, exclude: torch.Tensor | None = None):
        return self.recommender.recommend(batch, k, exclude)


def _baseline(args: Any) -> tuple[L.LightningModule, Any, dict[str, Any], Path]:
    from genrec.data import SequenceDataModule
    from genrec.data.datamodule import rebuild_options

    if args.devices not in (1, "1"):
        raise ValueError("--baseline recommends in one process (it has no weights to share): pass --devices 1")
    dm = SequenceDataModule(**rebuild_options(SequenceDataModule, {}, data_overrides(args)))
    dm.setup("predict")
    options = {key: getattr(args, key) for key in ("encoder", "template", "hubness", "hubness_k", "center", "whiten")}
    model = BaselineModule(baseline_recommender(args.baseline, dm, **(options if args.baseline == "text" else {})), args.k)
    source = {"baseline": args.baseline, **(options if args.baseline == "text" else {})}
    return model, dm, source, Path("runs") / f"{args.baseline}-baseline"


def run(args: Any) -> Path:
    from genrec.evaluation.runs import load_run

    if (args.ckpt is None) == (args.baseline is None):
        raise ValueError("recommend needs one of --ckpt (a trained run) or --baseline (text or popularity)")
    wanted = read_user_ids(args.users) if args.users else None  # a bad file fails before the model and data load
    if args.baseline is not None:
        model, dm, source, folder = _baseline(args)
        return _predict(args, model, dm, source, folder, wanted)
    trained = load_run(args.ckpt)
    model, dm = trained.model, trained.datamodule(data_overrides(args))
    dm.setup("predict")
    if getattr(dm, "eval_domains", None):
        raise ValueError("recommend ranks one catalogue: pass --data.class_path genrec.data.SequenceDataModule with one "
                         "domain's data options instead of a multi-domain data module")
    trained.check_catalogue(dm)  # a generative model tokenizes this catalogue's text in its setup
    return _predict(args, model, dm, {"checkpoint": str(trained.path.resolve())}, trained.folder, wanted)


def _predict(args: Any, model: L.LightningModule, dm: Any, source: dict[str, Any], folder: Path,
             wanted: list[str] | None) -> Path:
    dm.set_predict_request(args.on, None if wanted is None else user_indices(wanted, args.users, dm.data))
    out = Path(args.out) if args.out else folder / f"recommendations_{args.on}.{args.format or 'parquet'}"
    owner = {"command": "evaluate.py recommend", **source, "k": args.k, "on": args.on,
             "users": str(Path(args.users).resolve()) if args.users else None, "catalogue": dm.fingerprint,
             "exclude": dm.hparams.get("exclude")}
    trainer = L.Trainer(accelerator=args.accelerator, devices=args.devices, logger=False, enable_checkpointing=False,
                        callbacks=[RecommendationWriter(str(out), args.format, args.k, args.overwrite, owner)],
                        strategy="ddp" if args.devices not in (1, "1") else "auto")
    trainer.predict(model, datamodule=dm, return_predictions=False)
    return out
