import math

import pytest
import torch

from genrec.models import jagged_attention
from genrec.models import HSTU, SASRec, TimeBias
from genrec.models.hstu import time_buckets


def _inputs(B=3, L=12, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g)
    ts = torch.cumsum(torch.randint(1, 100_000, (B, L), generator=g), dim=1)
    lengths = torch.tensor([L, L - 4, 3])[:B]
    return x, ts, lengths


@pytest.mark.parametrize("make", [
    lambda: HSTU(dim=16, num_blocks=2, num_heads=2, max_seq_len=12, dropout=0.0),
    lambda: SASRec(dim=16, num_blocks=2, num_heads=2, max_seq_len=12, dropout=0.0),
    lambda: SASRec(dim=16, num_blocks=2, num_heads=2, max_seq_len=12, dropout=0.0, norm="post"),
])
def test_changing_a_later_item_never_changes_an_earlier_output(make):
    torch.manual_seed(0)
    net = make().eval()
    x, ts, lengths = _inputs()
    base = net(x, ts, lengths)
    for t in range(1, 12):
        x2, ts2 = x.clone(), ts.clone()
        x2[:, t:] = torch.randn_like(x2[:, t:])
        ts2[:, t:] += 777_777  # later timestamps change too
        out = net(x2, ts2, lengths)
        # position t-1's query time is t's time, so only strictly earlier positions are pinned.
        keep = t - 1 if isinstance(net, HSTU) else t
        assert torch.allclose(out[:, :keep], base[:, :keep], atol=1e-5), t
        assert not torch.allclose(out[:, t:], base[:, t:], atol=1e-5)


def test_padding_does_not_change_valid_outputs():
    torch.manual_seed(0)
    for net in (HSTU(dim=16, max_seq_len=20, dropout=0.0).eval(), SASRec(dim=16, max_seq_len=20, dropout=0.0).eval()):
        x, ts, _ = _inputs(B=1, L=8)
        lengths = torch.tensor([8])
        short = net(x, ts, lengths)
        x_pad = torch.cat([x, torch.randn(1, 5, 16)], dim=1)
        ts_pad = torch.cat([ts, torch.zeros(1, 5, dtype=ts.dtype)], dim=1)
        padded = net(x_pad, ts_pad, lengths)
        assert torch.allclose(short, padded[:, :8], atol=1e-5)


def test_time_bucket_values():
    dt = torch.tensor([0, 1, -1, 2, 3, 10, 100, 86_400, -86_400, 10**9])
    # floor(ln(max(|dt|, 1)) / 0.301), written out: ln 2 / .301 = 2.30, ln 10 / .301 = 7.65, ...
    assert time_buckets(dt).tolist() == [0, 0, 0, 2, 3, 7, 15, 37, 37, 68]


def test_time_bucket_clamps_at_num_buckets():
    assert time_buckets(torch.tensor([10**18]), num_buckets=10).item() == 10


def test_hstu_matches_the_formula_for_one_layer():
    """Recompute one HSTU layer by hand from its weights: A = SiLU(QKᵀ + rab) / n, causal, no softmax."""
    torch.manual_seed(0)
    net = HSTU(dim=8, num_blocks=1, num_heads=1, max_seq_len=6, dropout=0.0).eval()
    x, ts, _ = _inputs(B=1, L=6, D=8)
    lengths = torch.tensor([6])
    layer = net.layers[0]
    h = x * math.sqrt(8) + net.pos_emb.weight[:6]
    u, v, q, k = torch.split(torch.nn.functional.silu(layer.uvqk(layer.norm_in(h))), 8, dim=-1)
    query_t = torch.cat([ts[:, 1:], ts[:, -1:]], dim=1)
    rel = torch.arange(6)[:, None] - torch.arange(6)[None, :] + 5
    rab = layer.rab.pos_w[rel] + layer.rab.time_w[time_buckets(query_t[0][:, None] - ts[0][None, :])]
    a = torch.nn.functional.silu(q[0] @ k[0].T + rab) / 6 * torch.tril(torch.ones(6, 6))
    y = h[0] + layer.out(u[0] * layer.norm_attn(a @ v[0]))
    expected = torch.nn.functional.normalize(y, dim=-1)
    assert torch.allclose(net(x, ts, lengths)[0], expected, atol=1e-5)


