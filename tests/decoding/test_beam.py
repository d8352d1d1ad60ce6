import itertools

import pytest
import torch

from genrec.decoding import CodeTrie, beam_search, constrained_beam_search
from genrec.tokenizers import ItemTokenizer


def table_model(B, T, V, seed=0):
    """step_fn whose log-probs depend on the row and the whole prefix, plus a brute-force scorer."""
    g = torch.Generator().manual_seed(seed)
    tables = [torch.randn(B, V ** t, V, generator=g).log_softmax(-1) for t in range(T)]

    def index(prefix):
        return sum(prefix[..., s] * V ** s for s in range(prefix.shape[-1])) if prefix.shape[-1] else torch.zeros(prefix.shape[:-1], dtype=torch.long)

    def step(t, prefix):  # prefix (B, W, t)
        return tables[t][torch.arange(B)[:, None], index(prefix)]

    def score(codes):  # codes (N, T) -> (B, N)
        return sum(tables[t][:, index(codes[:, :t]), codes[:, t]] for t in range(T))

    return step, score


def random_catalogue(N, T, V, seed=0):
    g = torch.Generator().manual_seed(seed)
    all_tuples = torch.tensor(list(itertools.product(range(V), repeat=T)))
    return all_tuples[torch.randperm(len(all_tuples), generator=g)[:N]]


def test_trie_lists_each_nodes_children():
    codes = torch.tensor([[1, 2], [1, 0], [3, 1]])
    trie = CodeTrie(codes)
    c, nxt, valid = trie.children(0, torch.tensor([0]))
    assert c[valid].tolist() == [1, 3]
    c, nxt, valid = trie.children(1, nxt[valid])
    assert c[valid].tolist() == [0, 2, 1] and nxt[valid].tolist() == [2, 1, 3]


def test_trie_refuses_unresolved_collisions():
    with pytest.raises(ValueError, match="resolve collisions"):
        CodeTrie(torch.tensor([[1, 2], [1, 2]]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_exact_top_k_of_a_brute_force_search(seed):
    B, T, V, N, k = 3, 3, 5, 40, 10
    codes = random_catalogue(N, T, V, seed)
    step, score = table_model(B, T, V, seed)
    items, scores = constrained_beam_search(step, CodeTrie(codes), B, beam_width=N, k=k)
    brute = score(codes)  # (B, N)
    best_scores, best = brute.topk(k, dim=1)
    assert torch.equal(items, best + 1)
    assert torch.allclose(scores, best_scores, atol=1e-5)


def test_narrow_beam_returns_only_distinct_catalogue_items_and_honours_exclusion():
    B, T, V, N, k = 4, 3, 6, 100, 10
    codes = random_catalogue(N, T, V, 3)
    item_ids = torch.arange(N) * 7 + 5  # arbitrary ids
    step, score = table_model(B, T, V, 3)
    exclude = torch.stack([item_ids[torch.randperm(N)[:30]] for _ in range(B)])
    items, scores = constrained_beam_search(step, CodeTrie(codes, item_ids), B, beam_width=3, k=k, exclude=exclude)
    for row in range(B):
        assert len(set(items[row].tolist())) == k
        assert set(items[row].tolist()) <= set(item_ids.tolist())
        assert not set(items[row].tolist()) & set(exclude[row].tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_small_catalogue_pads_with_item_zero():
    codes = torch.tensor([[0, 1], [1, 1], [2, 0]])
    step, _ = table_model(2, 2, 3)
    items, scores = constrained_beam_search(step, CodeTrie(codes), 2, 4, k=5, exclude=torch.tensor([[2, 0], [0, 0]]))
    assert sorted(items[0].tolist()) == [0, 0, 0, 1, 3] and sorted(items[1].tolist()) == [0, 0, 1, 2, 3]
    assert torch.isinf(scores[items == 0]).all() and torch.isfinite(scores[items > 0]).all()


def test_forced_collisions_still_decode_to_every_item():
    # 60 items of identical text: the tokenizer gives them one tuple, resolution must separate them.
    torch.manual_seed(0)
    tok = ItemTokenizer(embed_dim=8, num_tokens=2, levels=[8, 8], hidden_dim=4)
    emb = torch.randn(1, 8).expand(61, 8).clone()
    emb[0] = 0
    cat = tok.tokenize(emb)
    assert cat.collisions == 59
    trie = CodeTrie(cat.codes[1:])
    V = tok.codebook_size
    step = lambda t, prefix: torch.zeros(*prefix.shape[:2], V)  # uniform model: only the trie decides
    items, scores = constrained_beam_search(step, trie, 1, beam_width=60, k=60)
    assert sorted(items[0].tolist()) == list(range(1, 61))


def test_unconstrained_beam_search_matches_brute_force_over_all_tuples():
    B, T, V = 2, 3, 4
    step, score = table_model(B, T, V, 5)
    tuples, scores = beam_search(step, B, T, V, beam_width=V ** T)
    every = torch.tensor(list(itertools.product(range(V), repeat=T)))
    brute = score(every)
    assert torch.allclose(scores, brute.sort(1, descending=True).values, atol=1e-5)
    assert torch.allclose(score(tuples[0])[0], scores[0], atol=1e-5)
