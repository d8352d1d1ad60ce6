"""Evaluate trained runs and baselines; each command lists its options with ``--help``.

    python evaluate.py model --ckpt runs/genrec/version_0                 # metrics beside the baselines
    python evaluate.py model --ckpt generative.ckpt --data.root ../shared/data/amazon-office   # zero-shot
    python evaluate.py baseline --data.dataset plain --data.root ../shared/data/amazon-office  # text baseline
    python evaluate.py robust --clean clean.ckpt --runs attacked.ckpt defended.ckpt
    python evaluate.py compare runs/hstu/version_0 runs/sasrec/version_0  # paired bootstrap of two reports
    python evaluate.py recommend --ckpt runs/genrec/version_0 --k 100 --on all   # top-K lists to a file

``model``, ``baseline`` and ``recommend`` also take ``--data.KEY VALUE``, overriding one data option
(values parsed as YAML); a grouped one by its dotted key (``--data.loader.eval_batch_size 1024``).
"""
from __future__ import annotations

from typing import Any

from genrec import commands, prediction
from genrec.evaluation import compare, model_eval, text_baseline
from genrec.robust import report as robust_report

COMMANDS = {"model": model_eval, "baseline": text_baseline, "robust": robust_report, "compare": compare,
            "recommend": prediction}


def main(argv: list[str] | None = None) -> Any:
    return commands.main(commands.subcommand_parser("evaluate.py", __doc__, COMMANDS), argv)


if __name__ == "__main__":
    main()
