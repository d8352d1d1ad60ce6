"""The one evaluation path of ``evaluate.py``: any ``Recommender``s on one split of any data module, into one report.

Protocol (``genrec.metrics``, docs/evaluation.md): leave-one-out, each user's held-out item of the split
ranked against the full catalogue (a generative model: within its top-K list), earlier items excluded as
the data module's ``exclude`` says, the target never; a multi-domain data module is ranked per domain.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Iterable, Literal, Optional, Sequence

import torch
from jsonargparse import strip_meta
from torch import Tensor

from genrec.data import MultiDomainDataModule, SequenceDataModule
from genrec.data.datamodule import data_protocol
from genrec.data.fewshot import FewShotDataModule
from genrec.evaluation.recommendations import example_recommendations
from genrec.evaluation.report import UserRanks, per_user_frame, write_report
from genrec.evaluation.uncertainty import Bootstrap, add_bootstrap_arguments
from genrec.metrics import RankingMetrics
from genrec.recommender import Recommender
from genrec.tokenizers.text import text_coverage


# The data modules whose options ``--data.KEY`` takes: those a checkpoint of genrec's training configs names.
DATA_MODULES = (SequenceDataModule, FewShotDataModule, MultiDomainDataModule)
# Fields only some scorers have (a retrieval model reads no text): compared where both reports record them.
SCORER_FIELDS = ("template",)


def protocol(dm: Any, split: str, hr_ks: Sequence[int], ndcg_ks: Sequence[int], template: str | None = None) -> dict[str, Any]:
    """Everything besides the scorer that decides a report's numbers: split, catalogue, exclusion, data
    filters, cut-offs and (for text scorers) the item text template."""
    hp = dm.hparams
    out: dict[str, Any] = {
        "split": split,
        "catalogue": dm.fingerprint,
        "exclude": hp.exclude,
        # unset, empty and 0 all mean "no filter"
        "filters": {key: value for key, value in data_protocol(hp).items()
                    if key in ("dataset", "dataset_options", "min_user_interactions", "min_item_interactions") and value},
        "k": {"hr": sorted(set(hr_ks)), "ndcg": sorted(set(ndcg_ks))},
    }
    if hp.exclude == "window":  # the window's length decides what is excluded
        out["window"] = hp.max_seq_len
    if template is not None:
        out["template"] = template
    return out


@torch.no_grad()
def evaluate_recommender(recommender: Recommender, batches: Iterable[dict[str, Tensor]], metrics: RankingMetrics,
                         domain: tuple[int, int] | None = None, record: UserRanks | None = None) -> dict[str, float]:
    """Metrics of ``recommender`` over ``batches``, ranking within ids ``domain = (first, last)`` if
    given; ``record`` also keeps each user's rank."""
    for batch in batches:
        ranks = recommender.rank_targets(batch, metrics, domain)
        if record is not None:
            record.add(batch, ranks)
    return {k: float(v) for k, v in metrics.compute().items()}


def eval_parts(dm: Any, split: str) -> list[tuple[str, Any, tuple[int, int] | None]]:
    """``(label, loader, domain)`` per evaluated domain: one unlabelled part, or `` [name]`` per domain."""
    loaders = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    domains = getattr(dm, "eval_domains", None)
    if not domains:
        return [("", loaders, None)]
    return [(f" [{name}]", loader, (lo, hi)) for (name, lo, hi), loader in zip(domains, loaders)]


def data_name(dm: Any) -> str:
    """The evaluated data as report file names show it: the data folder's name, else the dataset's."""
    return Path(dm.hparams.root).name if dm.hparams.get("root") else dm.data.name


