import pytest
import torch

from genrec.models.generative import DecoderConfig, GenerativeDecoder


def net(feature_dim=0, code_identity=True, **kw):
    torch.manual_seed(0)
    config = DecoderConfig(dim=16, num_heads=2, dropout=0.0, max_seq_len=8, codes="value+text" if code_identity else "text", **kw)
    return GenerativeDecoder(levels=[4, 3], num_tokens=3, text_dim=6, config=config, feature_dim=feature_dim).eval()


def inputs(B=2, L=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 12, (B, L, 3), generator=g), torch.randn(B, L, 6, generator=g), torch.tensor([L, 3])


def test_hybrid_mask_sees_own_item_both_ways_and_never_a_later_item():
    m = net()
    codes, text, lengths = inputs()
    base = m(codes, text, lengths)
    # change the last token of item 2: every token of item 2 (also earlier ones) and later items move,
    # items 0 and 1 do not
    changed = codes.clone()
    changed[:, 2, 2] = (changed[:, 2, 2] + 1) % 12
    out = m(changed, text, lengths)
    assert torch.allclose(out[:, :2], base[:, :2], atol=1e-6)
    assert not torch.allclose(out[0, 2, 0], base[0, 2, 0])
    assert not torch.allclose(out[0, 3], base[0, 3])
    mask = m.hybrid_mask(2, codes.device)
    assert mask.tolist() == [[True, True, True, False, False, False]] * 3 + [[True] * 6] * 3
    assert m.hybrid_mask(2, codes.device) is mask  # built once per shape


def test_padding_does_not_change_real_positions_and_is_zeroed():
    m = net()
    codes, text, lengths = inputs()
    out = m(codes, text, lengths)
    noisy = codes.clone()
    noisy[1, 3:] = 7  # row 1 has length 3
    out2 = m(noisy, text, lengths)
    assert torch.allclose(out[1, :3], out2[1, :3], atol=1e-6)
    assert (out2[1, 3:] == 0).all()


def test_text_input_can_be_switched_off():
    m = net(text_input=False)
    codes, text, lengths = inputs()
    assert torch.allclose(m(codes, None, lengths), m(codes, text * 5, lengths))


def test_stepwise_queries_equal_teacher_forced_queries():
    m = net()
    codes, text, lengths = inputs()
    states = m(codes, text, lengths)[:, -1]  # (B, T, D)
    target = torch.tensor([[3, 1, 4], [11, 0, 5]])
    forced = m.next_queries(states, target)  # (B, T, D)
    for t in range(3):
        assert torch.allclose(m.step_query(states[:, t], target[:, :t]), forced[:, t], atol=1e-5)
    assert torch.allclose(m.code_table(torch.tensor([4, 2]), 1)[1], m.token_embed(torch.tensor([[4, 2, 2]]))[0, 1])


def test_code_features_enter_each_token_position_through_its_own_projection():
    m = net(feature_dim=5)
    codes, text, lengths = inputs()
    with pytest.raises(RuntimeError, match="set_code_features"):
        m(codes, text, lengths)
    feats = torch.nn.functional.normalize(torch.randn(3, 12, 5), dim=-1)
    m.set_code_features(feats)
    base, tables = m(codes, text, lengths), [m.code_table(torch.arange(12), t) for t in range(3)]
    changed = feats.clone()
    changed[2] = torch.nn.functional.normalize(torch.randn(12, 5), dim=-1)  # only position 2's features
    m.set_code_features(changed)
    assert torch.allclose(m.code_table(torch.arange(12), 0), tables[0])
    assert torch.allclose(m.code_table(torch.arange(12), 1), tables[1])
    assert not torch.allclose(m.code_table(torch.arange(12), 2), tables[2])
    assert not torch.allclose(m(codes, text, lengths), base)


def test_without_code_identity_a_code_is_embedded_by_its_text_features_alone():
    with pytest.raises(ValueError, match="feature_dim"):
        net(code_identity=False)
    m = net(feature_dim=5, code_identity=False)
    assert m.code_mlp is None and m.digit_emb is None
    feats = torch.nn.functional.normalize(torch.randn(3, 12, 5), dim=-1)
    feats[:, 7] = feats[:, 2]  # codes 2 and 7 decode to the same text chunk at every position
    m.set_code_features(feats)
    table = m.code_table(torch.arange(12), 1)
    assert torch.allclose(table[2], table[7]) and not torch.allclose(table[2], table[3])
    codes, text, lengths = inputs()
    swapped = codes.masked_fill(codes == 2, 7)
    assert torch.allclose(m(codes, text, lengths), m(swapped, text, lengths), atol=1e-6)
    # with code identity the two codes differ, and every parameter of either decoder gets a gradient
    with_id = net(feature_dim=5)
    with_id.set_code_features(feats)
    assert not torch.allclose(with_id.code_table(torch.arange(12), 1)[2], with_id.code_table(torch.arange(12), 1)[7])
    for model in (m, with_id):
        states = model(codes, text, lengths)
        model.next_queries(states[:, -1], codes[:, -1]).sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_a_rotation_of_the_text_space_is_the_same_as_rotating_every_text_input_and_code_feature():
    from genrec.models.generative import random_rotations

    R = random_rotations(3, 2, torch.Generator().manual_seed(0))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(2).expand(3, 2, 2), atol=1e-6)
    with pytest.raises(ValueError, match="code_identity"):
        net(feature_dim=2).set_rotation(R)
    m = net(feature_dim=2, code_identity=False)  # text_dim 6 = 3 tokens x 2
    with pytest.raises(ValueError, match="rotation must be"):
        m.set_rotation(R[:2])
    feats = torch.nn.functional.normalize(torch.randn(3, 12, 2), dim=-1)
    codes, text, lengths = inputs()
    m.set_code_features(feats)
    m.set_rotation(R)
    rotated = m(codes, text, lengths), m.code_table(torch.arange(12), 1)
    m.set_rotation(None)
    plain = m(codes, text, lengths)
    m.set_code_features(torch.einsum("tvf,tgf->tvg", feats, R))
    by_hand = m(codes, torch.einsum("bltf,tgf->bltg", text.view(2, 5, 3, 2), R).reshape(2, 5, 6), lengths)
    assert torch.allclose(rotated[0], by_hand, atol=1e-5) and not torch.allclose(rotated[0], plain, atol=1e-3)
    assert torch.allclose(rotated[1], m.code_table(torch.arange(12), 1), atol=1e-5)
