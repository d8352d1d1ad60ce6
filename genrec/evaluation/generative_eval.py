"""Evaluation of text-tokenized generative checkpoints, in-domain or zero-shot.

Protocol: the data module's leave-one-out split (test: last item, val: second-to-last) of the
dataset given by the checkpoint's data settings plus any ``--data.KEY`` overrides. When those
data are not the training catalogue, the evaluation is zero-shot: the target catalogue's items are
tokenized from their text by the checkpoint's own tokenizer (same encoder and template), decoding is
constrained to that catalogue, and nothing is trained on it. The model's top-K list (K = largest
cut-off) gives HR@k / NDCG@k; the popularity baseline (target training counts) and the
training-free text baseline (same encoder) are ranked over the full catalogue by the same
evaluator, with the same history exclusion. The report's files follow ``evaluate.py model``'s rule:
replaced only by a rerun of the same checkpoint with the same protocol, else ``--overwrite``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from genrec.evaluation.protocols import PopularityScorer, UserRanks, evaluate_scorer, protocol
from genrec.evaluation.recommendations import example_recommendations
from genrec.evaluation.report import owner, per_user_frame, report_paths, write_report
from genrec.evaluation.runs import Run, eval_parts
from genrec.models.text_prior import TextScorer
from genrec.tokenizers.text import text_coverage
from genrec.evaluation.uncertainty import Bootstrap
from genrec.metrics import RankingMetrics
from genrec.outputs import check_outputs


@torch.no_grad()
def evaluate_generative(model: Any, batches: Any, metrics: RankingMetrics,
                        domain: tuple[int, int] | None = None, record: UserRanks | None = None) -> dict[str, float]:
    for batch in batches:
        ranks = model.rank_targets(batch, metrics, domain)
        if record is not None:
            record.add(batch, ranks)
    return {k: float(v) for k, v in metrics.compute().items()}


def run_generative_evaluation(run: Run, overrides: dict[str, Any] | None = None, split: str = "test",
                              out: str | None = None, baseline: bool = True, text_decay: float = 0.3,
                              boot: Bootstrap | None = Bootstrap(), wandb: bool = False, overwrite: bool = False) -> dict:
    """Metrics of a generative ``run`` (and of the popularity and text baselines unless ``baseline``
    is False), written by ``write_report``."""
    model = run.model
    dm = run.datamodule(overrides)
    dm.setup("test")
    hp = model.hparams
    zero_shot = hp.dataset_fingerprint != dm.fingerprint
    report = {
        "command": "evaluate.py model",
        "checkpoint": str(run.path.resolve()),
        "protocol": protocol(dm, split, hp.hr_ks, hp.ndcg_ks, model.tokenizer.text_template),
        "split": split,
        "dataset": dm.data.name,
        "fingerprint": dm.fingerprint,
        "data_root": dm.hparams.get("root"),
        "trained_on": hp.dataset_fingerprint,
        "zero_shot": zero_shot,
        "users": len(dm.eval_users),
        "items": dm.num_items,
        "exclude": dm.hparams.exclude,
    }
    folder = Path(out) if out else run.folder
    target = Path(dm.hparams.root).name if dm.hparams.get("root") else dm.data.name
    name = f"{split}_zero_shot_{target}" if zero_shot else split
    check_outputs(report_paths(folder, name), owner(report), overwrite)  # before the slow part
    model.set_catalogue_from(dm)
    full = lambda: RankingMetrics(hp.hr_ks, hp.ndcg_ks, mrr=False)  # noqa: E731
    results, records, seconds = {}, {}, 0.0

    def scored(name: str, metrics: RankingMetrics) -> RankingMetrics:
        records[name] = UserRanks(metrics)
        return metrics

    if baseline:  # built once, shared by every domain
        pop, text = PopularityScorer(dm.train_item_counts()), TextScorer(model.item_text.cpu(), text_decay)
    for label, loader, domain in eval_parts(dm, split):
        start = time.perf_counter()
        metrics = scored(f"model{label}", RankingMetrics(hp.hr_ks, hp.ndcg_ks, mrr=False, max_rank=model.k))
        results[f"model{label}"] = evaluate_generative(model, loader, metrics, domain, records[f"model{label}"])
        seconds += time.perf_counter() - start
        if baseline:
            for scorer_name, scorer in ((f"popularity{label}", pop), (f"text{label}", text)):
                results[scorer_name] = evaluate_scorer(scorer, loader, scored(scorer_name, full()), domain=domain,
                                                       record=records[scorer_name])
    report |= {
        "collision_rate": model.collision_rate,
        **({"collision_rate_by_domain": model.collision_rates(dm.item_ranges)} if getattr(dm, "item_ranges", None) else {}),
        "text_template": model.tokenizer.text_template,
        "text_coverage": text_coverage(dm.data.item_text, model.tokenizer.text_template),
        "beam_width": hp.beam_width,
        "eval_seconds": round(seconds, 2),
        "metrics": results,
    }
    note = (f"\nZero-shot: trained on `{hp.dataset_fingerprint}`, evaluated on `{dm.fingerprint}` "
            f"({dm.hparams.get('root')}); collision rate before resolution {model.collision_rate:.2%}.\n"
            if report["zero_shot"] else "")
    examples = example_recommendations(model, eval_parts(dm, split)[0][1], dm.data) if wandb else None
    write_report(report, per_user_frame(records, dm, split), folder, name, boot, note, examples, overwrite)
    return report
