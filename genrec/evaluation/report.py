"""Checkpoint evaluation behind ``evaluate.py``: metrics as JSON plus a Markdown report."""
from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from genrec.data.datamodule import data_options
from genrec.evaluation.metrics import RankingMetrics
from genrec.evaluation.protocols import PopularityScorer, evaluate_scorer
from genrec.modules.checkpoints import CheckpointMismatchError, load_checkpoint, resolve_checkpoint


def _import(path: str) -> Any:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def build_datamodule(ckpt: dict, overrides: dict[str, Any], source: str) -> Any:
    hp = ckpt.get("datamodule_hyper_parameters")
    if hp is None:
        raise CheckpointMismatchError(f"{source} holds no data module settings; pass a checkpoint written by train.py")
    overrides = dict(overrides)
    # --data.class_path picks another data module (e.g. one domain of a multi-domain run); the
    # settings it shares with the training data module still default to the trained ones.
    cls = _import(overrides.pop("class_path", None) or ckpt.get("genrec", {}).get("datamodule")
                  or "genrec.data.SequenceDataModule")
    accepted = data_options(cls)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise ValueError(f"unknown data option(s) {unknown} for {cls.__name__}; known: {sorted(accepted)}")
    hp = {**{k: v for k, v in dict(hp).items() if k in accepted}, **overrides}
    return cls(**hp)


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
                   out: str | None = None, baseline: bool = True) -> dict:
    ckpt_path = str(resolve_checkpoint(ckpt_path))
    ckpt = load_checkpoint(ckpt_path)
    module_cls = _import(ckpt.get("genrec", {}).get("module") or "genrec.modules.RetrievalModule")
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
    metrics = lambda: RankingMetrics(hp.hr_ks, hp.ndcg_ks)  # noqa: E731
    results, seconds = {}, 0.0
    pop = PopularityScorer(dm.train_item_counts()) if baseline else None  # one count for all domains
    for label, loader, domain in eval_parts(dm, split):
        start = time.perf_counter()
        results[f"model{label}"] = evaluate_scorer(model, loader, metrics(), hp.eval_chunk_size, domain)
        seconds += time.perf_counter() - start
        if pop is not None:
            results[f"popularity{label}"] = evaluate_scorer(pop, loader, metrics(), hp.eval_chunk_size, domain)
    report = {
        "checkpoint": str(ckpt_path),
        "split": split,
        "dataset": dm.data.name,
        "users": len(dm.eval_users),
        "items": dm.num_items,
        "exclude": dm.hparams.exclude,
        "eval_seconds": round(seconds, 2),
        "metrics": results,
    }
    folder = Path(out) if out else Path(ckpt_path).resolve().parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_metrics.json").write_text(json.dumps(report, indent=2))
    (folder / f"{split}_report.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {folder / f'{split}_metrics.json'} and {folder / f'{split}_report.md'}")
    return report


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
    for name, values in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[k]:.4f}" for k in keys) + " |")
    for name in rows:
        if name.startswith("model"):
            label = name[len("model"):]
            pop = rows.get(f"popularity{label}", {})
            if pop.get("hr@10", 0) > 0:
                lines += ["", f"HR@10 ratio model / popularity{label}: {rows[name]['hr@10'] / pop['hr@10']:.2f}×"]
    return "\n".join(lines) + "\n"
