"""Evaluate trained runs and baselines; each command lists its options with ``--help``.

    python evaluate.py model --ckpt runs/genrec/version_0                 # metrics beside the baselines
    python evaluate.py model --ckpt generative.ckpt --data.root ../shared/data/amazon-office   # zero-shot
    python evaluate.py baseline --data.dataset plain --data.root ../shared/data/amazon-office  # text baseline
    python evaluate.py robust --clean clean.ckpt --runs attacked.ckpt defended.ckpt
    python evaluate.py compare runs/hstu-ml-1m/version_0 runs/sasrec-ml-1m/version_0  # paired bootstrap of two reports
    python evaluate.py recommend --ckpt runs/genrec/version_0 --k 100 --on all   # top-K lists to a file
    python evaluate.py model --ckpt runs/genrec/version_0 --print_config > eval.yaml   # the options as YAML ...
    python evaluate.py model --config eval.yaml --split val                          # ... read back, then overridden

The parser is jsonargparse's, as train.py's LightningCLI: options are typed and checked, and every
command takes ``--config`` (a YAML of its options) and ``--print_config``. ``model``, ``baseline``
and ``recommend`` also take ``--data.KEY VALUE``, overriding one data option, typed and documented
by the data modules' signatures as train.py reads them; a grouped one by its dotted key
(``--data.loader.eval_batch_size 1024``).
"""
from __future__ import annotations

import argparse
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from genrec import prediction
from genrec.evaluation import compare, model_eval, text_baseline
from genrec.robust import report as robust_report

COMMANDS = {"model": model_eval, "baseline": text_baseline, "robust": robust_report, "compare": compare,
            "recommend": prediction}


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (each option's type and default), the docstrings' example lines kept as written."""


def parser() -> ArgumentParser:
    """One subcommand per command module, its options from the module's ``add_arguments``."""
    top = ArgumentParser(prog="evaluate.py", description=__doc__, formatter_class=HelpFormatter)
    subcommands = top.add_subcommands(dest="command", title="commands", metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = ArgumentParser(description=module.__doc__, formatter_class=HelpFormatter)
        command.add_argument("--config", action=ActionConfigFile, help="a YAML file of this command's options")
        module.add_arguments(command)
        subcommands.add_subcommand(name, command, help=module.__doc__.strip().split("\n")[0])
    return top


def main(argv: list[str] | None = None) -> Any:
    args = parser().parse_args(argv)
    return COMMANDS[args.command].run(args[args.command])


def cli(argv: list[str] | None = None) -> int:
    """``main`` for the command line: a user's mistake (a bad file, option or pairing, an output that
    exists) ends in its message and exit code 2, without a traceback (``GENREC_TRACEBACK=1`` keeps it)."""
    import os
    import sys

    try:
        main(argv)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        if os.environ.get("GENREC_TRACEBACK"):
            raise
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
