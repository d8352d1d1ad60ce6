import pytest
import torch

from genrec.evaluation.baselines import TextScorer
from genrec.models.text_prior import text_hubness


def test_user_vector_is_the_recency_weighted_mean_of_the_history():
    emb = torch.eye(4)  # items 1..3 are orthogonal unit vectors
    scorer = TextScorer(emb, decay=0.5)
    batch = {"items": torch.tensor([[1, 2, 3], [2, 0, 0]]), "lengths": torch.tensor([3, 1])}
    users = scorer.user_vectors(batch)
    expected = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(users[0], expected / expected.norm())
    assert torch.allclose(users[1], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    scores = users @ scorer.item_vectors().T
    assert scores[0].argmax() == 3  # the most recent item's direction scores highest


def test_decay_must_be_in_range():
    with pytest.raises(ValueError, match="decay"):
        TextScorer(torch.eye(3), decay=0.0)


def brute_hubness(emb, k, lo, hi):
    unit = torch.nn.functional.normalize(emb[lo : hi + 1], dim=-1)
    sims = unit @ unit.T
    sims.fill_diagonal_(float("-inf"))
    return sims.topk(k, dim=1).values.mean(1)


def test_text_hubness_is_the_mean_cosine_to_the_k_nearest_other_items_of_the_same_domain():
    torch.manual_seed(0)
    emb = torch.randn(31, 8)
    emb[0] = 0
    unit = torch.nn.functional.normalize(emb, dim=-1)
    h = text_hubness(unit, 5, chunk=7)  # chunks cut rows at every 7th item
    assert h[0] == 0 and torch.allclose(h[1:], brute_hubness(emb, 5, 1, 30), atol=1e-6)
    assert torch.allclose(text_hubness(unit, 100)[1:], brute_hubness(emb, 29, 1, 30), atol=1e-6)  # k capped at N-1
    # two domains: neighbours only from the item's own domain; ids outside every domain get 0
    h = text_hubness(unit, 3, domains=[(1, 12), (13, 28)])
    assert torch.allclose(h[1:13], brute_hubness(emb, 3, 1, 12), atol=1e-6)
    assert torch.allclose(h[13:29], brute_hubness(emb, 3, 13, 28), atol=1e-6)
    assert (h[29:] == 0).all()
    # a domain above max_reference: neighbours from a fixed sample, k scaled by its share, never the item itself
    sampled = text_hubness(unit, 6, max_reference=15)
    assert torch.equal(sampled, text_hubness(unit, 6, max_reference=15, chunk=4))
    assert (sampled[1:] <= brute_hubness(emb, 3, 1, 30) + 1e-6).all()  # k = round(6 * 15/30) = 3 of a subset
    assert (sampled[1:] < 1 - 1e-4).all()
    with pytest.raises(ValueError, match="at least 1"):
        text_hubness(unit, 0)


def test_the_hubness_correction_subtracts_c_times_h_from_every_users_cosines():
    torch.manual_seed(0)
    emb = torch.randn(21, 8)
    emb[0] = 0
    batch = {"items": torch.tensor([[1, 2, 3], [4, 0, 0]]), "lengths": torch.tensor([3, 1])}
    plain, corrected = TextScorer(emb), TextScorer(emb, hubness=0.5, hubness_k=4)
    scores = corrected.user_vectors(batch) @ corrected.item_vectors().T
    h = torch.cat([torch.zeros(1), brute_hubness(emb, 4, 1, 20)])
    assert torch.allclose(scores, plain.user_vectors(batch) @ plain.item_vectors().T - 0.5 * h, atol=1e-6)
