"""evaluate.py's subcommands: jsonargparse options in --help, --config / --print_config, typed
options with errors naming the key, and every documented command line parses."""
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import evaluate
from genrec.data import SequenceDataModule
from genrec.data.datamodule import LoaderConfig, rebuild_options
from genrec.evaluation.runner import DATA_MODULES, data_overrides
from tests.conftest import REPO

DATA = ["--data.class_path", "--data.root", "--data.max_seq_len", "--data.loader.eval_batch_size", "--data.eval_on",
        "--data.train_user_fraction"]
OPTIONS = {
    "model": ["--ckpt", "--split", "--out", "--no-baseline", "--overwrite", "--bootstrap", "--seed", "--wandb",
              *DATA],
    "baseline": ["--template", "--encoder", "--hubness", "--hubness-k", "--center", "--whiten", "--split", "--out", "--overwrite", "--bootstrap",
                 *DATA],
    "robust": ["--clean", "--runs", "--split", "--root", "--data.root", "--out", "--overwrite"],
    "compare": ["run_a", "run_b", "--split", "--bootstrap", "--seed", "--out", "--overwrite", "--scorers"],
    "recommend": ["--ckpt", "--k", "--on", "--users", "--out", "--format", "--overwrite", "--accelerator", "--devices",
                  *DATA],
}
# Where command lines are written down for users: the README, docs/, the configs' headers and the
# docstrings that --help shows.
DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "configs").rglob("*.yaml")),
             REPO / "evaluate.py", *sorted((REPO / "genrec").rglob("*.py"))]


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        evaluate.main(argv)
    assert exit.value.code == 0
    return capsys.readouterr().out


def parse(argv):
    args = evaluate.parser().parse_args(argv)
    return args.command, args[args.command]


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
    assert f"usage: evaluate.py [options] {name}" in out
    for option in OPTIONS[name] + ["--config", "--print_config"]:
        assert option in out, option
    assert ("--data.root" in out) == ("--data.root" in OPTIONS[name])


