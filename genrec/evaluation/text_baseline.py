"""Training-free text baseline: rank items by cosine to a recency-weighted mean of the history's text.

The user vector is ``sum_a decay**a * e(item at age a)`` over the model input window (age 0 = the
most recent item), with ``e`` the items' unit-norm sentence embeddings; candidates are scored by the
cosine to it; with ``hubness`` c the score is ``cos(u, e_i) - c h_i``, ``h_i`` the item's mean
cosine to its nearest catalogue neighbours (``text_hubness``). It goes through the same evaluator
as every model (``evaluate_scorer``), so history exclusion and tie-breaking are the same. A learned
text model that does not beat it has learned nothing that text similarity alone does not give.

    python evaluate.py baseline --data.dataset plain --data.root ../shared/data/amazon-office
    python evaluate.py baseline --hubness 0.5 --data.dataset plain --data.root ../shared/data/amazon-office
    python evaluate.py baseline --encoder runs/encoder-multidomain/version_0/encoder --hubness 0.5 --center \
        --data.dataset plain --data.root ../shared/data/amazon-office

``--encoder`` takes any sentence-transformers folder, e.g. one fine-tuned by
``genrec.modules.encoder_finetune``; ``--center`` scores in the catalogue-centred space
(``center_catalogue``), and every report holds the catalogue's ``mean_pair_cosine``.

Writes ``<out>/<split>_<data folder>_metrics.json``, ``_report.md`` and ``_per_user.parquet`` beside
the popularity baseline, with bootstrap intervals, through the report writer of every evaluation.
A report there from another encoder, template, decay, hubness or protocol is refused without
``--overwrite`` (``genrec.outputs``).
"""
from __future__ import annotations

import argparse

import torch

from genrec.commands import add_data_options
from genrec.evaluation.uncertainty import Bootstrap, add_bootstrap_arguments, bootstrap_from
from genrec.models.text_prior import TextScorer, mean_pair_cosine


def run_text_baseline(data: dict, split: str = "test", out: str | None = None, encoder: str | None = None,
                      template: str | None = None, decay: float = 0.3, hubness: float = 0.0, hubness_k: int = 50,
                      center: bool = False, boot: Bootstrap | None = Bootstrap(), overwrite: bool = False) -> dict:
    """Evaluate the text baseline (and popularity) on a ``SequenceDataModule`` built from ``data``,
    with bootstrap intervals unless ``boot`` is None."""
    from pathlib import Path

    from genrec.data import SequenceDataModule
    from genrec.data.datamodule import rebuild_options
    from genrec.metrics import RankingMetrics
    from genrec.evaluation.protocols import PopularityScorer, UserRanks, evaluate_scorer, protocol
    from genrec.evaluation.report import owner, per_user_frame, report_paths, write_report
    from genrec.outputs import check_outputs
    from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts, text_coverage

    if hubness and hubness_k < 1:  # option errors come before any file check
        raise ValueError(f"--hubness-k must be at least 1, got {hubness_k}")
    dm = SequenceDataModule(**rebuild_options(SequenceDataModule, {}, data))
    dm.setup("test")
    template = template or DEFAULT_TEMPLATE
    hr_ks, ndcg_ks = (1, 5, 10), (5, 10)
    hub = (f", hubness {hubness} (k {hubness_k})" if hubness else "") + (", centred" if center else "")
    report = {"command": "evaluate.py baseline",
              "checkpoint": f"text baseline ({encoder or DEFAULT_ENCODER}, decay {decay}{hub}, template {template!r})",
              "protocol": protocol(dm, split, hr_ks, ndcg_ks, template),
              "split": split, "dataset": dm.data.name, "fingerprint": dm.fingerprint, "data_root": dm.hparams.root,
              "users": len(dm.eval_users), "items": dm.num_items, "exclude": dm.hparams.exclude, "text_template": template}
    target = Path(dm.hparams.root).name if dm.hparams.root else dm.data.name
    folder = Path(out or ("runs/text-baseline" + (f"-hubness{hubness:g}" if hubness else "") + ("-centred" if center else "")))
    check_outputs(report_paths(folder, f"{split}_{target}"), owner(report), overwrite)  # before the encoder runs
    texts = render_texts(dm.data.item_text, template, f"dataset {dm.data.name!r}")
    emb = torch.from_numpy(embed_texts(texts, encoder or DEFAULT_ENCODER))
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    results, records = {}, {}
    for name, scorer in (("text", TextScorer(emb, decay, hubness, hubness_k, center)), ("popularity", PopularityScorer(dm.train_item_counts()))):
        metrics = RankingMetrics(hr_ks, ndcg_ks, mrr=False)
        records[name] = UserRanks(metrics)
        results[name] = evaluate_scorer(scorer, loader, metrics, record=records[name])
    # how crowded the encoder leaves this catalogue (before any centring): a fine-tune's collapse shows here
    report |= {"metrics": results, "text_coverage": text_coverage(dm.data.item_text, template),
               "mean_pair_cosine": round(mean_pair_cosine(emb)[0], 4)}
    write_report(report, per_user_frame(records, dm, split), folder, f"{split}_{target}", boot, overwrite=overwrite)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--template", default=None, help="item text template (default: '{title}. {brand}. {categories}')")
    parser.add_argument("--encoder", default=None, help="sentence-transformers name or folder (default: all-MiniLM-L6-v2; "
                        "e.g. <run>/encoder written by python train.py fit --config configs/encoder/multidomain.yaml)")
    parser.add_argument("--hubness", type=float, default=0.0, metavar="C",
                        help="score cos(u, e_i) - C * h_i, h_i an item's mean cosine to its nearest catalogue neighbours (default 0: off)")
    parser.add_argument("--hubness-k", type=int, default=50, help="neighbours in h_i of --hubness (default 50)")
    parser.add_argument("--center", action="store_true",
                        help="subtract the catalogue's mean item embedding and renormalise before scoring (against an "
                        "encoder that crowds items together)")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--out", default=None, help="report folder (default: runs/text-baseline, -hubness<C> with --hubness)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing report files even when another scorer, protocol or program wrote them")
    add_bootstrap_arguments(parser)
    add_data_options(parser, "the SequenceDataModule defaults")


def run(args: argparse.Namespace) -> dict:
    return run_text_baseline(args.data, split=args.split, out=args.out, encoder=args.encoder, template=args.template,
                             hubness=args.hubness, hubness_k=args.hubness_k, center=args.center, boot=bootstrap_from(args),
                             overwrite=args.overwrite)
