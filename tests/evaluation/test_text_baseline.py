import pytest
import torch

from genrec.evaluation.text_baseline import TextScorer


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
