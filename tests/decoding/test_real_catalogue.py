"""Every item of the real Amazon Scientific catalogue can be decoded (MiniLM on its real text)."""
import pytest
import torch

from genrec.data import SequenceDataModule
from genrec.decoding import CodeTrie, constrained_beam_search
from genrec.tokenizers import ItemTokenizer, embed_texts, render_texts
from tests.conftest import shared_data


@pytest.mark.slow
def test_every_scientific_item_is_reachable_by_constrained_decoding():
    dm = SequenceDataModule(dataset="plain", root=str(shared_data("amazon-scientific")))
    tok = ItemTokenizer()  # default: 384-d MiniLM, T=4, FSQ [8,8,8,6,5]
    emb = torch.from_numpy(embed_texts(render_texts(dm.data.item_text, tok.text_template), tok.text_encoder, progress=False))
    torch.manual_seed(0)
    cat = tok.tokenize(emb)
    n = dm.num_items
    assert cat.num_items == n == 4344
    assert cat.codes[1:].unique(dim=0).shape[0] == n  # no two items share their tokens after resolution
    trie = CodeTrie(cat.codes[1:])
    # A model that wants exactly item i must get item i back, for every i.
    for lo in range(1, n + 1, 512):
        ids = torch.arange(lo, min(lo + 512, n + 1))
        want = cat.codes[ids]  # (B, T)

        def step(t, prefix):
            logp = torch.full((len(ids), prefix.shape[1], tok.codebook_size), -10.0)
            logp.scatter_(2, want[:, t, None, None].expand(-1, prefix.shape[1], 1), 0.0)
            return logp

        items, scores = constrained_beam_search(step, trie, len(ids), beam_width=1, k=1)
        assert torch.equal(items[:, 0], ids)
