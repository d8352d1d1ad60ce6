"""Evaluate a trained checkpoint on a dataset's test (or validation) split.

    python evaluate.py --ckpt runs/genrec/version_0/checkpoints/last.ckpt
    python evaluate.py --ckpt runs/genrec/version_0     # the run's best checkpoint on val/ndcg@10
    python evaluate.py --ckpt model.ckpt --data.root ../shared/data/ml-1m --split val
    python evaluate.py --ckpt generative.ckpt --data.root ../shared/data/amazon-office   # zero-shot
    python evaluate.py --baseline text --data.dataset plain --data.root ../shared/data/amazon-office
    python evaluate.py --baseline text --text-hubness 0.5 --data.dataset plain --data.root ../shared/data/amazon-office
    python evaluate.py robust --clean clean.ckpt --runs attacked.ckpt defended.ckpt   (genrec.robust.report)
    python evaluate.py compare runs/hstu/version_0 runs/sasrec/version_0   (paired bootstrap; genrec.evaluation.compare)
    python evaluate.py recommend --ckpt runs/genrec/version_0 --k 100 --on all   (top-K lists; genrec.prediction)

Data options default to those the checkpoint was trained with; ``--data.KEY VALUE`` overrides one
(values are parsed as YAML), a grouped one by its dotted key (``--data.loader.eval_batch_size 1024``). Writes ``<out>/<split>_metrics.json`` and ``<out>/<split>_report.md``
with the model's metrics beside the popularity baseline computed by the same evaluator, each with a
bootstrap 95% confidence interval over users, and ``<out>/<split>_per_user.parquet`` (each user's
target rank and metrics).
"""
from __future__ import annotations

import argparse
import sys

from genrec.evaluation.report import data_overrides, run_evaluation


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", help="checkpoint written by train.py, or a run folder (its best checkpoint)")
    parser.add_argument("--baseline", choices=["text"], help="evaluate a training-free baseline instead of a checkpoint")
    parser.add_argument("--text-template", default=None, help="item text template of --baseline text (default: '{title}. {brand}. {categories}')")
    parser.add_argument("--text-encoder", default=None, help="sentence-transformers name or folder of --baseline text (default: all-MiniLM-L6-v2; "
                        "e.g. a folder written by python -m genrec.tokenizers.finetune)")
    parser.add_argument("--text-hubness", type=float, default=0.0, metavar="C",
                        help="--baseline text scores cos(u, e_i) - C * h_i, h_i an item's mean cosine to its nearest catalogue neighbours (default 0: off)")
    parser.add_argument("--text-hubness-k", type=int, default=50, help="neighbours in h_i of --text-hubness (default 50)")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--out", default=None, help="report folder (default: the run folder of the checkpoint)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the popularity baseline")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="R",
                        help="resamples of the users for the 95%% confidence intervals (default 1000; 0: no intervals)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the metrics table, breakdown plots and example recommendations to W&B "
                             "(offline unless WANDB_MODE=online; WANDB_MODE=disabled turns it off)")
    args, rest = parser.parse_known_args(argv)
    return args, data_overrides(parser, rest)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["robust"]:
        from genrec.robust.report import main as robust_report

        return robust_report(argv[1:])
    if argv[:1] == ["recommend"]:
        from genrec.prediction import main as recommend

        return recommend(argv[1:])
    if argv[:1] == ["compare"]:
        from genrec.evaluation.compare import main as compare

        return compare(argv[1:])
    from genrec.evaluation.uncertainty import Bootstrap

    args, overrides = parse(argv)
    boot = Bootstrap(args.bootstrap, args.seed) if args.bootstrap else None
    if args.baseline == "text":
        from genrec.evaluation.text_baseline import run_text_baseline

        return run_text_baseline(overrides, split=args.split, out=args.out, encoder=args.text_encoder, template=args.text_template,
                                 hubness=args.text_hubness, hubness_k=args.text_hubness_k, boot=boot)
    if not args.ckpt:
        raise SystemExit("evaluate.py: pass --ckpt CHECKPOINT (or --baseline text with --data.KEY VALUE options)")
    from genrec.evaluation.generative import is_generative, run_generative_evaluation
    from genrec.modules.checkpoints import resolve_checkpoint

    ckpt = str(resolve_checkpoint(args.ckpt))
    run = run_generative_evaluation if is_generative(ckpt) else run_evaluation
    return run(ckpt, overrides, split=args.split, out=args.out, baseline=not args.no_baseline, boot=boot, wandb=args.wandb)


if __name__ == "__main__":
    main()
