"""Every committed config parses against the current code (keys, types, class paths)."""
import contextlib
import io
from pathlib import Path

import pytest
import yaml

from genrec.cli import main as train_main

ROOT = Path(__file__).resolve().parents[1] / "configs"
LAYERED = {  # config: the one it is layered on
    "generative/multidomain-gpu.yaml": "generative/multidomain.yaml",
    "generative/lodo-beauty.yaml": "generative/multidomain.yaml",
    "generative/lodo-yelp.yaml": "generative/multidomain.yaml",
    "tokenizer/lodo-beauty.yaml": "tokenizer/multidomain.yaml",
    "tokenizer/lodo-yelp.yaml": "tokenizer/multidomain.yaml",
    "encoder/lodo-beauty.yaml": "encoder/multidomain.yaml",
    "encoder/lodo-yelp.yaml": "encoder/multidomain.yaml",
    "encoder/scientific.yaml": "encoder/multidomain.yaml",
    "encoder/office-fewshot.yaml": "encoder/multidomain.yaml",
}


def configs():
    return sorted(ROOT.rglob("*.yaml"))


@pytest.mark.parametrize("path", configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses(path):
    text = yaml.safe_load(path.read_text())
    args = ["fit"]
    base = LAYERED.get(str(path.relative_to(ROOT)), None if "model" in text else "quickstart.yaml")
    if base:  # a fragment: put it on top of a full config
        args += ["--config", str(ROOT / base)]
    args += ["--config", str(path), "--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit:
        train_main(args)
    assert exit.value.code in (0, None), out.getvalue()
    printed = yaml.safe_load(out.getvalue())
    assert printed["model"]["class_path"] and printed["data"]["class_path"]


def test_smollm2_defence_differs_from_the_defence_only_in_its_encoder():
    """defence-smollm2.yaml is a full copy (a second config cannot extend a callback list): keep them in step."""
    def callbacks(name):
        return yaml.safe_load((ROOT / "robust" / name).read_text())["trainer"]["callbacks"]

    base, smol = callbacks("defence.yaml"), callbacks("defence-smollm2.yaml")
    assert smol[1]["init_args"].pop("encoder")["kind"] == "causal-lm"
    base[1]["init_args"].pop("encoder")
    assert smol == base
