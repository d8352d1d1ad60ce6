"""evaluate.py's subcommands: one parser style, options in --help, clear errors."""
import subprocess
import sys

import pytest

import evaluate
from genrec import commands
from tests.conftest import REPO

OPTIONS = {
    "model": ["--ckpt", "--split", "--out", "--no-baseline", "--overwrite", "--bootstrap", "--seed", "--wandb",
              "--data.KEY VALUE"],
    "baseline": ["--template", "--encoder", "--hubness", "--hubness-k", "--center", "--split", "--out", "--overwrite", "--bootstrap",
                 "--data.KEY VALUE"],
    "robust": ["--clean", "--runs", "--split", "--root", "--out", "--overwrite"],
    "compare": ["run_a", "run_b", "--split", "--bootstrap", "--seed", "--out", "--overwrite", "--scorers"],
    "recommend": ["--ckpt", "--k", "--on", "--users", "--out", "--format", "--overwrite", "--accelerator", "--devices",
                  "--data.KEY VALUE"],
}


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        evaluate.main(argv)
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_subcommand():
    # its own process, as users run it
    out = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--help"], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    assert set(OPTIONS) == set(evaluate.COMMANDS)
    for name in OPTIONS:
        assert f"\n    {name}" in out


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_subcommand_help_lists_its_options(name, capsys):
    out = help_text([name, "--help"], capsys)
    assert f"usage: evaluate.py {name}" in out
    for option in OPTIONS[name]:
        assert option in out, option
    assert ("--data.KEY VALUE" in out) == ("--data.KEY VALUE" in OPTIONS[name])


def test_unknown_subcommand_and_bad_options_are_named(capsys):
    for argv, message in (([], "required: COMMAND"), (["score"], "invalid choice: 'score'"),
                          (["--ckpt", "x.ckpt"], "invalid choice: 'x.ckpt'"),
                          (["model", "--ckpt", "x", "--bogus", "1"], "unknown argument '--bogus'"),
                          (["model", "--ckpt", "x", "--data.root"], "--data.root needs a value"),
                          (["compare", "a", "b", "--data.root", "x"], "unrecognized arguments: --data.root x"),
                          (["model", "--split", "train", "--ckpt", "x"], "invalid choice: 'train'")):
        with pytest.raises(SystemExit) as exit:
            evaluate.main(argv)
        assert exit.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_data_overrides_are_parsed_as_yaml_wherever_they_stand():
    parser = commands.subcommand_parser("evaluate.py", "", evaluate.COMMANDS)
    args = commands.parse(parser, ["model", "--data.root", "data/x", "--ckpt", "run", "--data.max_seq_len=20",
                                   "--split", "val", "--data.init_args.dataset_options", '{"seed": 3}'])
    assert (args.command, args.ckpt, args.split) == ("model", "run", "val")
    assert args.data == {"root": "data/x", "max_seq_len": 20, "dataset_options": {"seed": 3}}
    assert args.run is evaluate.COMMANDS["model"].run
    assert commands.parse(parser, ["recommend", "--ckpt", "run"]).data == {}