def report_header(command: str, checkpoint: str, dm: Any, split: str, hr_ks: Sequence[int], ndcg_ks: Sequence[int],
                  template: str | None = None) -> dict[str, Any]:
    """What every report starts with: who wrote it, the protocol and the data it ranks (and a text
    scorer's ``template`` coverage)."""
    report = {"command": command, "checkpoint": checkpoint, "protocol": protocol(dm, split, hr_ks, ndcg_ks, template),
              "split": split, "dataset": dm.data.name, "fingerprint": dm.fingerprint, "data_root": dm.hparams.get("root"),
              "users": len(dm.eval_users), "items": dm.num_items, "exclude": dm.hparams.exclude}
    if template is not None:
        report |= {"text_template": template, "text_coverage": text_coverage(dm.data.item_text, template)}
    return report


def score(report: dict[str, Any], recommenders: dict[str, Recommender], dm: Any, mrr: bool = True) -> dict[str, UserRanks]:
    """Rank ``dm``'s split by every recommender at the report's cut-offs; add the metrics and seconds
    to ``report`` and return each scorer's per-user ranks."""
    ks = report["protocol"]["k"]
    results, records, seconds = {}, {}, {}
    for label, loader, domain in eval_parts(dm, report["split"]):
        for scorer, recommender in recommenders.items():
            start = time.perf_counter()
            metrics = RankingMetrics(ks["hr"], ks["ndcg"], mrr=mrr, max_rank=recommender.max_rank)
            records[scorer + label] = UserRanks(metrics)
            results[scorer + label] = evaluate_recommender(recommender, loader, metrics, domain, records[scorer + label])
            seconds[scorer] = round(seconds.get(scorer, 0.0) + time.perf_counter() - start, 2)
    report |= {"eval_seconds": seconds, "metrics": results}
    return records


def run_report(report: dict[str, Any], recommenders: dict[str, Recommender], dm: Any, folder: Path, name: str,
               mrr: bool = True, boot: Bootstrap | None = Bootstrap(), note: str = "", wandb: bool = False,
               overwrite: bool = False) -> dict[str, Any]:
    """``score`` and write the report as ``name`` into ``folder``; with ``wandb``, example lists too."""
    records = score(report, recommenders, dm, mrr)
    examples = example_recommendations(next(iter(recommenders.values())), eval_parts(dm, report["split"])[0][1],
                                       dm.data) if wandb else None
    write_report(report, per_user_frame(records, dm, report["split"]), folder, name, boot, note, examples, overwrite)
    return report


def add_report_arguments(parser: Any, out: str, data: str) -> None:
    """The options of a command writing a report: ``--split``, ``--out`` (default ``out``), ``--overwrite``,
    the bootstrap's and ``--data.KEY VALUE`` (``data``: what unset ones are)."""
    parser.add_argument("--split", type=Literal["test", "val"], default="test", help="the evaluated split")
    parser.add_argument("--out", type=Optional[str], default=None, help=f"report folder (unset: {out})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing report files even when another "
                        "checkpoint, scorer, protocol or program wrote them")
    add_bootstrap_arguments(parser)
    add_data_options(parser, data)


def add_data_options(parser: Any, defaults: str) -> None:
    """``--data.KEY VALUE`` for every option of ``DATA_MODULES`` (typed from their signatures) and
    ``--data.class_path``; only those given are parsed (``data_overrides``)."""
    parser.add_argument("--data.class_path", type=Optional[str],
                        help=f"another data module, e.g. one domain of a multi-domain run; unset --data options: {defaults}")
    added: set[str] = set()
    for cls in DATA_MODULES:  # an option two modules share is added once, the first module's
        keys = parser.add_class_arguments(cls, "data", as_group=not added, skip=added)
        added |= {key.removeprefix("data.") for key in keys}
    for action in parser._actions:
        if action.dest.startswith("data."):
            action.default, action.required = argparse.SUPPRESS, False


def data_overrides(args: Any) -> dict[str, Any]:
    """The ``--data.KEY`` options given to a command (``add_data_options``), grouped ones nested:
    ``{"root": ..., "loader": {"eval_batch_size": 1024}}``."""
    return strip_meta(args.data).as_dict() if "data" in args else {}