def test_query_time_sets_the_last_positions_time_bias_only():
    """The last valid position's query time is the predicted interaction's (the batch's
    ``query_time``); earlier positions use the next item's time either way."""
    torch.manual_seed(0)
    net = HSTU(dim=8, num_blocks=2, max_seq_len=6, dropout=0.0).eval()
    with torch.no_grad():
        for layer in net.layers:
            layer.rab.time_w.normal_(0, 1.0)  # a time bias large enough to matter
    x, ts, _ = _inputs(B=2, L=6, D=8)
    lengths = torch.tensor([6, 4])
    own = ts.gather(1, (lengths - 1)[:, None]).squeeze(1)
    later = own + 10**7
    base = net(x, ts, lengths)  # no query time: the last item's own time
    assert torch.allclose(net(x, ts, lengths, query_time=own), base, atol=1e-6)
    moved = net(x, ts, lengths, query_time=later)
    for r, n in enumerate(lengths.tolist()):
        assert torch.allclose(moved[r, : n - 1], base[r, : n - 1], atol=1e-6)  # causal: earlier positions unchanged
        assert not torch.allclose(moved[r, n - 1], base[r, n - 1], atol=1e-3)
    last = HSTU(dim=8, num_blocks=2, max_seq_len=6, dropout=0.0, time_bias=TimeBias(query_time="last")).eval()
    last.load_state_dict(net.state_dict())
    assert torch.allclose(last(x, ts, lengths, query_time=later), base, atol=1e-6)
    with pytest.raises(ValueError, match="query_time"):
        HSTU(time_bias=TimeBias(query_time="now"))


def test_too_long_sequence_is_refused():
    net = HSTU(dim=8, max_seq_len=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        net(torch.randn(1, 5, 8), torch.zeros(1, 5, dtype=torch.long), torch.tensor([5]))


def test_relative_time_bias_gradient():
    from genrec.models.hstu import _BucketBias

    w = torch.randn(7, dtype=torch.double, requires_grad=True)
    base = torch.randn(4, 4, dtype=torch.double, requires_grad=True)
    idx = torch.randint(0, 7, (3, 4, 4), dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda w, base: _BucketBias.apply(w, idx, base), (w, base))


def test_fast_time_buckets_equal_the_reference():
    """HSTU's in-place float64 buckets equal ``time_buckets`` on real-scale unix times."""
    torch.manual_seed(0)
    net = HSTU(dim=8, max_seq_len=30)
    ts = 956_703_932 + torch.cumsum(torch.randint(0, 3 * 10**6, (4, 30)), dim=1)
    ts[:, 5] = ts[:, 4]  # equal times: bucket 0
    lengths = torch.tensor([30, 17, 1, 2])
    B, L = ts.shape
    nxt = torch.cat([ts[:, 1:], ts[:, -1:]], dim=1)
    last = torch.arange(L)[None, :] >= (lengths - 1)[:, None]
    query_t = torch.where(last, ts.gather(1, (lengths - 1)[:, None]).expand(B, L), nxt)
    expected = time_buckets(query_t[:, :, None] - ts[:, None, :])
    assert torch.equal(net._time_buckets(ts, lengths).long(), expected)
    assert expected.unique().numel() > 10


def test_compiled_attention_matches_eager():
    torch.manual_seed(0)
    eager = HSTU(dim=16, num_heads=2, max_seq_len=10, dropout=0.0)
    compiled = HSTU(dim=16, num_heads=2, max_seq_len=10, dropout=0.0, attention="compiled")
    compiled.load_state_dict(eager.state_dict())
    x, ts, lengths = _inputs(B=3, L=10, D=16)
    out_e, out_c = eager(x, ts, lengths), compiled(x, ts, lengths)
    assert torch.allclose(out_e, out_c, atol=1e-5)
    out_e.sum().backward()
    out_c.sum().backward()
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-4), name


