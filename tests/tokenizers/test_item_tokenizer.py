import numpy as np
import pandas as pd
import pytest
import torch

from genrec.data import DataError
from genrec.tokenizers import ItemTokenizer, render_texts, resolve_collisions
from genrec.tokenizers.text import text_coverage


def test_forward_reconstructs_with_the_embedding_shape():
    tok = ItemTokenizer(embed_dim=16, num_tokens=4, levels=[4, 3], hidden_dim=8)
    recon, values = tok(torch.randn(5, 16))
    assert recon.shape == (5, 16) and values.shape == (5, 4, 2)


def test_embedding_must_split_into_equal_chunks():
    with pytest.raises(ValueError, match="equal chunks"):
        ItemTokenizer(embed_dim=10, num_tokens=4)


def test_duplicate_items_are_made_unique_and_the_first_keeps_its_tokens():
    torch.manual_seed(0)
    tok = ItemTokenizer(embed_dim=8, num_tokens=2, levels=[5, 5], hidden_dim=4)
    x = torch.randn(30, 8)
    x[5] = x[4]
    x[9] = x[4]
    emb = torch.cat([torch.zeros(1, 8), x])
    cat = tok.tokenize(emb)
    raw = tok.fsq.codes_to_indices(tok.fsq(tok.latents(x)))
    assert cat.codes.shape == (31, 2)
    assert cat.codes[1:].unique(dim=0).shape[0] == 30  # every item distinct, so every item is reachable
    assert cat.collisions == 30 - raw.unique(dim=0).shape[0] and cat.collisions >= 2
    assert torch.equal(cat.codes[5], raw[4])  # item 5 (row 4) is the first of its group
    assert cat.collision_rate == pytest.approx(cat.collisions / 30)
    assert int(cat.collided.sum()) == cat.collisions and cat.collided[[6, 10]].all() and not cat.collided[[0, 5]].any()
    assert torch.equal(tok.tokenize(emb).codes, cat.codes)  # deterministic


def test_resolution_moves_to_the_nearest_free_code():
    codebook = np.array([[0.0], [1.0], [2.0], [3.0]])
    codes = np.array([[7, 1], [7, 1], [7, 1], [8, 1]])
    latent = np.array([[1.0], [1.1], [0.2], [1.0]])
    out, moved = resolve_collisions(codes, latent, codebook)
    assert moved == 2
    assert out.tolist() == [[7, 1], [7, 2], [7, 0], [8, 1]]


def test_resolution_fails_clearly_when_a_prefix_is_full():
    with pytest.raises(ValueError, match="completions"):
        resolve_collisions(np.zeros((3, 2), int), np.zeros((3, 1)), np.array([[0.0], [1.0]]))


def test_template_drops_empty_fields_and_names_missing_columns():
    text = pd.DataFrame({"title": ["", "Pen.", "Ink"], "brand": ["", "", "Acme"]})
    assert render_texts(text, "{title}. {brand}") == ["", "Pen", "Ink. Acme"]
    with pytest.raises(DataError, match="categories"):
        render_texts(text, "{categories}. {genre}")
    with pytest.raises(DataError, match="items file"):
        render_texts(None, "{title}")


def test_a_field_the_catalogue_lacks_renders_empty_and_is_counted(caplog):
    """One template for domains with different fields: a titles-only catalogue renders its titles,
    warns about the missing fields and counts them; an item with no text at all is counted too."""
    titles = pd.DataFrame({"title": ["", "Heat (1995)", " ", "Up"]})
    with caplog.at_level("WARNING"):
        assert render_texts(titles, "{title}. {brand}. {categories}", "dataset 'plain'") == ["", "Heat (1995)", "", "Up"]
    assert "['brand', 'categories']" in caplog.text and "dataset 'plain'" in caplog.text
    assert text_coverage(titles, "{title}. {brand}. {categories}") == {
        "title": 1, "brand": 3, "categories": 3, "all fields": 1}
