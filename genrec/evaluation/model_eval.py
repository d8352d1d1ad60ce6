"""Evaluate a trained checkpoint (retrieval or generative) on its dataset's test or validation split.

    python evaluate.py model --ckpt runs/genrec/version_0/checkpoints/last.ckpt
    python evaluate.py model --ckpt runs/genrec/version_0     # the run's best checkpoint on val/ndcg@10
    python evaluate.py model --ckpt model.ckpt --data.root ../shared/data/ml-1m --split val
    python evaluate.py model --ckpt generative.ckpt --data.root ../shared/data/amazon-office   # zero-shot

The model and the baselines go through ``genrec.evaluation.runner``; a generative model on another
catalogue than its training one is evaluated zero-shot, into ``<split>_zero_shot_<data folder>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from genrec.evaluation.baselines import PopularityScorer, TextScorer
from genrec.evaluation.report import owner, report_paths
from genrec.evaluation.runner import add_report_arguments, data_name, data_overrides, report_header, run_report
from genrec.evaluation.runs import Run, load_run
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_from
from genrec.modules.generative_module import GenerativeModule
from genrec.outputs import check_outputs


def run_evaluation(run: Run, overrides: dict[str, Any] | None = None, split: str = "test", out: str | None = None,
                   baseline: bool = True, boot: Bootstrap | None = Bootstrap(), wandb: bool = False,
                   overwrite: bool = False, text_decay: float = 0.3) -> dict:
    """The report of ``run`` (beside the baselines unless ``baseline`` is False) on its data with
    ``overrides``; ``text_decay``: the text baseline's recency decay."""
    model, dm = run.model, run.datamodule(overrides)
    dm.setup("test")
    run.check_catalogue(dm)
    hp, generative = model.hparams, isinstance(model, GenerativeModule)
    trained_on = hp.get("dataset_fingerprint", "")
    report = report_header("evaluate.py model", str(run.path.resolve()), dm, split, hp.hr_ks, hp.ndcg_ks,
                           model.tokenizer.text_template if generative else None)
    zero_shot = generative and trained_on != dm.fingerprint
    folder, name = Path(out) if out else run.folder, f"{split}_zero_shot_{data_name(dm)}" if zero_shot else split
    check_outputs(report_paths(folder, name), owner(report), overwrite)  # before the slow part
    recommenders: dict[str, Any] = {"model": model}
    if baseline:
        recommenders["popularity"] = PopularityScorer(dm.train_item_counts())  # one count for all domains
    note = ""
    if generative:
        model.set_catalogue_from(dm)
        report |= {"trained_on": trained_on, "zero_shot": zero_shot, "collision_rate": model.collision_rate,
                   "beam_width": hp.beam_width}
        if getattr(dm, "item_ranges", None):
            report["collision_rate_by_domain"] = model.collision_rates(dm.item_ranges)
        if baseline:
            recommenders["text"] = TextScorer(model.item_text.cpu(), text_decay)
        if zero_shot:
            note = (f"\nZero-shot: trained on `{trained_on}`, evaluated on `{dm.fingerprint}` ({dm.hparams.get('root')}); "
                    f"collision rate before resolution {model.collision_rate:.2%}.\n")
    return run_report(report, recommenders, dm, folder, name, mrr=not generative, boot=boot, note=note, wandb=wandb,
                      overwrite=overwrite)


def add_arguments(parser: Any) -> None:
    """``evaluate.py model``'s options, added to its jsonargparse ``parser``."""
    parser.add_argument("--ckpt", type=str, required=True, help="checkpoint written by train.py, or a run folder (its best checkpoint)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the baselines")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the metrics table, breakdown plots and example recommendations to W&B "
                             "(offline unless WANDB_MODE=online; WANDB_MODE=disabled turns it off)")
    add_report_arguments(parser, "the run folder of the checkpoint", "those the checkpoint was trained with")


def run(args: Any) -> dict:
    return run_evaluation(load_run(args.ckpt), data_overrides(args), split=args.split, out=args.out, baseline=not args.no_baseline,
                          boot=bootstrap_from(args), wandb=args.wandb, overwrite=args.overwrite)