@pytest.mark.parametrize("block", [1, 4, 7, 64])
@pytest.mark.parametrize("use_time", [True, False])
def test_blocked_attention_equals_dense_forward_and_gradients(block, use_time):
    """Query blocks of every size (one query, uneven last block, one block for all) give the dense
    path's outputs and gradients, with padding, the causal mask and the relative biases."""
    torch.manual_seed(0)
    kw = dict(dim=16, num_blocks=2, num_heads=2, max_seq_len=20, dropout=0.0, time_bias=TimeBias(enabled=use_time))
    dense, blocked = HSTU(**kw), HSTU(**kw, attention="blocked", attention_block=block)
    blocked.load_state_dict(dense.state_dict())
    with torch.no_grad():  # non-trivial bias tables, so their gradients are compared on real values
        for net in (dense, blocked):
            for layer in net.layers:
                layer.rab.pos_w.copy_(torch.linspace(-0.5, 0.5, len(layer.rab.pos_w)))
                if use_time:
                    layer.rab.time_w.copy_(torch.linspace(0.3, -0.3, len(layer.rab.time_w)))
    x, ts, lengths = _inputs(B=3, L=18, D=16)
    x_d, x_b = x.clone().requires_grad_(), x.clone().requires_grad_()
    query = ts[:, -1] + 5_000
    out_d, out_b = dense(x_d, ts, lengths, query), blocked(x_b, ts, lengths, query)
    torch.testing.assert_close(out_b, out_d, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out_d)
    valid = (torch.arange(18)[None, :] < lengths[:, None]).unsqueeze(-1)
    (out_d * w * valid).sum().backward()
    (out_b * w * valid).sum().backward()
    torch.testing.assert_close(x_b.grad, x_d.grad, atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(dense.named_parameters(), blocked.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)
    assert dense.layers[0].rab.pos_w.grad.abs().sum() > 0


@pytest.mark.parametrize("block", [1, 5, 64])
@pytest.mark.parametrize("use_time", [True, False])
@pytest.mark.parametrize("budget", ["one chunk", "many chunks"])
def test_jagged_batches_equal_the_padded_path(block, use_time, budget, monkeypatch):
    """Packed sequences of very different lengths (1 to 20), every block size, the blocks in one
    chunk with the bias indices kept for the batch or in many chunks rebuilt each time: the valid
    positions' outputs and all gradients equal the dense padded path's; the padding's are zero."""
    if budget == "many chunks":
        monkeypatch.setattr(jagged_attention, "CHUNK_ELEMENTS", 2 * block * 20)
        monkeypatch.setattr(jagged_attention, "CACHE_ELEMENTS", 0)
    torch.manual_seed(0)
    kw = dict(dim=16, num_blocks=2, num_heads=2, max_seq_len=20, dropout=0.0, time_bias=TimeBias(enabled=use_time))
    dense, jagged = HSTU(**kw), HSTU(**kw, attention="jagged", attention_block=block)
    jagged.load_state_dict(dense.state_dict())
    with torch.no_grad():
        for net in (dense, jagged):
            for layer in net.layers:
                layer.rab.pos_w.copy_(torch.linspace(-0.5, 0.5, len(layer.rab.pos_w)))
                if use_time:
                    layer.rab.time_w.copy_(torch.linspace(0.3, -0.3, len(layer.rab.time_w)))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 20, 16, generator=g)
    ts = torch.cumsum(torch.randint(1, 100_000, (5, 20), generator=g), dim=1)
    lengths = torch.tensor([20, 1, 7, 13, 2])
    valid = (torch.arange(20)[None, :] < lengths[:, None]).unsqueeze(-1)
    x_d, x_j = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_d, out_j = dense(x_d, ts, lengths, ts[:, -1] + 60), jagged(x_j, ts, lengths, ts[:, -1] + 60)
    torch.testing.assert_close(out_j * valid, out_d * valid, atol=1e-5, rtol=1e-5)
    assert (out_j * ~valid).abs().sum() == 0
    w = torch.randn_like(out_d)
    (out_d * w * valid).sum().backward()
    (out_j * w * valid).sum().backward()
    torch.testing.assert_close(x_j.grad, x_d.grad, atol=1e-5, rtol=1e-5)
    for (name, a), b in zip(dense.named_parameters(), jagged.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_blocked_attention_options_are_checked():
    with pytest.raises(ValueError, match="attention"):
        HSTU(attention="flash")
    with pytest.raises(ValueError, match="attention_block"):
        HSTU(attention="blocked", attention_block=0)


def test_sasrec_positions_count_back_from_the_most_recent_item():
    # from_end on a length-n history = from_start with the first n position rows reversed, i.e.
    # what the original left-padded SASRec computes: the newest item always gets position 0.
    torch.manual_seed(0)
    x, ts, _ = _inputs(B=1, L=8)
    end = SASRec(dim=16, max_seq_len=12, dropout=0.0, positions="from_end").eval()
    for n in (8, 5):
        start = SASRec(dim=16, max_seq_len=12, dropout=0.0, positions="from_start").eval()
        start.load_state_dict(end.state_dict())
        with torch.no_grad():
            start.pos_emb.weight[:n] = end.pos_emb.weight[:n].flip(0)
        lengths = torch.tensor([n])
        assert torch.allclose(end(x, ts, lengths)[:, :n], start(x, ts, lengths)[:, :n], atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        SASRec(positions="left")


@pytest.mark.parametrize("make", [HSTU, SASRec])
def test_positions_start_at_the_scale_of_the_scaled_item_embeddings(make):
    # Both models add positions to sqrt(d)-scaled item embeddings (RetrievalModule: std 0.02), as
    # the HSTU code does; a unit-variance position table would outweigh the items ~7 to 1 at d 50.
    torch.manual_seed(0)
    net = make(dim=50, max_seq_len=200)
    item_scale = 0.02 * math.sqrt(50)
    assert 0.5 < net.pos_emb.weight.std().item() / item_scale < 1.5


def test_sasrec_attention_dropout_is_its_own_setting():
    x, t, lengths = torch.randn(2, 6, 8), torch.zeros(2, 6, dtype=torch.long), torch.tensor([6, 4])
    assert all(b.dropout_p == 0.3 for b in SASRec(dim=8, dropout=0.3, max_seq_len=6).blocks)  # default: dropout
    only_attn = SASRec(dim=8, dropout=0.0, attn_dropout=0.5, max_seq_len=6).train()
    assert not torch.equal(only_attn(x, t, lengths), only_attn(x, t, lengths))
    none = SASRec(dim=8, dropout=0.0, attn_dropout=0.0, max_seq_len=6).train()
    assert torch.equal(none(x, t, lengths), none(x, t, lengths))


def test_jagged_layout_reads_each_block_from_its_first_sequence_start(monkeypatch):
    """Blocks read keys from their first query's sequence start on; a small budget splits the
    blocks into chunks no larger than it, a large one keeps one chunk."""
    segments = torch.repeat_interleave(torch.arange(3), torch.tensor([5, 2, 9]))  # T = 16
    layout = jagged_attention.JaggedLayout.build(segments, None, None, block=4, n=10, num_buckets=8)
    assert layout.lo.tolist() == [0, 0, 7, 7]  # blocks start at 0, 4, 8, 12
    assert [(c.b0, c.b1, c.width) for c in layout.chunks] == [(0, 4, 9)]
    monkeypatch.setattr(jagged_attention, "CHUNK_ELEMENTS", 64)
    small = jagged_attention.JaggedLayout.build(segments, None, None, block=4, n=10, num_buckets=8)
    assert [(c.b0, c.b1, c.width) for c in small.chunks] == [(0, 2, 8), (2, 3, 5), (3, 4, 9)]
    assert all((c.b1 - c.b0) * 4 * c.width <= 64 for c in small.chunks)
