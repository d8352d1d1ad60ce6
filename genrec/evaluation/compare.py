"""Paired comparison of two evaluated runs on the same users (``evaluate.py compare REPORT_A REPORT_B``).

The runs must share every protocol field and rank the same users with the same targets; the difference
A - B of each metric gets a paired bootstrap interval and p-value (``genrec.evaluation.uncertainty``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import pandas as pd

from genrec.evaluation.runner import SCORER_FIELDS
from genrec.evaluation.report import scorer_metrics
from genrec.evaluation.uncertainty import Bootstrap, paired_bootstrap
from genrec.outputs import check_outputs, format_of, record_outputs


class RunMismatchError(ValueError):
    """Two runs that cannot be compared user by user."""


def load_report(path: str | Path, split: str = "test") -> tuple[Path, dict, pd.DataFrame]:
    """``(metrics JSON path, report, per-user frame)`` of a report folder or metrics JSON."""
    path = Path(path)
    report_path = path if path.suffix == ".json" else path / f"{split}_metrics.json"
    if not report_path.exists():
        raise FileNotFoundError(f"{report_path} does not exist: pass a folder evaluate.py wrote its report into "
                                f"(python evaluate.py model --ckpt CKPT --split {split}) or the metrics JSON itself")
    report = json.loads(report_path.read_text())
    if "per_user" not in report or "protocol" not in report:
        raise RunMismatchError(f"{report_path} has no per-user results or does not record its protocol (written by an "
                               "older evaluate.py): evaluate the checkpoint again to write them")
    frame = pd.read_parquet(report_path.parent / report["per_user"])
    return report_path, report, frame


def _check_same_protocol(a: tuple[Path, dict, pd.DataFrame], b: tuple[Path, dict, pd.DataFrame]) -> None:
    (pa, ra, _), (pb, rb, _) = a, b
    qa, qb = ra["protocol"], rb["protocol"]
    for key in sorted(set(qa) | set(qb)):
        if key in SCORER_FIELDS and not (key in qa and key in qb):
            continue
        if key == "k":  # other cutoffs change which metrics a report holds, not their values: the shared ones pair
            continue
        if qa.get(key) != qb.get(key):
            raise RunMismatchError(
                f"{pa} and {pb} were evaluated with different {key} ({qa.get(key, 'not recorded')!r} vs "
                f"{qb.get(key, 'not recorded')!r}): a paired comparison needs every protocol field the same; evaluate "
                "both with the same data options")


def _check_same_users(a: tuple[Path, dict, pd.DataFrame], b: tuple[Path, dict, pd.DataFrame], scorer: str,
                      scorer_b: str | None = None) -> None:
    (pa, ra, fa), (pb, rb, fb) = a, b
    scorer_b = scorer_b or scorer
    ua, ub = fa[fa["scorer"] == scorer].sort_values("user"), fb[fb["scorer"] == scorer_b].sort_values("user")
    if not np.array_equal(ua["user"].to_numpy(), ub["user"].to_numpy()):
        only_a, only_b = np.setdiff1d(ua["user"], ub["user"]), np.setdiff1d(ub["user"], ua["user"])
        raise RunMismatchError(f"{pa} and {pb} evaluated different users for {scorer!r} ({len(ua):,} vs {len(ub):,}; "
                               f"{len(only_a):,} only in the first, {len(only_b):,} only in the second): evaluate both "
                               "with the same data options")
    if not np.array_equal(ua["target"].to_numpy(), ub["target"].to_numpy()):
        raise RunMismatchError(f"{pa} and {pb} hold different targets for the same users: evaluate both with the "
                               "same data options")


def compare_runs(run_a: str | Path, run_b: str | Path, split: str = "test", boot: Bootstrap = Bootstrap(),
                 pairs: list[tuple[str, str]] | None = None) -> dict:
    """Each metric both report (their cutoffs may differ), its value in A and B and the paired difference
    A - B, per ``(scorer of A, scorer of B)`` in ``pairs`` (default: the model scorers both report, else every shared scorer but popularity)."""
    a, b = load_report(run_a, split), load_report(run_b, split)
    _check_same_protocol(a, b)
    if pairs is None:
        shared = [s for s in a[1]["metrics"] if s in b[1]["metrics"] and s != "popularity"]
        pairs = [(s, s) for s in shared if s.startswith("model")] or [(s, s) for s in shared]
        if not pairs:
            raise RunMismatchError(f"{a[0]} and {b[0]} share no scorer but popularity ({sorted(a[1]['metrics'])} vs "
                                   f"{sorted(b[1]['metrics'])}): name the scorers to pair with --scorers A=B")
    for (sa, sb) in pairs:
        for path, report, name in ((a[0], a[1], sa), (b[0], b[1], sb)):
            if name not in report["metrics"]:
                raise RunMismatchError(f"{path} has no scorer {name!r}; it has {sorted(report['metrics'])}")
    out = {"a": str(a[0]), "b": str(b[0]), "split": a[1]["split"], "dataset": a[1]["dataset"],
           "method": f"paired {boot.describe()}; p two-sided, at least 2 / (resamples + 1)",
           "resamples": boot.resamples, "scorers": {}}
    for scorer, scorer_b in pairs:
        _check_same_users(a, b, scorer, scorer_b)
        ma, mb = scorer_metrics(a[2], scorer), scorer_metrics(b[2], scorer_b)
        if not set(ma) & set(mb):
            raise RunMismatchError(f"{a[0]} and {b[0]} share no metric ({sorted(ma)} vs {sorted(mb)}): evaluate both "
                                   "with a cutoff in common")
        diffs = paired_bootstrap(ma, mb, boot)
        label = scorer if scorer == scorer_b else f"{scorer} (A) vs {scorer_b} (B)"
        out["scorers"][label] = {"users": len(next(iter(ma.values()))), "metrics": {
            k: {"a": float(ma[k].mean()), "b": float(mb[k].mean()), **d} for k, d in diffs.items()}}
    return out


def markdown(comparison: dict) -> str:
    lines = [f"# {comparison['split']} comparison: {comparison['dataset']}", "",
             f"A: `{comparison['a']}`", f"B: `{comparison['b']}`", ""]
    floor = 2 / (comparison["resamples"] + 1)  # the smallest p the resamples can show
    for scorer, part in comparison["scorers"].items():
        lines += [f"{scorer}, {part['users']:,} users:", "",
                  "| metric | A | B | A - B | 95% CI | p |", "|---|---|---|---|---|---|"]
        for k, m in part["metrics"].items():
            lines.append(f"| {k} | {m['a']:.4f} | {m['b']:.4f} | {m['diff']:+.4f} | [{m['low']:+.4f}, {m['high']:+.4f}] "
                         f"| {'≤ ' if m['p'] <= floor else ''}{m['p']:.3f} |")
        lines.append("")
    return "\n".join(lines + [comparison["method"] + "."]) + "\n"


def add_arguments(parser: Any) -> None:
    """``evaluate.py compare``'s options, added to its jsonargparse ``parser``."""
    parser.add_argument("run_a", type=str, help="report folder (or its <split>_metrics.json) of run A")
    parser.add_argument("run_b", type=str, help="report folder (or its <split>_metrics.json) of run B")
    parser.add_argument("--split", type=Literal["test", "val"], default="test", help="the compared split")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="R", help="paired resamples of the users")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resamples")
    parser.add_argument("--out", type=Optional[str], default=None,
                        help="also write the comparison to this file: JSON (.json) or Markdown (.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out even when other inputs or another program wrote it")
    parser.add_argument("--scorers", type=str, nargs="+", default=None, metavar="A=B",
                        help="scorer pairs to compare, scorer of run A = scorer of run B (e.g. model=text, "
                             "model=popularity; a bare name pairs it with itself; unset: the model scorers)")


def run(args: Any) -> dict:
    pairs = [tuple(p.split("=", 1)) if "=" in p else (p, p) for p in args.scorers] if args.scorers else None
    out = Path(args.out) if args.out else None
    if out is not None:
        fmt = format_of(out, None, {".json": "json", ".md": "markdown"})
        owner = {"command": "evaluate.py compare", "a": str(Path(args.run_a).resolve()), "b": str(Path(args.run_b).resolve()),
                 "split": args.split, "scorers": pairs}
        check_outputs([out], owner, args.overwrite)
    comparison = compare_runs(args.run_a, args.run_b, args.split, Bootstrap(args.bootstrap, args.seed), pairs)
    print(markdown(comparison))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(comparison, indent=2) if fmt == "json" else markdown(comparison))
        record_outputs([out], owner)
    return comparison
