import math

import pytest
import torch

from genrec.metrics import RankingMetrics, popularity_vectors, ranks_from_topk, target_ranks, topk_items

N = 53  # prime, so no chunk size below it divides the catalogue
CHUNKS = [1, 4, 7, 16, N, 1000]


def _case(B=12, D=3, H=9, seed=0):
    """Small-integer vectors: scores are exact in float32 and full of ties, so the id rule is exercised."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randint(-2, 3, (B, D), generator=g).float()
    items = torch.randint(-2, 3, (N + 1, D), generator=g).float()
    targets = torch.randint(1, N + 1, (B,), generator=g)
    exclude = torch.randint(0, N + 1, (B, H), generator=g)  # 0 = pad; repeats on purpose
    exclude[::3, 0] = targets[::3]  # the target in its own history must still be ranked
    return query, items, targets, exclude


def _candidates(scores, drop):
    """Candidate ids of one user, best first: score descending, then id ascending."""
    ids = [j for j in range(1, len(scores)) if j not in drop]
    return sorted(ids, key=lambda j: (-scores[j], j))


def _brute_ranks(query, items, targets, exclude=None):
    scores = (query.float() @ items.float().T).tolist()  # (B, N+1) in full
    ranks = []
    for b, t in enumerate(targets.tolist()):
        drop = set() if exclude is None else set(exclude[b].tolist()) - {t}
        ranks.append(_candidates(scores[b], drop).index(t))
    return torch.tensor(ranks)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("with_history", [False, True])
def test_target_ranks_equal_brute_force(chunk_size, with_history):
    query, items, targets, exclude = _case()
    exclude = exclude if with_history else None
    got = target_ranks(query, items, targets, exclude, chunk_size=chunk_size)
    assert got.dtype == torch.long
    assert torch.equal(got, _brute_ranks(query, items, targets, exclude))


def test_target_in_history_is_still_ranked():
    query, items, targets, _ = _case()
    others = torch.randint(1, N + 1, (len(targets), 5))
    with_target = torch.cat([others, targets[:, None], targets[:, None]], 1)
    without_target = torch.where(others == targets[:, None], 0, others)
    assert torch.equal(
        target_ranks(query, items, targets, with_target, chunk_size=8),
        target_ranks(query, items, targets, without_target, chunk_size=8),
    )


def test_constant_scores_rank_by_id():
    items = torch.randn(N + 1, 4)
    targets = torch.tensor([1, 2, 30, N])
    exclude = torch.tensor([[0, 0], [1, 5], [29, 31], [N, 1]])
    query = torch.zeros(len(targets), 4)
    assert torch.equal(target_ranks(query, items, targets, chunk_size=7), targets - 1)
    assert torch.equal(target_ranks(query, items, targets, exclude, chunk_size=7), torch.tensor([0, 0, 28, N - 2]))


def test_copies_of_the_target_vector_tie_by_id():
    g = torch.Generator().manual_seed(1)
    query = torch.randn(6, 32, generator=g)
    items = torch.randn(N + 1, 32, generator=g)
    targets = torch.tensor([20, 20, 21, 40, 3, N])
    items[[5, 19, 21, 30, 41]] = items[20].clone()  # float vectors: ties must survive the chunked matmul
    got = target_ranks(query, items, targets, chunk_size=6)
    assert torch.equal(got, _brute_ranks(query, items, targets))


def test_any_input_dtype_is_scored_in_float32():
    query, items, targets, exclude = _case()
    expected = target_ranks(query, items, targets, exclude)
    for dtype in (torch.float64, torch.bfloat16):
        assert torch.equal(target_ranks(query.to(dtype), items.to(dtype), targets, exclude, chunk_size=5), expected)


def test_bad_targets_are_refused():
    query, items, targets, _ = _case()
    with pytest.raises(ValueError):
        target_ranks(query, items, torch.zeros_like(targets))
    items[targets[0]] = torch.nan
    with pytest.raises(ValueError):
        target_ranks(query, items, targets)


@pytest.mark.parametrize("chunk_size", CHUNKS)
@pytest.mark.parametrize("k", [1, 5, 20])
def test_topk_items_equal_brute_force(chunk_size, k):
    query, items, _, exclude = _case()
    scores, ids = topk_items(query, items, k, exclude, chunk_size=chunk_size)
    full = (query @ items.T).tolist()  # (B, N+1)
    for b in range(len(query)):
        drop = set(exclude[b].tolist())
        expected = _candidates(full[b], drop)[:k]
        assert ids[b].tolist() == expected
        assert scores[b].tolist() == [full[b][j] for j in expected]
        assert 0 not in ids[b].tolist() and not drop & set(ids[b].tolist())


def test_topk_items_never_fill_with_dropped_items():
    query = torch.ones(2, 1)
    items = torch.tensor([[0.0], [-torch.inf], [5.0], [-torch.inf], [1.0]])
    exclude = torch.tensor([[2, 4], [0, 0]])
    _, ids = topk_items(query, items, 2, exclude, chunk_size=2)
    assert ids.tolist() == [[1, 3], [2, 4]]
    with pytest.raises(ValueError):
        topk_items(query, items, 3, exclude)


def test_padded_topk_items_fill_missing_candidates_with_id_0():
    query = torch.ones(2, 1)
    items = torch.tensor([[0.0], [-torch.inf], [5.0], [-torch.inf], [1.0]])
    exclude = torch.tensor([[2, 4], [0, 0]])
    scores, ids = topk_items(query, items, 3, exclude, chunk_size=2, pad=True)
    assert ids.tolist() == [[1, 3, 0], [2, 4, 1]]
    assert scores[0, 2] == -torch.inf and torch.isfinite(scores[1]).all()
    with pytest.raises(ValueError):
        topk_items(query, items, 5, exclude, pad=True)  # more than the catalogue


def test_ranks_from_topk():
    lists = torch.tensor([[4, 2, 9], [1, 2, 3], [7, 7, 8]])
    assert ranks_from_topk(lists, torch.tensor([9, 5, 7])).tolist() == [2, 3, 0]


def test_ranks_from_topk_agree_with_target_ranks_below_k():
    query, items, targets, exclude = _case()
    k = 10
    _, ids = topk_items(query, items, k, exclude, chunk_size=7)
    expected = target_ranks(query, items, targets, exclude).clamp(max=k)
    # Where the target is in its own history, topk_items drops it while target_ranks keeps it.
    kept = ~(exclude == targets[:, None]).any(1)
    assert torch.equal(ranks_from_topk(ids, targets)[kept], expected[kept])


def test_ranking_metrics_hand_computed():
    metric = RankingMetrics(hr_ks=(1, 5), ndcg_ks=(5, 10))
    metric.update(torch.tensor([0, 1, 4, 12]))
    out = metric.compute()
    assert set(out) == {"hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr"}
    assert out["hr@1"].item() == 0.25
    assert out["hr@5"].item() == 0.75
    ndcg = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4
    assert out["ndcg@5"].item() == pytest.approx(ndcg, abs=1e-15)
    assert out["ndcg@10"].item() == pytest.approx(ndcg, abs=1e-15)
    assert out["mrr"].item() == pytest.approx((1 + 1 / 2 + 1 / 5 + 1 / 13) / 4, abs=1e-15)


def test_ranking_metrics_accumulate_and_merge():
    ranks = torch.randint(0, 300, (1000,), generator=torch.Generator().manual_seed(0))
    whole, halves, left, right = (RankingMetrics() for _ in range(4))
    whole.update(ranks)
    halves.update(ranks[:400])
    halves.update(ranks[400:])
    left.update(ranks[:400])
    right.update(ranks[400:])
    left.merge_state(right)
    for other in (halves.compute(), left.compute()):
        for key, value in whole.compute().items():
            assert other[key].item() == pytest.approx(value.item(), abs=1e-15)


def test_max_rank_refuses_unknowable_cutoffs_and_bounds_mrr():
    with pytest.raises(ValueError):
        RankingMetrics(hr_ks=(10,), ndcg_ks=(20,), max_rank=10)
    metric = RankingMetrics(hr_ks=(1, 10), ndcg_ks=(10,), max_rank=10)
    metric.update(torch.tensor([0, 10, 3, 10]))
    out = metric.compute()
    assert out["hr@10"].item() == 0.5
    assert out["mrr"].item() == pytest.approx((1 + 1 / 4) / 4, abs=1e-15)
    with pytest.raises(ValueError):
        metric.update(torch.tensor([11]))


@pytest.mark.parametrize("chunk_size", [3, 1000])
def test_popularity_baseline_ranks_by_count_then_id(chunk_size):
    counts = torch.tensor([0, 5, 2, 5, 9, 0, 2, 5])  # (N+1,), item 0 = padding
    items = popularity_vectors(counts)
    assert items.shape == (8, 1) and items[0, 0] == -torch.inf
    query = torch.ones(4, 1)
    targets = torch.tensor([3, 1, 6, 5])
    exclude = torch.tensor([[4, 0], [0, 0], [3, 2], [5, 7]])
    # candidates by popularity: 4, 1, 3, 7, 2, 6, 5
    assert target_ranks(query, items, targets, chunk_size=chunk_size).tolist() == [2, 1, 5, 6]
    assert target_ranks(query, items, targets, exclude, chunk_size=chunk_size).tolist() == [1, 1, 3, 5]
    _, ids = topk_items(query, items, 3, chunk_size=chunk_size)
    assert ids[0].tolist() == [4, 1, 3]


def test_copies_of_the_target_vector_tie_by_id_also_when_excluded_and_after_an_in_place_edit():
    g = torch.Generator().manual_seed(2)
    query = torch.randn(4, 32, generator=g)
    items = torch.randn(N + 1, 32, generator=g)
    items[[5, 19, 21, 30]] = items[20].clone()
    targets = torch.tensor([20, 21, 30, 3])
    exclude = torch.tensor([[5, 0], [19, 20], [0, 0], [20, 5]])
    assert torch.equal(target_ranks(query, items, targets, exclude, chunk_size=6), _brute_ranks(query, items, targets, exclude))
    items[19] = torch.randn(32, generator=g)  # the same tensor edited: its copies are found anew
    assert torch.equal(target_ranks(query, items, targets, exclude, chunk_size=6), _brute_ranks(query, items, targets, exclude))
