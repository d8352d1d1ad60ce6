"""The report writer of every evaluation: metrics JSON, Markdown, per-user Parquet and breakdown plot.

Per-user ranks give every metric a bootstrap interval and let two runs be compared user by user.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from genrec.evaluation import breakdown
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_ci, per_user_metrics
from genrec.metrics import RankingMetrics
from genrec.outputs import check_outputs, record_outputs


class UserRanks:
    """Each evaluated user's target rank, kept batch by batch; ``metrics`` gives the cut-offs."""

    def __init__(self, metrics: RankingMetrics):
        self.hr_ks, self.ndcg_ks, self.mrr, self.max_rank = metrics.hr_ks, metrics.ndcg_ks, metrics.mrr, metrics.max_rank
        self._parts: list[tuple[Tensor, Tensor, Tensor]] = []

    def add(self, batch: dict[str, Tensor], ranks: Tensor) -> None:
        self._parts.append((batch["user"].cpu(), batch["target"].cpu(), ranks.cpu()))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(users, targets, ranks), each (U,), sorted by user index."""
        users, targets, ranks = (torch.cat(p).numpy() for p in zip(*self._parts)) if self._parts else (np.zeros(0, np.int64),) * 3
        order = np.argsort(users, kind="stable")
        return users[order], targets[order], ranks[order]


def per_user_frame(records: dict[str, UserRanks], dm: Any, split: str) -> pd.DataFrame:
    """One row per (scorer, evaluated user): user and target ids, ``history`` length, the target's training
    count, its 0-based rank and the user's metrics."""
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


def owner(report: dict) -> dict:
    """Who a report's files belong to: the command, the checkpoint (or scorer) and the protocol."""
    return {"command": report["command"], "checkpoint": report["checkpoint"], "protocol": report["protocol"]}


def report_paths(folder: Path, name: str) -> list[Path]:
    """The files ``write_report`` writes for ``name`` into ``folder``."""
    return [folder / f"{name}_{part}" for part in ("metrics.json", "report.md", "per_user.parquet", "breakdown.png")]


def write_report(report: dict, frame: pd.DataFrame, folder: Path, name: str, boot: Bootstrap | None,
                 note: str = "", examples: pd.DataFrame | None = None, overwrite: bool = False,
                 owned_by: dict | None = None) -> None:
    """Add bootstrap intervals and breakdowns to ``report`` and write ``report_paths(folder, name)``
    (``note`` ends the Markdown); with ``examples``, log it to W&B. Files of another owner need ``overwrite``."""
    paths, owned_by = report_paths(folder, name), owned_by or owner(report)
    check_outputs(paths, owned_by, overwrite)
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
    paths[0].write_text(json.dumps(report, indent=2))
    paths[1].write_text(text)
    print(text)
    record_outputs(paths, owned_by)
    print(f"wrote {', '.join(map(str, paths[:-1]))} and {paths[-1]}")
    if examples is not None:
        log_to_wandb(report, folder, name, examples)


def log_to_wandb(report: dict, folder: Path, name: str, examples: pd.DataFrame) -> None:
    """The metrics, breakdowns and example recommendations as the W&B run ``eval-<name>`` (``SafeWandbLogger``)."""
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
    lines = [f"# {report['split']} evaluation: {report['dataset']}", "",
             f"Checkpoint `{report['checkpoint']}`; {report['users']:,} users ranked against all "
             f"{report['items']:,} items (leave-one-out; excluded from candidates: {report['exclude']}).", "",
             "| scorer | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    ci = report.get("ci", {})
    for name, values in rows.items():
        bounds = ci.get(name, {})
        lines.append(f"| {name} | " + " | ".join(
            f"{values[k]:.4f} [{bounds[k][0]:.4f}, {bounds[k][1]:.4f}]" if k in bounds else f"{values[k]:.4f}" for k in keys) + " |")
    if ci:
        lines += ["", f"{report['ci_method']}, shown as [low, high]; per-user ranks in `{report['per_user']}`."]
    if "text_coverage" in report:
        empty = report["text_coverage"]
        fields = ", ".join(f"{f} {n:,}" for f, n in empty.items() if f != "all fields")
        lines += ["", f"Item text (template `{report['text_template']}`), items with an empty field: {fields}; "
                      f"with no text at all: {empty['all fields']:,} of {report['items']:,}."]
    for name in rows:
        if name.startswith("model"):
            label = name[len("model"):]
            pop = rows.get(f"popularity{label}", {})
            if pop.get("hr@10", 0) > 0:
                lines += ["", f"HR@10 ratio model / popularity{label}: {rows[name]['hr@10'] / pop['hr@10']:.2f}×"]
    return "\n".join(lines) + "\n"
