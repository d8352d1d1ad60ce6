"""Evaluate a trained checkpoint on a dataset's test (or validation) split.

    python evaluate.py --ckpt runs/genrec/version_0/checkpoints/last.ckpt
    python evaluate.py --ckpt model.ckpt --data.root ../shared/data/ml-1m --split val
    python evaluate.py robust --clean clean.ckpt --runs attacked.ckpt defended.ckpt   (genrec.robust.report)

Data options default to those the checkpoint was trained with; ``--data.KEY VALUE`` overrides one
(values are parsed as YAML). Writes ``<out>/<split>_metrics.json`` and ``<out>/<split>_report.md``
with the model's metrics beside the popularity baseline computed by the same evaluator.
"""
from __future__ import annotations

import argparse
import sys

from genrec.evaluation.report import run_evaluation


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint written by train.py")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--out", default=None, help="report folder (default: the run folder of the checkpoint)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the popularity baseline")
    args, rest = parser.parse_known_args(argv)
    overrides = {}
    it = iter(rest)
    import yaml

    for key in it:
        if not key.startswith("--data."):
            parser.error(f"unknown argument {key!r}: data options are given as --data.KEY VALUE")
        name = key[len("--data."):].removeprefix("init_args.")
        if "=" in name:
            name, value = name.split("=", 1)
        else:
            value = next(it, None)
            if value is None:
                parser.error(f"{key} needs a value")
        overrides[name] = yaml.safe_load(value)
    return args, overrides


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["robust"]:
        from genrec.robust.report import main as robust_report

        return robust_report(argv[1:])
    args, overrides = parse(argv)
    return run_evaluation(args.ckpt, overrides, split=args.split, out=args.out, baseline=not args.no_baseline)


if __name__ == "__main__":
    main()
