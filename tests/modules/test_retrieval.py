import pytest
import torch
import torch.nn.functional as F

from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.modules.negatives import LossConfig


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


def module(N=20, similarity="cosine", **loss):
    torch.manual_seed(0)
    m = RetrievalModule(SASRec(dim=8, max_seq_len=6, dropout=0.0), num_items=N, loss=LossConfig(**loss),
                        similarity=similarity).eval()
    m.log = lambda *a, **k: None
    return m


def test_full_softmax_is_cross_entropy_over_the_catalogue():
    m, b = module(kind="full_softmax", temperature=0.5), batch()
    states = m.encode(b)
    valid = b["targets"] > 0
    logits = states[valid] @ m.item_vectors()[1:].T / 0.5
    expected = F.cross_entropy(logits, b["targets"][valid] - 1)
    assert torch.allclose(m.training_step(b, 0), expected, atol=1e-5)


@pytest.mark.parametrize("negatives", ["position", "sequence", "interleaved"])
def test_a_negative_equal_to_the_positive_is_masked(negatives):
    # With one item every negative equals the positive: all are masked and the loss is exactly 0.
    m = module(N=1, negatives=negatives, num_negatives=5)
    b = batch(N=1)
    assert m.training_step(b, 0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("negatives", ["position", "sequence", "interleaved"])
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


@pytest.mark.parametrize("L", [4, 6])  # 6: padded up to a multiple of G = 4
def test_dense_interleaved_loss_equals_cross_entropy_over_the_logits(L):
    m = module(negatives="interleaved", negative_groups=4, num_negatives=7, temperature=0.1, N=6)
    b = batch(L=L, N=6)
    valid = b["targets"] > 0
    states = m.encode(b)
    torch.manual_seed(9)
    dense = m._position_losses(states, b["targets"], valid)
    torch.manual_seed(9)
    logits = m._logits(states, b["targets"], valid)
    assert torch.isinf(logits).any()  # N = 6: accidental hits were masked
    assert torch.allclose(dense, -F.log_softmax(logits, dim=-1)[:, 0], atol=1e-5)


def test_interleaved_negatives_give_position_l_the_draw_l_mod_G():
    m, b = module(negatives="interleaved", negative_groups=4, num_negatives=7, temperature=0.1), batch()
    valid = b["targets"] > 0
    states, items = m.encode(b), m.item_vectors()
    torch.manual_seed(5)
    logits = m._logits(states, b["targets"], valid)
    torch.manual_seed(5)
    ids = torch.randint(1, 21, (3, 4, 7))  # (B, G, K): the module's draw
    expected = []
    for u, l in torch.nonzero(valid).tolist():
        neg = items[ids[u, l % 4]] @ states[u, l] / 0.1
        neg[ids[u, l % 4] == b["targets"][u, l]] = float("-inf")
        expected.append(torch.cat([(states[u, l] @ items[b["targets"][u, l]]).view(1) / 0.1, neg]))
    assert torch.allclose(logits, torch.stack(expected), atol=1e-5)


def test_user_weights_scale_each_users_terms():
    m, b = module(kind="full_softmax"), batch()
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
    with pytest.raises(ValueError, match="model.loss.negatives"):
        module(negatives="everywhere")
    for dead in ("batch", "subset"):  # removed: no result used them
        with pytest.raises(ValueError, match="model.loss.negatives"):
            module(negatives=dead)
    with pytest.raises(ValueError, match="model.loss.negative_groups"):
        module(negatives="interleaved", negative_groups=0)
    with pytest.raises(ValueError, match="num_items"):
        RetrievalModule(SASRec(dim=8), num_items=0)
    with pytest.raises(ValueError, match="model.similarity"):
        module(similarity="euclid")


def test_dot_similarity_scores_raw_item_embeddings_so_an_items_norm_scales_its_score_for_everyone():
    cos, dot, b = module(), module(similarity="dot"), batch()
    before = dot.item_emb.weight[5].detach().clone()  # both modules start from the same seed
    with torch.no_grad():
        for m in (cos, dot):
            m.item_emb.weight[5] *= 10.0
    assert torch.allclose(dot.item_vectors(), dot.item_emb.weight)
    assert torch.allclose(cos.item_vectors().norm(dim=-1)[1:], torch.ones(20), atol=1e-5)
    # the same state scores item 5 ten times higher under dot, unchanged under cosine
    u = cos.user_vectors(b)
    assert torch.allclose(u @ dot.item_vectors()[5], 10 * (u @ before), atol=1e-6)
    assert torch.allclose(u @ cos.item_vectors()[5], u @ F.normalize(before, dim=-1), atol=1e-6)
    # training uses the same raw vectors: the full-softmax loss is CE over state @ embedding / T
    m = module(similarity="dot", kind="full_softmax", temperature=0.5)
    valid = b["targets"] > 0
    logits = m.encode(b)[valid] @ m.item_emb.weight[1:].T / 0.5
    assert torch.allclose(m.training_step(b, 0), F.cross_entropy(logits, b["targets"][valid] - 1), atol=1e-5)
    # evaluation caches the vectors without adding them to the state (checkpoints stay loadable)
    keys = set(m.state_dict())
    m.on_validation_epoch_start()
    assert set(m.state_dict()) == keys


@pytest.mark.parametrize("loss", [LossConfig(negatives="position", num_negatives=7), LossConfig(negatives="sequence", num_negatives=7),
                                  LossConfig(negatives="interleaved", num_negatives=7, negative_groups=3),
                                  LossConfig(kind="full_softmax")])
def test_a_jagged_net_trains_on_packed_positions_as_the_padded_path_does(loss):
    """HSTU with ``attention: jagged`` is embedded, encoded and scored on the valid positions only;
    with the same weights and seed its loss (user weights included), gradients and user vectors
    equal the dense padded path's, for every negative-sampling mode."""
    from genrec.models import HSTU

    kw = dict(dim=16, num_blocks=2, num_heads=2, max_seq_len=12, dropout=0.0)
    torch.manual_seed(0)
    dense = RetrievalModule(HSTU(**kw), num_items=30, loss=loss)
    jagged = RetrievalModule(HSTU(**kw, attention="jagged", attention_block=5), num_items=30, loss=loss)
    jagged.load_state_dict(dense.state_dict())
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([12, 1, 7, 3])
    valid = torch.arange(12)[None, :] < lengths[:, None]
    items = torch.randint(1, 31, (4, 12), generator=g) * valid
    batch = {"items": items, "targets": torch.randint(1, 31, (4, 12), generator=g) * valid, "lengths": lengths,
             "timestamps": torch.cumsum(torch.randint(1, 1000, (4, 12), generator=g), 1) * valid,
             "query_time": torch.full((4,), 10**6), "user": torch.tensor([3, 0, 2, 1])}
    losses = []
    for m in (dense, jagged):
        m.log = lambda *a, **k: None
        m.set_user_weights(torch.tensor([1.0, 0.5, 0.0, 2.0]))
        torch.manual_seed(5)
        out = m.training_step(batch, 0)
        out.backward()
        losses.append(out)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(dense.named_parameters(), jagged.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(jagged.user_vectors(batch), dense.user_vectors(batch), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(jagged.encode(batch)[valid], dense.encode(batch)[valid], atol=1e-5, rtol=1e-5)
        assert jagged.encode(batch)[~valid].abs().sum() == 0
