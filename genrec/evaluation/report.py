"""Checkpoint evaluation behind ``evaluate.py``: metrics as JSON plus a Markdown report.

Beside ``<split>_metrics.json`` the evaluation writes ``<split>_per_user.parquet``: one row per
(scorer, evaluated user) with the target's rank and the user's metrics (``genrec.evaluation.uncertainty``),
from which every reported metric gets a bootstrap confidence interval and two runs can be compared
user by user (``evaluate.py compare``).
"""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.data.datamodule import rebuild_options
from genrec.evaluation import breakdown
from genrec.metrics import RankingMetrics
from genrec.evaluation.protocols import PopularityScorer, UserRanks, evaluate_scorer
from genrec.evaluation.recommendations import example_recommendations
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_ci, per_user_metrics
from genrec.modules.checkpoints import CheckpointMismatchError, load_checkpoint, module_class_path, resolve_checkpoint


def import_path(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def data_overrides(parser: Any, rest: list[str]) -> dict[str, Any]:
    """``--data.KEY VALUE`` (or ``--data.KEY=VALUE``) arguments left by ``parser`` as ``{KEY: value}``,
    values parsed as YAML; anything else is a parser error."""
    import yaml

    overrides, it = {}, iter(rest)
    for key in it:
        if not key.startswith("--data."):
            parser.error(f"unknown argument {key!r}: data options are given as --data.KEY VALUE")
        name = key[len("--data."):].removeprefix("init_args.")
        if "=" in name:
            name, value = name.split("=", 1)
        else:
            value = next(it, None)
            if value is None:
                parser.error(f"{key} needs a value")
        overrides[name] = yaml.safe_load(value)
    return overrides


def build_datamodule(ckpt: dict, overrides: dict[str, Any], source: str) -> Any:
    hp = ckpt.get("datamodule_hyper_parameters")
    if hp is None:
        raise CheckpointMismatchError(f"{source} holds no data module settings; pass a checkpoint written by train.py")
    overrides = dict(overrides)
    # --data.class_path picks another data module (e.g. one domain of a multi-domain run); the
    # settings it shares with the training data module still default to the trained ones.
    cls = import_path(overrides.pop("class_path", None) or ckpt.get("genrec", {}).get("datamodule")
                  or "genrec.data.SequenceDataModule")
    return cls(**rebuild_options(cls, dict(hp), overrides))


def eval_parts(dm: Any, split: str) -> list[tuple[str, Any, tuple[int, int] | None]]:
    """``(label, loader, domain)`` per evaluated domain: one unlabelled part for a single dataset,
    and for a multi-domain data module one part per domain, labelled `` [name]`` and ranked within
    that domain's id range."""
    loaders = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    domains = getattr(dm, "eval_domains", None)
    if not domains:
        return [("", loaders, None)]
    return [(f" [{name}]", loader, (lo, hi)) for (name, lo, hi), loader in zip(domains, loaders)]


def run_evaluation(ckpt_path: str, overrides: dict[str, Any] | None = None, split: str = "test",
                   out: str | None = None, baseline: bool = True, boot: Bootstrap | None = Bootstrap(),
                   wandb: bool = False) -> dict:
    ckpt_path = str(resolve_checkpoint(ckpt_path))
    ckpt = load_checkpoint(ckpt_path)
    module_cls = import_path(module_class_path(ckpt))
    model = module_cls.from_checkpoint(ckpt_path).eval()
    dm = build_datamodule(ckpt, overrides or {}, ckpt_path)
    dm.setup("test")
    trained_on = model.hparams.get("dataset_fingerprint", "")
    if trained_on and trained_on != dm.fingerprint:
        raise CheckpointMismatchError(
            f"{ckpt_path} was trained on catalogue {trained_on!r}, but these data give {dm.fingerprint!r}: "
            "a retrieval model can only rank the catalogue it was trained on"
        )
    hp = model.hparams
    results, records, seconds = {}, {}, 0.0

    def score(name: str, scorer: Any, loader: Any, domain: tuple[int, int] | None) -> None:
        metrics = RankingMetrics(hp.hr_ks, hp.ndcg_ks)
        records[name] = UserRanks(metrics)
        results[name] = evaluate_scorer(scorer, loader, metrics, hp.eval_chunk_size, domain, records[name])

    pop = PopularityScorer(dm.train_item_counts()) if baseline else None  # one count for all domains
    for label, loader, domain in eval_parts(dm, split):
        start = time.perf_counter()
        score(f"model{label}", model, loader, domain)
        seconds += time.perf_counter() - start
        if pop is not None:
            score(f"popularity{label}", pop, loader, domain)
    report = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "dataset": dm.data.name,
        "fingerprint": dm.fingerprint,
        "users": len(dm.eval_users),
        "items": dm.num_items,
        "exclude": dm.hparams.exclude,
        "eval_seconds": round(seconds, 2),
        "metrics": results,
    }
    folder = Path(out) if out else Path(ckpt_path).resolve().parent.parent
    examples = example_recommendations(model, eval_parts(dm, split)[0][1], dm.data) if wandb else None
    write_report(report, per_user_frame(records, dm, split), folder, split, boot, examples=examples)
    return report


