"""Metrics by user group, with bootstrap intervals: history length (1-4, 5-9, ..., 200+ items before the
target) and target popularity (quintiles of the evaluated targets' training counts; an empty one is left out).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from genrec.evaluation.uncertainty import Bootstrap, bootstrap_ci

HISTORY_EDGES = (1, 5, 10, 20, 50, 100, 200)


def history_bucket(history: np.ndarray) -> np.ndarray:
    """Label of each history length's bucket."""
    edges = np.array(HISTORY_EDGES)
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    return np.array(labels)[np.searchsorted(edges, history, side="right") - 1]


def popularity_quintile(counts: np.ndarray) -> np.ndarray:
    """``Q1 (lo-hi)`` .. ``Q5 (lo-hi)`` of each target training count; Q1 the least popular."""
    cuts = np.quantile(counts, [0.2, 0.4, 0.6, 0.8])
    q = np.searchsorted(cuts, counts, side="left")  # (U,) in 0..4; a count equal to a cut stays below it
    labels = np.empty(len(counts), dtype=object)
    for i in np.unique(q):
        mine = counts[q == i]
        labels[q == i] = f"Q{i + 1} ({mine.min():,}-{mine.max():,})"
    return labels


def breakdown(frame: pd.DataFrame, metric: str, boot: Bootstrap | None = Bootstrap()) -> dict[str, pd.DataFrame]:
    """``{"history": table, "popularity": table}``: per group (rows, in order), its users and each
    scorer's ``metric`` with, when ``boot``, its interval (columns ``<scorer>``, ``<scorer> low``,
    ``<scorer> high``). Groups are defined on each scorer's own users, which are the same for all."""
    frame = frame.reset_index(drop=True).assign(history_group=history_bucket(frame["history"].to_numpy()))
    frame["popularity_group"] = ""
    for scorer, rows in frame.groupby("scorer", sort=False):
        frame.loc[rows.index, "popularity_group"] = popularity_quintile(rows["target_train_count"].to_numpy())
    out = {}
    for name in ("history", "popularity"):
        key = f"{name}_group"
        records = []
        for group, rows in frame.groupby(key, sort=False):
            record = {"group": group, "users": int(rows["user"].nunique())}
            for scorer, part in rows.groupby("scorer", sort=False):
                values = part[metric].to_numpy()
                record[scorer] = float(values.mean())
                if boot is not None:
                    record[f"{scorer} low"], record[f"{scorer} high"] = bootstrap_ci({metric: values}, boot)[metric]
            records.append(record)
        table = pd.DataFrame(records)
        order = table["group"].map(_group_order)
        out[name] = table.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)
    return out


def _group_order(label: str) -> int:
    return int(label[1:].split(" ")[0]) if label.startswith("Q") else int(label.split("-")[0].rstrip("+"))


def markdown(tables: dict[str, pd.DataFrame], metric: str, scorers: list[str]) -> list[str]:
    lines = []
    titles = {"history": "history length (items before the target)", "popularity": "target popularity (training count quintile)"}
    for name, table in tables.items():
        lines += ["", f"{metric} by {titles[name]}:", "", "| group | users | " + " | ".join(scorers) + " |",
                  "|---|---|" + "---|" * len(scorers)]
        for _, row in table.iterrows():
            cells = [f"{row[s]:.4f} [{row[f'{s} low']:.4f}, {row[f'{s} high']:.4f}]" if f"{s} low" in row else f"{row[s]:.4f}"
                     for s in scorers]
            lines.append(f"| {row['group']} | {row['users']:,} | " + " | ".join(cells) + " |")
    return lines


def plot(tables: dict[str, pd.DataFrame], metric: str, scorers: list[str], path: Path, title: str) -> Path:
    """Grouped bars of ``metric`` per group and scorer (with interval whiskers when known), one panel
    per breakdown, saved as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no display backend, safe in any process

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, len(tables), sharey=True)
    width = 0.8 / len(scorers)
    for ax, (name, table) in zip(np.atleast_1d(axes), tables.items()):
        x = np.arange(len(table))
        for i, scorer in enumerate(scorers):
            value = table[scorer].to_numpy()
            err = (np.stack([value - table[f"{scorer} low"], table[f"{scorer} high"] - value])
                   if f"{scorer} low" in table else None)
            ax.bar(x + (i - (len(scorers) - 1) / 2) * width, value, width, yerr=err, capsize=2, label=scorer)
        ax.set_xticks(x, [f"{g}\n{u:,} users" for g, u in zip(table["group"], table["users"])], fontsize=7)
        ax.set_xlabel({"history": "history length", "popularity": "target popularity quintile (training count)"}[name])
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel(metric)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path
