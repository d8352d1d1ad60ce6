"""The text-embedding cache under $GENREC_CACHE."""
import pytest

from genrec.errors import DataError
from genrec.tokenizers import text


def test_unwritable_embedding_cache_fails_before_encoding(tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "not-a-folder"))
    loaded = []
    monkeypatch.setattr(text, "_load_model", lambda path: loaded.append(path))
    with pytest.raises(DataError, match=r"cannot write the text-embedding cache .*not-a-folder.*GENREC_CACHE"):
        text.embed_texts(["a title"], progress=False)
    assert loaded == []  # the encoder was never loaded, let alone run