def per_user_frame(records: dict[str, UserRanks], dm: Any, split: str) -> pd.DataFrame:
    """One row per (scorer, evaluated user): internal and raw ids of user and target, the number of
    items before the target (``history``), the target's training count, its 0-based rank and the
    user's metrics (NaN where a scorer does not report that metric)."""
    data = dm.data
    positions = dm.test_pos if split == "test" else dm.val_pos  # aligned with dm.eval_users (sorted)
    counts = dm.train_item_counts().numpy()
    frames = []
    for name, record in records.items():
        users, targets, ranks = record.arrays()
        pos = positions[np.searchsorted(dm.eval_users, users)]
        frame = pd.DataFrame({
            "scorer": name,
            "user": users,
            "user_id": data.user_ids[users],
            "target": targets,
            "target_id": data.item_ids[targets],
            "history": pos - data.offsets[users],
            "target_train_count": counts[targets].astype(np.int64),
            "rank": ranks,
        })
        values = per_user_metrics(ranks, record.hr_ks, record.ndcg_ks, record.mrr, record.max_rank)
        frames.append(frame.assign(**values))
    return pd.concat(frames, ignore_index=True)


def scorer_metrics(frame: pd.DataFrame, scorer: str) -> dict[str, np.ndarray]:
    """Per-user metric columns (U,) of one scorer in a per-user frame, sorted by user."""
    rows = frame[frame["scorer"] == scorer].sort_values("user")
    return {c: rows[c].to_numpy() for c in metric_columns(rows)}


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if (c.startswith(("hr@", "ndcg@")) or c == "mrr") and frame[c].notna().all()]


def write_report(report: dict, frame: pd.DataFrame, folder: Path, name: str, boot: Bootstrap | None,
                 note: str = "", examples: pd.DataFrame | None = None) -> None:
    """Add bootstrap intervals and breakdowns to ``report`` and write ``<name>_metrics.json``,
    ``<name>_report.md`` (with ``note`` appended), ``<name>_per_user.parquet`` and the breakdown
    plot ``<name>_breakdown.png`` into ``folder``; with ``examples`` (a few users' recommendations)
    also log all of it to W&B (``log_to_wandb``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if boot is not None:
        report["ci_method"] = boot.describe()
        report["ci"] = {s: {k: list(v) for k, v in bootstrap_ci(scorer_metrics(frame, s), boot).items()}
                        for s in report["metrics"]}
    report["per_user"] = f"{name}_per_user.parquet"
    frame.to_parquet(folder / report["per_user"], index=False)
    columns = metric_columns(frame)
    metric = "hr@10" if "hr@10" in columns else columns[0]
    tables = breakdown.breakdown(frame, metric, boot)
    scorers = list(report["metrics"])
    report["breakdown"] = {"metric": metric, "plot": f"{name}_breakdown.png",
                           **{k: t.to_dict(orient="records") for k, t in tables.items()}}
    breakdown.plot(tables, metric, scorers, folder / report["breakdown"]["plot"],
                   f"{report['split']} {metric}, {report['dataset']}: by history length and target popularity")
    text = markdown(report) + "\n".join(["", "## Breakdown", *breakdown.markdown(tables, metric, scorers), "",
                                          f"![{metric} by group]({report['breakdown']['plot']})", ""]) + note
    (folder / f"{name}_metrics.json").write_text(json.dumps(report, indent=2))
    (folder / f"{name}_report.md").write_text(text)
    print(text)
    print(f"wrote {folder / f'{name}_metrics.json'}, {folder / f'{name}_report.md'}, {folder / report['per_user']} "
          f"and {folder / report['breakdown']['plot']}")
    if examples is not None:
        log_to_wandb(report, folder, name, examples)


def log_to_wandb(report: dict, folder: Path, name: str, examples: pd.DataFrame) -> None:
    """The metrics table (with intervals), breakdown tables and plot, and example recommendations, as
    one W&B run ``eval-<name>`` under ``folder`` through ``SafeWandbLogger``: offline unless
    ``WANDB_MODE`` says otherwise, nothing at all with ``WANDB_MODE=disabled``, and a warning instead
    of an error when W&B fails."""
    from genrec.loggers import SafeWandbLogger

    logger = SafeWandbLogger(save_dir=str(folder), project="genrec", name=f"eval-{name}", job_type="evaluation")
    ci = report.get("ci", {})
    rows = [[scorer, key, value, *ci.get(scorer, {}).get(key, [None, None])]
            for scorer, values in report["metrics"].items() for key, value in values.items()]
    logger.log_table(f"{name}/metrics", columns=["scorer", "metric", "value", "low", "high"], data=rows)
    for part in ("history", "popularity"):
        logger.log_table(f"{name}/breakdown_{part}", dataframe=pd.DataFrame(report["breakdown"][part]))
    logger.log_image(f"{name}/breakdown", images=[str(folder / report["breakdown"]["plot"])])
    logger.log_table(f"{name}/examples", dataframe=examples.astype({c: str for c in ("user_id", "item_id")}))
    logger.finish()


def markdown(report: dict) -> str:
    rows = report["metrics"]
    keys = list(next(iter(rows.values())))
    lines = [
        f"# {report['split']} evaluation: {report['dataset']}",
        "",
        f"Checkpoint `{report['checkpoint']}`; {report['users']:,} users ranked against all "
        f"{report['items']:,} items (leave-one-out; excluded from candidates: {report['exclude']}).",
        "",
        "| scorer | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    ci = report.get("ci", {})
    for name, values in rows.items():
        bounds = ci.get(name, {})
        lines.append(f"| {name} | " + " | ".join(
            f"{values[k]:.4f} [{bounds[k][0]:.4f}, {bounds[k][1]:.4f}]" if k in bounds else f"{values[k]:.4f}" for k in keys) + " |")
    if ci:
        lines += ["", f"{report['ci_method']}, shown as [low, high]; per-user ranks in `{report['per_user']}`."]
    for name in rows:
        if name.startswith("model"):
            label = name[len("model"):]
            pop = rows.get(f"popularity{label}", {})
            if pop.get("hr@10", 0) > 0:
                lines += ["", f"HR@10 ratio model / popularity{label}: {rows[name]['hr@10'] / pop['hr@10']:.2f}×"]
    return "\n".join(lines) + "\n"
