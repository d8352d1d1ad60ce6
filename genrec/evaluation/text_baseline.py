"""Evaluate the training-free text baseline (``genrec.models.text_prior.TextScorer``) beside popularity, without a checkpoint.

    python evaluate.py baseline --data.dataset plain --data.root ../shared/data/amazon-office
    python evaluate.py baseline --hubness 0.5 --data.dataset plain --data.root ../shared/data/amazon-office
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from genrec.data import SequenceDataModule
from genrec.data.datamodule import rebuild_options
from genrec.evaluation.baselines import PopularityScorer
from genrec.evaluation.report import owner, report_paths
from genrec.evaluation.runner import add_report_arguments, data_name, data_overrides, report_header, run_report
from genrec.errors import check_range
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_from
from genrec.outputs import check_outputs
from genrec.models.text_prior import TextScorer, mean_pair_cosine
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts


def run_text_baseline(data: dict, split: str = "test", out: str | None = None, encoder: str | None = None,
                      template: str | None = None, decay: float = 0.3, hubness: float = 0.0, hubness_k: int = 50,
                      center: bool = False, whiten: float = 0.0, boot: Bootstrap | None = Bootstrap(),
                      overwrite: bool = False) -> dict:
    """The report of the text baseline (and popularity) on a ``SequenceDataModule`` built from ``data``."""
    check_text_options(hubness, hubness_k, whiten)  # option errors come before any file check
    dm = SequenceDataModule(**rebuild_options(SequenceDataModule, {}, data))
    dm.setup("test")
    template, encoder = template or DEFAULT_TEMPLATE, encoder or DEFAULT_ENCODER
    texts = render_texts(dm.data.item_text, template, f"dataset {dm.data.name!r}")  # a catalogue without text fails here
    hub = (f", hubness {hubness} (k {hubness_k})" if hubness else "") + space_label(center, whiten, ", ")
    report = report_header("evaluate.py baseline", f"text baseline ({encoder}, decay {decay}{hub}, template {template!r})",
                           dm, split, (1, 5, 10), (5, 10), template)
    folder = Path(out or ("runs/text-baseline" + (f"-hubness{hubness:g}" if hubness else "") + space_label(center, whiten, "-")))
    name = f"{split}_{data_name(dm)}"
    check_outputs(report_paths(folder, name), owner(report), overwrite)  # before the encoder runs
    emb = torch.from_numpy(embed_texts(texts, encoder))
    recommenders = {"text": TextScorer(emb, decay, hubness, hubness_k, center, whiten=whiten), "popularity": PopularityScorer(dm.train_item_counts())}
    # how crowded the encoder leaves this catalogue (before any centring): a fine-tune's collapse shows here
    report["mean_pair_cosine"] = round(mean_pair_cosine(emb)[0], 4)
    if center or whiten:  # and after it, in the space the scorer ranks in
        report["mean_pair_cosine_scored"] = round(mean_pair_cosine(recommenders["text"].items)[0], 4)
    return run_report(report, recommenders, dm, folder, name, mrr=False, boot=boot, overwrite=overwrite)


def baseline_recommender(name: str, dm: SequenceDataModule, encoder: str | None = None, template: str | None = None,
                         decay: float = 0.3, hubness: float = 0.0, hubness_k: int = 50, center: bool = False,
                         whiten: float = 0.0):
    """The training-free recommender ``name`` (``text`` or ``popularity``) on ``dm``'s catalogue."""
    if name == "popularity":
        return PopularityScorer(dm.train_item_counts())
    if name != "text":
        raise ValueError(f"--baseline must be text or popularity, got {name!r}")
    check_text_options(hubness, hubness_k, whiten)
    texts = render_texts(dm.data.item_text, template or DEFAULT_TEMPLATE, f"dataset {dm.data.name!r}")
    return TextScorer(torch.from_numpy(embed_texts(texts, encoder or DEFAULT_ENCODER)), decay, hubness, hubness_k, center,
                      whiten=whiten)


def check_text_options(hubness: float, hubness_k: int, whiten: float) -> None:
    if hubness and hubness_k < 1:
        raise ValueError(f"--hubness-k must be at least 1, got {hubness_k}")
    check_range("--whiten", whiten, at_least=0, at_most=1)


def space_label(center: bool, whiten: float, sep: str) -> str:
    """How the scorer's space is named in a report's description (``sep`` ", ") and its default folder ("-")."""
    if whiten:
        return f"{sep}whitened{' ' if sep == ', ' else ''}{whiten:g}"
    return f"{sep}centred" if center else ""


def add_text_arguments(parser: Any) -> None:
    """The text baseline's options (``evaluate.py baseline`` and ``recommend --baseline text``)."""
    parser.add_argument("--template", type=Optional[str], default=None, help=f"item text template (unset: {DEFAULT_TEMPLATE!r})")
    parser.add_argument("--encoder", type=Optional[str], default=None, help=f"sentence-transformers name or folder (unset: "
                        f"{DEFAULT_ENCODER}; e.g. <run>/encoder written by python train.py fit --config configs/encoder/multidomain.yaml)")
    parser.add_argument("--hubness", type=float, default=0.0, metavar="C",
                        help="score cos(u, e_i) - C * h_i, h_i an item's mean cosine to its nearest catalogue neighbours (0: off)")
    parser.add_argument("--hubness-k", type=int, default=50, help="neighbours in h_i of --hubness")
    parser.add_argument("--center", action="store_true",
                        help="subtract the catalogue's mean item embedding and renormalise before scoring (against an "
                        "encoder that crowds items together)")
    parser.add_argument("--whiten", type=float, default=0.0, metavar="W",
                        help="centre, then whiten by the catalogue's item covariance shrunk towards its mean variance, "
                        "W * C + (1 - W) * tr(C)/E * I, and renormalise (0: off; 1: full whitening)")


def add_arguments(parser: Any) -> None:
    """``evaluate.py baseline``'s options, added to its jsonargparse ``parser``."""
    add_text_arguments(parser)
    add_report_arguments(parser, "runs/text-baseline, -hubness<C> with --hubness", "the SequenceDataModule defaults")


def run(args: Any) -> dict:
    return run_text_baseline(data_overrides(args), split=args.split, out=args.out, encoder=args.encoder, template=args.template,
                             hubness=args.hubness, hubness_k=args.hubness_k, center=args.center, whiten=args.whiten, boot=bootstrap_from(args),
                             overwrite=args.overwrite)
