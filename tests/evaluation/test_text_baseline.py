import pytest
import torch

from genrec.models.text_prior import TextScorer
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


def test_centring_subtracts_each_catalogues_own_mean_and_leaves_zero_rows_alone():
    from genrec.models.text_prior import center_catalogue

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(11, 6) + torch.tensor([4.0, 0, 0, 0, 0, 0]), dim=-1)  # a narrow cone
    emb[0] = 0
    emb[3] = 0  # an item without text
    centred = center_catalogue(emb, [(1, 5), (6, 10)])
    for lo, hi in ((1, 5), (6, 10)):
        rows = [i for i in range(lo, hi + 1) if i != 3]
        expected = torch.nn.functional.normalize(emb[rows] - emb[rows].mean(0), dim=-1)
        torch.testing.assert_close(centred[rows], expected)
    assert (centred[0] == 0).all() and (centred[3] == 0).all()
    # the scorer with center scores in that space, user vectors included
    batch = {"items": torch.tensor([[1, 2], [7, 0]]), "lengths": torch.tensor([2, 1])}
    scorer, reference = TextScorer(emb, center=True, domains=[(1, 5), (6, 10)]), TextScorer(centred)
    torch.testing.assert_close(scorer.user_vectors(batch) @ scorer.item_vectors().T,
                               reference.user_vectors(batch) @ reference.item_vectors().T)


def test_mean_pair_cosine_measures_how_crowded_each_catalogue_is():
    from genrec.models.text_prior import center_catalogue, mean_pair_cosine

    same = torch.zeros(9, 4)
    same[1:5] = torch.tensor([1.0, 0, 0, 0])  # domain one: every item alike
    same[5:9] = torch.eye(4)  # domain two: orthogonal items
    assert mean_pair_cosine(same, [(1, 4), (5, 8)]) == pytest.approx([1.0, 0.0], abs=1e-6)
    torch.manual_seed(0)
    cone = torch.nn.functional.normalize(torch.randn(200, 8) + 3, dim=-1)
    cone[0] = 0
    assert mean_pair_cosine(cone)[0] > 0.8 and abs(mean_pair_cosine(center_catalogue(cone))[0]) < 0.05


def test_centring_and_whitening_reorder_a_tiny_catalogue_as_computed_by_hand():
    from math import sqrt

    # items 1..4: a (1, 0), b (0, 1), c (.6, .8), d (.8, .6); catalogue mean m = (.6, .6)
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6]])
    batch = {"items": torch.tensor([[3]]), "lengths": torch.tensor([1])}  # one user who saw c

    def scores(**options):
        scorer = TextScorer(emb, **options)
        return (scorer.user_vectors(batch) @ scorer.item_vectors().T)[0, 1:]

    # plain cosines to c: a .6, b .8, d .96, so d ranks above b
    torch.testing.assert_close(scores(), torch.tensor([0.6, 0.8, 1.0, 0.96]))
    # centred: c - m = (0, .2), d - m = (.2, 0) is orthogonal to it, b - m = (-.6, .4) is not: b above d
    torch.testing.assert_close(scores(center=True), torch.tensor([-0.6 / sqrt(0.52), 0.4 / sqrt(0.52), 1.0, 0.0]))
    # whitened (whiten 1): the centred covariance [[.14, -.12], [-.12, .14]] has variance .02 along (1, 1)
    # and .26 along (1, -1); in that basis, divided by the standard deviations, c = (1, -1/√13),
    # d = (1, 1/√13), b = (-1, -5/√13), a = (-1, 5/√13): d is back above b
    whitened = torch.tensor([-18 / sqrt(532), -8 / sqrt(532), 1.0, 6 / 7])
    torch.testing.assert_close(scores(whiten=1.0), whitened)
    torch.testing.assert_close(scores(center=True, whiten=1.0), whitened)  # whitening implies centring
    # shrunk half-way to the mean variance .14: variances .08 and .2, so c = (.5, -√.1), d = (.5, √.1)
    torch.testing.assert_close(scores(whiten=0.5)[3], torch.tensor(3 / 7))
    torch.testing.assert_close(scores(center=True, whiten=0.0), scores(center=True))
    with pytest.raises(ValueError, match=r"whiten must be in \[0, 1\]"):
        TextScorer(emb, whiten=1.5)


def test_full_whitening_makes_scores_blind_to_any_linear_distortion_of_a_catalogue():
    from genrec.models.text_prior import center_catalogue

    torch.manual_seed(0)
    emb = torch.randn(41, 6)
    emb[0] = 0
    emb[7] = 0  # an item without text stays zero and out of the statistics
    distort = torch.randn(6, 6) + 3 * torch.eye(6)  # invertible, and it stretches some directions
    plain, distorted = center_catalogue(emb, whiten=1.0), center_catalogue(emb @ distort, whiten=1.0)
    torch.testing.assert_close(plain @ plain.T, distorted @ distorted.T, atol=1e-5, rtol=1e-5)
    assert (distorted[0] == 0).all() and (distorted[7] == 0).all()
    # each domain whitened by its own statistics: the first domain's rows ignore the second's
    two = center_catalogue(emb, [(1, 20), (21, 40)], whiten=1.0)
    torch.testing.assert_close(two[1:21], center_catalogue(emb[:21], whiten=1.0)[1:])
    # centring alone does not have that property
    centred, centred_distorted = center_catalogue(emb), center_catalogue(emb @ distort)
    assert not torch.allclose(centred @ centred.T, centred_distorted @ centred_distorted.T, atol=1e-3)
