"""One way to build the argparse entry points: a command module supplies ``add_arguments(parser)`` and ``run(args)``.

``evaluate.py`` makes one subcommand of each evaluation module (``subcommand_parser``); a
single-command entry point builds its parser from the same pair (``command_parser``). ``train.py`` is LightningCLI's, whose subcommands are Lightning's.
A command that calls ``add_data_options`` also takes ``--data.KEY VALUE``, overriding one option of
the data module; it finds them in ``args.data``.
"""
from __future__ import annotations

import argparse
from types import ModuleType
from typing import Any

DATA_OPTIONS = ("--data.KEY VALUE (or --data.KEY=VALUE) sets one data module option, the value parsed as YAML, "
                "e.g. --data.root ../shared/data/ml-1m --data.max_len 50; --data.class_path picks another data module")


def summary(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().split("\n")[0]


def _configure(parser: argparse.ArgumentParser, module: ModuleType) -> argparse.ArgumentParser:
    module.add_arguments(parser)
    parser.set_defaults(run=module.run, parser=parser)
    return parser


def command_parser(prog: str, module: ModuleType) -> argparse.ArgumentParser:
    """The parser of an entry point with one command, ``module``."""
    return _configure(argparse.ArgumentParser(prog=prog, description=module.__doc__,
                                              formatter_class=argparse.RawDescriptionHelpFormatter), module)


def subcommand_parser(prog: str, description: str, commands: dict[str, ModuleType]) -> argparse.ArgumentParser:
    """A parser with one subcommand per ``(name, module)`` of ``commands``, each listed in ``--help``."""
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    for name, module in commands.items():
        _configure(sub.add_parser(name, help=summary(module), description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter), module)
    return parser


def add_data_options(parser: argparse.ArgumentParser, defaults: str) -> None:
    """Let the command take ``--data.KEY VALUE`` overrides; ``defaults`` says what they override."""
    parser.add_argument_group("data options", f"{DATA_OPTIONS}. Unset options: {defaults}.")
    parser.set_defaults(data={})


def parse(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed by ``parser``, with ``--data.KEY VALUE`` overrides in ``args.data`` for the commands that take them."""
    args, rest = parser.parse_known_args(argv)
    command = vars(args).pop("parser")
    if rest:
        if "data" not in vars(args):
            command.error(f"unrecognized arguments: {' '.join(rest)}")
        args.data = data_overrides(command, rest)
    return args


def main(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> Any:
    args = parse(parser, argv)
    return args.run(args)


def data_overrides(parser: argparse.ArgumentParser, rest: list[str]) -> dict[str, Any]:
    """``--data.KEY VALUE`` (or ``--data.KEY=VALUE``) arguments left by ``parser`` as ``{KEY: value}``,
    values parsed as YAML; anything else is a parser error."""
    import yaml

    overrides, it = {}, iter(rest)
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
    return overrides
