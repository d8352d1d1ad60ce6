import json
import os
import subprocess
import sys

import numpy as np
import pytest

from genrec.data import SequenceDataModule
from genrec.finetune_encoder import consecutive_pairs, finetune_encoder
from genrec.tokenizers.text import embed_texts
from tests.conftest import REPO

TITLES = {"a": "red apple", "b": "steel hammer", "c": "blue ocean", "d": "paper notebook",
          "e": "green pear", "f": "copper wire", "g": "violin bow", "h": "garden hose"}


def dataset(tmp_path, repeat=False):
    # every user: a, b, then two items; the last two are validation and test targets
    rows = ["user_id,item_id"]
    tails = ["cd", "ef", "gh", "dc", "fe", "hg"]
    for u, tail in enumerate(tails):
        rows += [f"u{u},{i}" for i in "ab" + tail]
    rows += [f"u9,{i}" for i in "aabcd"] if repeat else []  # a repeated item: no pair, counted
    (tmp_path / "interactions.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "items.jsonl").write_text("".join(json.dumps({"item_id": k, "title": v}) + "\n" for k, v in TITLES.items()))
    return tmp_path


def test_pairs_come_from_training_parts_only(tmp_path):
    dm = SequenceDataModule(dataset="plain", root=str(dataset(tmp_path)))
    dm.setup("fit")
    pairs, repeats = consecutive_pairs(dm)
    ids = list(dm.data.item_ids)
    a, b = ids.index("a"), ids.index("b")
    assert pairs.tolist() == [[a, b]] * 6 and repeats == 0  # the validation and test targets never enter a pair
    (tmp_path / "r").mkdir()
    summary = finetune_encoder([str(dataset(tmp_path / "r", repeat=True))], str(tmp_path / "enc"), template="{title}",
                               steps=1, batch_size=2)
    assert summary["pairs"] == 7 and summary["repeats_left_out"] == 1  # u9 trains on a, a, b: a-a left out, a-b kept


def test_finetuning_pulls_consecutive_items_together_and_saves_a_loadable_encoder(tmp_path):
    (tmp_path / "data").mkdir()
    root = dataset(tmp_path / "data")
    before = embed_texts(list(TITLES.values()), use_cache=False, progress=False)
    out = tmp_path / "encoder"
    summary = finetune_encoder([str(root)], str(out), template="{title}", steps=6, batch_size=2, lr=1e-4)
    assert summary["pairs"] == 6 and summary["repeats_left_out"] == 0 and (out / "genrec_finetune.json").is_file()
    after = embed_texts(list(TITLES.values()), encoder=str(out), use_cache=False, progress=False)
    assert after.shape == before.shape and np.allclose(np.linalg.norm(after, axis=1), 1, atol=1e-5)
    assert after[0] @ after[1] > before[0] @ before[1] + 0.05  # "red apple" → "steel hammer"
    with pytest.raises(ValueError, match="fewer than batch_size"):
        finetune_encoder([str(root)], str(tmp_path / "x"), template="{title}", steps=1, batch_size=64)



def test_python_m_genrec_finetune_encoder_runs():
    proc = subprocess.run([sys.executable, "-m", "genrec.finetune_encoder", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "python -m genrec.finetune_encoder" in proc.stdout and "--root" in proc.stdout
