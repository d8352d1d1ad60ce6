"""Evaluate a trained checkpoint (retrieval or generative) on its dataset's test or validation split.

    python evaluate.py model --ckpt runs/genrec/version_0/checkpoints/last.ckpt
    python evaluate.py model --ckpt runs/genrec/version_0     # the run's best checkpoint on val/ndcg@10
    python evaluate.py model --ckpt model.ckpt --data.root ../shared/data/ml-1m --split val
    python evaluate.py model --ckpt generative.ckpt --data.root ../shared/data/amazon-office   # zero-shot

Writes ``<out>/<split>_metrics.json`` and ``<out>/<split>_report.md`` with the model's metrics beside
the popularity baseline (and, for a generative model, the text baseline) computed by the same
evaluator, each with a bootstrap 95% confidence interval over users, and
``<out>/<split>_per_user.parquet`` (each user's target rank and metrics). A generative checkpoint
goes through ``genrec.evaluation.generative_eval`` (zero-shot on another catalogue). A report
already there is replaced only by a rerun of the same checkpoint with the same protocol (split,
exclusion, filters, cut-offs); anything else needs ``--overwrite`` (``genrec.outputs``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from genrec.commands import add_data_options
from genrec.evaluation.protocols import PopularityScorer, UserRanks, evaluate_scorer, protocol
from genrec.evaluation.recommendations import example_recommendations
from genrec.evaluation.report import owner, per_user_frame, report_paths, write_report
from genrec.evaluation.runs import Run, eval_parts, load_run
from genrec.evaluation.uncertainty import Bootstrap, add_bootstrap_arguments, bootstrap_from
from genrec.metrics import RankingMetrics
from genrec.modules.checkpoints import CheckpointMismatchError
from genrec.outputs import check_outputs


def run_evaluation(run: Run, overrides: dict[str, Any] | None = None, split: str = "test", out: str | None = None,
                   baseline: bool = True, boot: Bootstrap | None = Bootstrap(), wandb: bool = False,
                   overwrite: bool = False) -> dict:
    """Metrics of a retrieval ``run`` (and of popularity unless ``baseline`` is False), written by ``write_report``."""
    model = run.model
    dm = run.datamodule(overrides)
    dm.setup("test")
    trained_on = model.hparams.get("dataset_fingerprint", "")
    if trained_on and trained_on != dm.fingerprint:
        raise CheckpointMismatchError(
            f"{run.path} was trained on catalogue {trained_on!r}, but these data give {dm.fingerprint!r}: "
            "a retrieval model can only rank the catalogue it was trained on"
        )
    hp = model.hparams
    report = {
        "command": "evaluate.py model",
        "checkpoint": str(run.path.resolve()),
        "protocol": protocol(dm, split, hp.hr_ks, hp.ndcg_ks),
        "split": split,
        "dataset": dm.data.name,
        "fingerprint": dm.fingerprint,
        "users": len(dm.eval_users),
        "items": dm.num_items,
        "exclude": dm.hparams.exclude,
    }
    folder = Path(out) if out else run.folder
    check_outputs(report_paths(folder, split), owner(report), overwrite)  # before the slow part
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
    report |= {"eval_seconds": round(seconds, 2), "metrics": results}
    examples = example_recommendations(model, eval_parts(dm, split)[0][1], dm.data) if wandb else None
    write_report(report, per_user_frame(records, dm, split), folder, split, boot, examples=examples, overwrite=overwrite)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint written by train.py, or a run folder (its best checkpoint)")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--out", default=None, help="report folder (default: the run folder of the checkpoint)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baselines")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing report files even when another checkpoint, protocol or program wrote them")
    add_bootstrap_arguments(parser)
    parser.add_argument("--wandb", action="store_true",
                        help="also log the metrics table, breakdown plots and example recommendations to W&B "
                             "(offline unless WANDB_MODE=online; WANDB_MODE=disabled turns it off)")
    add_data_options(parser, "those the checkpoint was trained with")


def run(args: argparse.Namespace) -> dict:
    trained = load_run(args.ckpt)
    if trained.generative:
        from genrec.evaluation.generative_eval import run_generative_evaluation as evaluate
    else:
        evaluate = run_evaluation
    return evaluate(trained, args.data, split=args.split, out=args.out, baseline=not args.no_baseline,
                    boot=bootstrap_from(args), wandb=args.wandb, overwrite=args.overwrite)
