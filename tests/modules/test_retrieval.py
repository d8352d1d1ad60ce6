import pytest
import torch
import torch.nn.functional as F

from genrec.models import SASRec
from genrec.modules import RetrievalModule


def batch(B=3, L=6, N=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N + 1, (B, L), generator=g)
    lengths = torch.tensor([L, 4, 2])[:B]
    pad = torch.arange(L)[None, :] >= lengths[:, None]
    items[pad] = 0
    targets = torch.randint(1, N + 1, (B, L), generator=g)
    targets[pad] = 0
    return {"user": torch.arange(B), "items": items, "timestamps": torch.zeros(B, L, dtype=torch.long),
            "targets": targets, "lengths": lengths}


def module(N=20, **kw):
    torch.manual_seed(0)
    m = RetrievalModule(SASRec(dim=8, max_seq_len=6, dropout=0.0), num_items=N, **kw).eval()
    m.log = lambda *a, **k: None
    return m


def test_full_softmax_is_cross_entropy_over_the_catalogue():
    m, b = module(loss="full_softmax", temperature=0.5), batch()
    states = m.encode(b)
    valid = b["targets"] > 0
    logits = states[valid] @ m.item_vectors()[1:].T / 0.5
    expected = F.cross_entropy(logits, b["targets"][valid] - 1)
    assert torch.allclose(m.training_step(b, 0), expected, atol=1e-5)


@pytest.mark.parametrize("negatives", ["position", "sequence", "batch"])
def test_a_negative_equal_to_the_positive_is_masked(negatives):
    # With one item every negative equals the positive: all are masked and the loss is exactly 0.
    m = module(N=1, negatives=negatives, num_negatives=5)
    b = batch(N=1)
    assert m.training_step(b, 0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("negatives", ["position", "sequence", "batch"])
def test_sampled_softmax_matches_a_hand_computation(negatives):
    m, b = module(negatives=negatives, num_negatives=7, temperature=0.1), batch()
    torch.manual_seed(123)
    loss = m.training_step(b, 0)
    torch.manual_seed(123)
    logits = m._logits(m.encode(b), b["targets"], b["targets"] > 0)
    assert logits.shape == ((b["targets"] > 0).sum().item(), 8)
    assert torch.allclose(loss, -F.log_softmax(logits, dim=-1)[:, 0].mean(), atol=1e-6)
    # the positive logit is the cosine of state and target item over the temperature
    states = m.encode(b)[b["targets"] > 0]
    pos = (states * m.item_vectors()[b["targets"][b["targets"] > 0]]).sum(-1) / 0.1
    assert torch.allclose(logits[:, 0], pos, atol=1e-5)


def test_user_weights_scale_each_users_terms():
    m, b = module(loss="full_softmax"), batch()
    valid = b["targets"] > 0
    per_pos = F.cross_entropy(m._logits(m.encode(b), b["targets"], valid), b["targets"][valid], reduction="none")
    m.set_user_weights(torch.tensor([1.0, 0.0, 2.0]))
    rows = torch.nonzero(valid)[:, 0]
    expected = (per_pos * torch.tensor([1.0, 0.0, 2.0])[rows]).sum() / valid.sum()
    assert torch.allclose(m.training_step(b, 0), expected, atol=1e-6)


def test_recommend_returns_catalogue_items_outside_the_exclusion():
    m, b = module(), batch()
    exclude = b["items"]
    ids, scores = m.recommend(b, k=5, exclude=exclude)
    assert ids.shape == (3, 5) and (ids >= 1).all() and (ids <= 20).all()
    for row, ex in zip(ids.tolist(), exclude.tolist()):
        assert not set(row) & (set(ex) - {0})
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="model.negatives"):
        module(negatives="everywhere")
    with pytest.raises(ValueError, match="num_items"):
        RetrievalModule(SASRec(dim=8), num_items=0)