def test_unknown_subcommand_and_bad_options_are_named(capsys):
    for argv, message in (([], 'expected "command" to be one of'), (["score"], "invalid choice: 'score'"),
                          (["--ckpt", "x.ckpt"], "invalid choice: 'x.ckpt'"),
                          (["model", "--ckpt", "x", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
                          (["model", "--ckpt", "x", "--data.root"], "argument --data.root: expected one argument"),
                          (["model", "--ckpt", "x", "--data.max_len", "3"], "unrecognized arguments: --data.max_len 3"),
                          (["model", "--ckpt", "x", "--data.loader.eval_batch_size", "big"], 'key "data.loader.eval_batch_size"'),
                          (["compare", "a", "b", "--data.root", "x"], "unrecognized arguments: --data.root x"),
                          (["model", "--split", "train", "--ckpt", "x"], 'key "split":\n  Expected a typing.Literal'),
                          (["recommend", "--ckpt", "x", "--k", "many"], 'key "k":\n  Expected a <class \'int\'>. Got value: many'),
                          (["baseline", "--hubness", "lots"], 'key "hubness"'),
                          (["robust", "--clean", "c.ckpt"], "required: robust.runs")):
        with pytest.raises(SystemExit) as exit:
            evaluate.main(argv)
        assert exit.value.code == 2
        assert message in capsys.readouterr().err, argv


def test_data_overrides_are_typed_by_the_data_modules_wherever_they_stand():
    command, args = parse(["model", "--data.root", "data/x", "--ckpt", "run", "--data.max_seq_len=20", "--split", "val",
                           "--data.dataset_options", '{"seed": 3}', "--data.loader.eval_batch_size", "1024",
                           "--data.loader.batch_size", "8", "--data.eval_on", "[beauty, toys]"])
    assert (command, args.ckpt, args.split) == ("model", "run", "val")
    # two keys of one group both kept; a multi-domain option beside the common ones
    assert data_overrides(args) == {"root": "data/x", "max_seq_len": 20, "dataset_options": {"seed": 3},
                                    "loader": {"eval_batch_size": 1024, "batch_size": 8}, "eval_on": ["beauty", "toys"]}
    assert data_overrides(parse(["recommend", "--ckpt", "run"])[1]) == {}
    # the robust report's data folder, spelt as train.py spells it too
    assert parse(["robust", "--clean", "c", "--runs", "r", "--data.root", "x"])[1].root == "x"
    options = rebuild_options(SequenceDataModule, {"loader": {"batch_size": 16}}, {"loader": {"eval_batch_size": 1024}})
    assert options["loader"] == LoaderConfig(batch_size=16, eval_batch_size=1024)


def test_data_override_of_the_wrong_type_or_name_is_named():
    for data, message in (({"max_seq_len": "twenty"}, r'"data\.max_seq_len":\n  Expected a <class \'int\'>'),
                          ({"loader": {"eval_batch_size": "big"}}, r'"data\.loader\.eval_batch_size"'),
                          ({"exclude": "all"}, r'"data\.exclude"'),
                          ({"max_len": 3}, r"does not accept option 'max_len'; known: \[.*'max_seq_len'")):
        with pytest.raises(ValueError, match=rf"bad data option for SequenceDataModule: .*{message}"):
            rebuild_options(SequenceDataModule, {}, data)


def test_print_config_gives_a_config_that_reads_back(tmp_path, capsys):
    argv = ["recommend", "--ckpt", "run", "--k", "5", "--on", "all", "--devices", "2", "--data.max_seq_len", "30",
            "--data.loader.eval_batch_size", "64"]
    printed = help_text([*argv, "--print_config"], capsys)
    assert yaml.safe_load(printed)["k"] == 5
    config = tmp_path / "recommend.yaml"
    config.write_text(printed)
    _, direct = parse(argv)
    _, read = parse(["recommend", "--config", str(config)])
    assert {**vars(read), "config": None} == {**vars(direct), "config": None}
    assert (read.devices, read.k) == (2, 5)
    _, later = parse(["recommend", "--config", str(config), "--k", "7", "--data.root", "x"])  # later arguments win
    assert later.k == 7 and data_overrides(later) == {"max_seq_len": 30, "loader": {"eval_batch_size": 64}, "root": "x"}
    config.write_text("ckpt: run\nk: five\n")
    with pytest.raises(SystemExit):
        parse(["recommend", "--config", str(config)])
    assert 'key "k"' in capsys.readouterr().err


def documented_commands(path):
    """``(line number, argv, redirect)`` of every ``python evaluate.py ...`` in ``path``: in code
    blocks, inline code (which may wrap), comment headers and docstrings, with its continuation
    lines; ``<placeholder>``s become a word, ``[--optional]`` parts are kept, shell comments and
    ``...`` dropped, and a ``> FILE`` redirection returned apart."""
    lines = path.read_text().splitlines()
    found = []
    for number, line in enumerate(lines, 1):
        for match in re.finditer(r"(?:^[\s#]*|`)(python evaluate\.py)", line):
            inline, rest = match.group().startswith("`"), iter(lines[number:])
            command = line[match.end(1):]
            while (inline and "`" not in command) or command.rstrip().endswith("\\"):
                command = command.rstrip().rstrip("\\") + " " + next(rest).lstrip(" #")
            command = re.sub(r"\s#.*", "", command.split("`")[0] if inline else command)
            command, _, redirect = command.partition(" > ")
            command = re.sub(r"\[(--[^]]*)\]", r"\1", re.sub(r"<[^>]*>", "PLACEHOLDER", command))
            argv = [a for a in shlex.split(command) if a != "..."]
            commands = [[name, *argv[1:]] for name in evaluate.COMMANDS] if argv[:1] == ["COMMAND"] else [argv]
            found += [(number, one, redirect.strip()) for one in commands]
    return found


DOCUMENTED = {path: documented_commands(path) for path in DOCUMENTS}


def test_the_documents_hold_commands_of_every_subcommand():
    named = {argv[0] for found in DOCUMENTED.values() for _, argv, _ in found if argv and not argv[0].startswith("-")}
    assert named == set(evaluate.COMMANDS)


@pytest.mark.parametrize("path", [path for path, found in DOCUMENTED.items() if found], ids=lambda p: str(p.relative_to(REPO)))
def test_every_documented_command_line_parses(path, tmp_path, monkeypatch, capsys):
    """Each line parsed as evaluate.py parses it, in the document's order in an empty folder (a
    ``--print_config > FILE`` line writes FILE for the lines after it), and its data options
    accepted by one of genrec's data modules."""
    monkeypatch.chdir(tmp_path)
    for number, argv, redirect in DOCUMENTED[path]:
        where = f"{path.relative_to(REPO)}:{number}: python evaluate.py {shlex.join(argv)}"
        try:
            command, args = parse(argv)
        except SystemExit as exit:
            out, err = capsys.readouterr()
            if exit.code != 0 or not {"--help", "--print_config"} & set(argv):
                pytest.fail(f"{where}\n{err}")
            if redirect:
                Path(redirect).write_text(out)
            continue
        data = data_overrides(args)
        named = data.pop("class_path", "").rsplit(".", 1)[-1]
        errors = []
        for cls in [c for c in DATA_MODULES if c.__name__ == named] or DATA_MODULES:
            try:
                rebuild_options(cls, {}, data)
                break
            except ValueError as err:
                errors.append(str(err))
        else:
            pytest.fail(f"{where}\n" + "\n".join(errors))
