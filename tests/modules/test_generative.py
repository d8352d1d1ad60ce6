import pytest
import torch

from genrec.models.generative import DecoderConfig
from genrec.models.text_prior import TextPriorConfig, text_hubness, trie_priors
from genrec.modules.checkpoints import CheckpointMismatchError
from genrec.modules import GenerativeModule
from tests.evaluation.test_text_baseline import brute_hubness

TOKENIZER = {"embed_dim": 8, "num_tokens": 2, "levels": [5, 4], "hidden_dim": 8}


def module(N=30, codes="value+text", **prior):
    """A small module; ``prior`` options (``TextPriorConfig``) switch the text prior on."""
    torch.manual_seed(0)
    decoder = DecoderConfig(dim=16, num_heads=2, dropout=0.0, max_seq_len=6, codes=codes)
    m = GenerativeModule(tokenizer=TOKENIZER, decoder=decoder, prior=TextPriorConfig(**prior) if prior else None,
                         beam_width=8)
    m.log = lambda *a, **k: None
    m.log_dict = lambda *a, **k: None
    emb = torch.randn(N + 1, 8)
    emb[0] = 0
    m.set_catalogue_embeddings(emb, key="test")
    return m


def batch(N=30, B=4, L=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N + 1, (B, L), generator=g)
    lengths = torch.tensor([6, 4, 2, 1])[:B]
    pad = torch.arange(L)[None] >= lengths[:, None]
    items[pad] = 0
    targets = torch.randint(1, N + 1, (B, L), generator=g).masked_fill(pad, 0)
    return {"user": torch.arange(B), "items": items, "timestamps": torch.zeros_like(items), "lengths": lengths,
            "targets": targets, "target": targets[:, 0], "exclude": items}


def test_a_tokenizer_is_required():
    with pytest.raises(ValueError, match="model.tokenizer is required"):
        GenerativeModule()


def test_loss_is_the_mean_token_cross_entropy_and_training_lowers_it():
    m, b = module(), batch()
    m.train()
    opt = torch.optim.Adam(m.net.parameters(), lr=1e-2)
    first = m.training_step(b, 0)
    codes = m.catalogue.codes[b["targets"][b["targets"] > 0]]
    uniform = sum(torch.log(torch.tensor(float(len(v)))) for v in m.catalogue.slot_vocab) / 2
    assert first.item() == pytest.approx(uniform.item(), rel=0.3)  # about uniform over each position's codes
    for _ in range(30):
        opt.zero_grad()
        loss = m.training_step(b, 0)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()
    assert codes.shape[1] == 2


def test_user_weights_of_zero_remove_a_user():
    m, b = module(), batch()
    m.set_user_weights(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    weighted = m.training_step(b, 0)
    only_first = {k: v[:1] for k, v in b.items()}
    m.set_user_weights(None)
    n_first, n_all = (only_first["targets"] > 0).sum(), (b["targets"] > 0).sum()
    assert weighted.item() == pytest.approx(m.training_step(only_first, 0).item() * n_first.item() / n_all.item(), rel=1e-5)


def test_recommendations_are_distinct_catalogue_items_outside_the_history():
    m, b = module(), batch()
    items, scores = m.recommend(b, 10, b["exclude"])
    assert items.shape == (4, 10)
    for row in range(4):
        got = items[row].tolist()
        assert len(set(got)) == 10 and all(1 <= i <= 30 for i in got)
        assert not set(got) & set(b["exclude"][row].tolist())
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def by_hand_log_probs(m, b, items, exclude=None, catalogue=None):
    """Sequence log-probs of ``items`` (B, k) computed item by item from the catalogue table: token t
    competes with every code that some catalogue item puts after the same t-token prefix; with the
    prior, each such code also gets log Σ exp(λ cos) over those items (excluded ones left out).
    ``catalogue``: the item ids decoded from (default all)."""
    codes, text = m._inputs(b["items"])
    B, k = items.shape
    states = m.net(codes, text, b["lengths"])[torch.arange(B), b["lengths"] - 1]  # (B, T, D)
    cos = m.prior.unit @ m.prior.users(b["items"], b["lengths"]).T if m.prior is not None else None  # (N+1, B)
    out = torch.zeros(B, k)
    for row in range(B):
        banned = set() if exclude is None else set(exclude[row].tolist())
        for j, item in enumerate(items[row].tolist()):
            tokens = m.catalogue.codes[item]
            query = m.net.next_queries(states[row][None], tokens[None])[0]  # (T, D)
            for t in range(len(tokens)):
                same = [i for i in (catalogue or range(1, len(m.catalogue.codes))) if torch.equal(m.catalogue.codes[i, :t], tokens[:t])]
                options = sorted({m.catalogue.codes[i, t].item() for i in same})
                logits = []
                for c in options:
                    logit = query[t] @ m.net.code_table(torch.tensor([c]), t)[0]
                    if m.prior is not None:
                        below = [i for i in same if m.catalogue.codes[i, t] == c and i not in banned]
                        logit = logit + (torch.logsumexp(m.prior.scale * cos[below, row], 0) if below else float("-inf"))
                    logits.append(logit)
                logp = torch.stack([torch.as_tensor(x, dtype=torch.float) for x in logits]).log_softmax(0)
                out[row, j] += logp[options.index(tokens[t].item())]
    return out


def test_recommend_scores_are_exact_sequence_log_probs_over_the_catalogue_trie():
    m, b = module(), batch()
    with torch.no_grad():
        items, scores = m.recommend(b, 5)
        assert torch.allclose(scores, by_hand_log_probs(m, b, items), atol=1e-4)
        # the scores are a distribution over catalogue items: they sum to one over all of them
        everything, all_scores = m.recommend(b, 30)
    assert torch.allclose(all_scores.exp().sum(1), torch.ones(4), atol=1e-4)


def test_each_position_competes_over_the_codes_the_catalogue_uses_there():
    m = module()
    for t, vocab in enumerate(m.catalogue.slot_vocab):
        assert torch.equal(vocab, m.catalogue.codes[1:, t].unique())
        assert torch.equal(vocab[m.catalogue.local[1:, t]], m.catalogue.codes[1:, t])


def test_validation_counts_hits_and_never_excludes_the_target():
    m, b = module(), batch()
    items, _ = m.recommend(b, 10, None)
    b["target"] = items[:, 0]
    b["exclude"] = torch.cat([b["items"], items[:, :1]], 1)  # the target is also in the history
    m.rank_targets(b, m.val_metrics)
    assert m.val_metrics.compute()["hr@10"].item() == pytest.approx(1.0)


def test_checkpoint_round_trip_keeps_the_tokenizer(tmp_path):
    import lightning as L

    m = module()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(m)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    back = GenerativeModule.from_checkpoint(str(path))
    assert torch.equal(back.tokenizer.encoders[0][0].weight, m.tokenizer.encoders[0][0].weight)
    back.set_catalogue_embeddings(m.item_text.clone(), "test")
    assert torch.equal(back.catalogue.codes, m.catalogue.codes)
    with pytest.raises(CheckpointMismatchError):
        torch.save({"state_dict": {}, "hyper_parameters": {}}, tmp_path / "bad.ckpt")
        GenerativeModule.from_checkpoint(str(tmp_path / "bad.ckpt"))


def test_an_old_checkpoint_with_tokenizer_ckpt_and_tokenizer_config_rebuilds(tmp_path):
    """Before ``tokenizer`` took a path or the arguments, checkpoints held ``tokenizer_ckpt`` (a path,
    maybe gone) and ``tokenizer_config``: the arguments rebuild the module, the path is not read."""
    import lightning as L

    m = module()
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=False)
    hp = ckpt["hyper_parameters"]
    hp["tokenizer_ckpt"], hp["tokenizer_config"] = str(tmp_path / "gone.ckpt"), hp.pop("tokenizer")
    del ckpt["genrec_checkpoint_version"]
    torch.save(ckpt, tmp_path / "old.ckpt")
    back = GenerativeModule.from_checkpoint(str(tmp_path / "old.ckpt"))
    assert back.hparams.tokenizer == m.hparams.tokenizer and "tokenizer_config" not in back.hparams
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


def test_a_domain_restricted_evaluation_only_decodes_that_domains_items():
    m, b = module(), batch()
    domain = (11, 24)
    with torch.no_grad():
        items, _ = m.recommend(b, 10, b["exclude"], domain)
    assert ((items >= 11) & (items <= 24)).all()
    assert all(len(set(row.tolist())) == 10 for row in items)
    assert not any(set(row.tolist()) & set(h.tolist()) for row, h in zip(items, b["exclude"]))
    # the list is the model's distribution renormalised over the domain's items: exact sequence
    # log-probs over the domain's trie, and they sum to one over the domain
    with torch.no_grad():
        assert torch.allclose(_, by_hand_log_probs(m, b, items, catalogue=list(range(11, 25))), atol=1e-4)
        whole, scores = m.recommend(b, 14, None, domain)
    assert torch.allclose(scores.exp().sum(1), torch.ones(4), atol=1e-4)
    b["target"] = items[:, 3]
    with torch.no_grad():
        ranks = m.rank_targets(b, m.val_metrics, domain)
    assert ranks.tolist() == [3, 3, 3, 3]


def test_text_prior_uses_the_text_baselines_user_vector():
    m, b = module(scale=1.0), batch()
    # user vector = the text baseline's: unit recency-weighted mean of the history's unit embeddings
    from genrec.models.text_prior import TextScorer
    scorer = TextScorer(m.item_text, decay=m.prior.config.decay)
    users = m.prior.users(b["items"], b["lengths"])
    assert torch.allclose(users, scorer.user_vectors(b), atol=1e-5)
    # the same by hand: weights 0.3 ** age over the history, then unit length
    unit = torch.nn.functional.normalize(m.item_text, dim=-1)
    n = int(b["lengths"][0])
    by_hand = sum(0.3 ** (n - 1 - j) * unit[b["items"][0, j]] for j in range(n))
    assert torch.allclose(users[0], by_hand / by_hand.norm(), atol=1e-5)
    # every position's vector is the same computation on the prefix ending there
    per_pos = m.prior.users(b["items"])
    assert torch.allclose(per_pos[0, 2], scorer.user_vectors({"items": b["items"][:1, :3], "lengths": torch.tensor([3])})[0], atol=1e-5)


def test_the_prior_alone_decodes_exactly_the_text_baselines_ranking():
    """With the learned logits at zero the product of per-token softmaxes is the item softmax of
    λ cos(u, e_i): a beam as wide as the catalogue returns the text baseline's top-k, history excluded."""
    m, b = module(scale=5.0), batch()
    with torch.no_grad():
        m.net.heads.zero_()
        items, scores = m.recommend(b, 10, b["exclude"])
    from genrec.models.text_prior import TextScorer
    cos = (torch.nn.functional.normalize(m.item_text, dim=-1) @ TextScorer(m.item_text, decay=0.3).user_vectors(b).T).T
    cos[:, 0] = float("-inf")
    cos = cos.scatter(1, b["exclude"], float("-inf"))
    assert torch.equal(items, cos.topk(10, dim=1).indices)
    assert torch.allclose(scores, (5.0 * cos).log_softmax(1).topk(10, dim=1).values, atol=1e-4)


def test_with_the_prior_decoding_scores_are_still_exact_sequence_log_probs():
    m, b = module(decay=0.3), batch()
    with torch.no_grad():
        items, scores = m.recommend(b, 5, b["exclude"])
        assert torch.allclose(scores, by_hand_log_probs(m, b, items, b["exclude"]), atol=1e-4)
    # and training lowers the loss with the prior's scale learned along
    m.train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = m.training_step(b, 0)
    for _ in range(20):
        opt.zero_grad()
        loss = m.training_step(b, 0)
        loss.backward()
        opt.step()
    assert loss.item() < first.item() and m.prior.scale.item() != 20.0


def test_training_loss_is_the_by_hand_sequence_log_prob_of_each_target():
    m, b = module(scale=3.0), batch()
    m.eval()  # no dropout
    loss = m.training_step(b, 0)
    total, count = 0.0, 0
    for row in range(4):
        for pos in range(int(b["lengths"][row])):
            target = b["targets"][row, pos]
            if target == 0:
                continue
            prefix = {k: v[row : row + 1].clone() for k, v in b.items()}
            prefix["items"][:, pos + 1 :] = 0
            prefix["lengths"] = torch.tensor([pos + 1])
            history = prefix["items"].masked_fill(prefix["items"] == target, 0)
            with torch.no_grad():
                total -= by_hand_log_probs(m, prefix, target.view(1, 1), history)[0, 0].item()
            count += 1
    assert loss.item() == pytest.approx(total / (count * 2), rel=1e-4)


def test_the_popularity_prior_adds_beta_log_counts_and_is_off_on_a_catalogue_without_counts():
    """prior.popularity: the prior alone decodes the item softmax of λ cos(u, e_i) + β log(1 + count_i);
    a catalogue set without counts (zero-shot) falls back to the text baseline's ranking."""
    m, b = module(scale=5.0, popularity=True, popularity_scale=0.7), batch()
    counts = torch.randint(0, 50, (31,)).float()
    m.set_catalogue_embeddings(m.item_text.clone(), "test", counts)
    from genrec.models.text_prior import TextScorer
    cos = (torch.nn.functional.normalize(m.item_text, dim=-1) @ TextScorer(m.item_text, decay=0.3).user_vectors(b).T).T
    with torch.no_grad():
        m.net.heads.zero_()
        for c, expected in ((counts, 5.0 * cos + 0.7 * counts.log1p()), (None, 5.0 * cos)):
            m.set_catalogue_embeddings(m.item_text.clone(), "test", c)
            items, scores = m.recommend(b, 10, b["exclude"])
            expected = expected.clone()
            expected[:, 0] = float("-inf")
            expected = expected.scatter(1, b["exclude"], float("-inf"))
            assert torch.equal(items, expected.topk(10, dim=1).indices)
            assert torch.allclose(scores, expected.log_softmax(1).topk(10, dim=1).values, atol=1e-4)
    with pytest.raises(ValueError, match="one entry per catalogue row"):
        m.set_catalogue_embeddings(m.item_text.clone(), "test", counts[:5])
    # β is learned with the rest
    m.set_catalogue_embeddings(m.item_text.clone(), "test", counts)
    m.train()
    m.training_step(b, 0).backward()
    assert m.prior.popularity_scale.grad is not None and m.prior.popularity_scale.grad != 0


def test_popularity_counts_come_only_from_the_dataset_trained_on():
    from types import SimpleNamespace
    m = module(popularity=True)
    m.hparams.dataset_fingerprint = "scientific"
    seen = []
    m.set_catalogue = lambda text, key, source, counts=None, domains=None: seen.append((key, counts))
    for fp in ("scientific", "office"):
        m.set_catalogue_from(SimpleNamespace(fingerprint=fp, train_item_counts=lambda: torch.ones(31),
                                             data=SimpleNamespace(item_text=None, name=fp)))
    assert seen[0][0] == "scientific" and torch.equal(seen[0][1], torch.ones(31))
    assert seen[1] == ("office", None)  # zero-shot: the target's interactions are not used


def test_the_hubness_prior_subtracts_gamma_h_is_learned_and_recomputed_for_a_new_catalogue():
    """prior.hubness: the prior alone decodes the item softmax of λ (cos(u, e_i) - γ h_i), γ = 0 at the
    start (the text baseline), learned; a new catalogue gets its own h (zero-shot)."""
    from types import SimpleNamespace

    from genrec.models.text_prior import TextScorer
    with pytest.raises(ValueError, match="model.prior.hubness_k"):
        module(hubness=True, hubness_k=0)
    m, b = module(scale=5.0, hubness=True, hubness_k=4), batch()
    assert m.prior.hubness_scale == 0
    m.train()
    m.training_step(b, 0).backward()
    assert m.prior.hubness_scale.grad is not None and m.prior.hubness_scale.grad != 0
    m.eval()

    def expected_top(m):
        unit = torch.nn.functional.normalize(m.item_text, dim=-1)
        h = torch.cat([torch.zeros(1), brute_hubness(m.item_text, 4, 1, len(unit) - 1)])
        score = 5.0 * ((unit @ TextScorer(m.item_text, decay=0.3).user_vectors(b).T).T - 0.4 * h)
        score[:, 0] = float("-inf")
        score = score.scatter(1, b["exclude"], float("-inf"))
        return score.topk(10, dim=1).indices, score.log_softmax(1).topk(10, dim=1).values

    with torch.no_grad():
        m.prior.hubness_scale.fill_(0.4)
        m.net.heads.zero_()
        for key in ("test", "new"):
            if key == "new":
                m.set_catalogue_embeddings(torch.randn(31, 8).index_fill(0, torch.tensor([0]), 0.0), key)
            items, scores = m.recommend(b, 10, b["exclude"])
            top, top_scores = expected_top(m)
            assert torch.equal(items, top)
            assert torch.allclose(scores, top_scores, atol=1e-4)
    # a multi-domain data module's domains reach text_hubness
    # (every domain's, also one not evaluated: its items are trained on)
    dm = SimpleNamespace(fingerprint="two", eval_domains=[("a", 1, 12)], item_ranges={"a": (1, 12), "b": (13, 30)},
                         train_item_counts=lambda: None,
                         data=SimpleNamespace(item_text=None, name="two"))
    emb = m.item_text.clone()
    m.set_catalogue = lambda text, key, source, counts=None, domains=None: m.set_catalogue_embeddings(emb, key, counts, domains)
    m.set_catalogue_from(dm)
    assert torch.allclose(m.prior.hub, text_hubness(torch.nn.functional.normalize(emb, dim=-1), 4, [(1, 12), (13, 30)]))


def test_the_centred_or_whitened_prior_scores_in_each_catalogues_own_space():
    from genrec.models.text_prior import center_catalogue

    m = module(hubness=True, hubness_k=4, center=True)
    centred = center_catalogue(torch.nn.functional.normalize(m.item_text, dim=-1))
    torch.testing.assert_close(m.prior.unit, centred)
    torch.testing.assert_close(m.prior.hub, text_hubness(centred, 4))
    m.prior.set_items(m.item_text, domains=[(1, 12), (13, 30)])  # per domain, each on its own mean
    torch.testing.assert_close(m.prior.unit, center_catalogue(torch.nn.functional.normalize(m.item_text, dim=-1),
                                                              [(1, 12), (13, 30)]))
    whitened = module(hubness=True, hubness_k=4, whiten=0.5)  # whitening centres too, without center
    unit = center_catalogue(torch.nn.functional.normalize(whitened.item_text, dim=-1), whiten=0.5)
    torch.testing.assert_close(whitened.prior.unit, unit)
    torch.testing.assert_close(whitened.prior.hub, text_hubness(unit, 4))
    assert not torch.allclose(unit, centred, atol=1e-3)
    with pytest.raises(ValueError, match=r"model.prior.whiten must be in \[0, 1\]"):
        TextPriorConfig(whiten=-0.1)


def test_rotate_text_trains_under_a_fresh_rotation_each_step_and_decodes_without_one():
    m, b = module(codes="text-rotated", decay=0.3), batch()
    m.eval()  # no dropout: any difference between two steps is the rotation
    first, second = m.training_step(b, 0), m.training_step(b, 0)
    assert m.net.rotation is None and first.item() != pytest.approx(second.item(), abs=1e-6)
    plain = module(codes="text", decay=0.3)  # the same weights (same seed), never rotated
    plain.log = lambda *a, **k: None
    plain.eval()
    assert plain.training_step(b, 0).item() == pytest.approx(plain.training_step(b, 0).item())
    with torch.no_grad():
        assert torch.equal(m.recommend(b, 5, b["exclude"])[0], plain.recommend(b, 5, b["exclude"])[0])


def test_with_several_domains_training_and_decoding_normalise_over_the_batchs_domain():
    """A batch of one domain's users: the loss is the cross-entropy over that domain's items only
    (prior included, the history left out of its sums), the same distribution decoding ranks; in
    every domain, also those whose first codes are not the catalogue's first."""
    m = module(scale=1.0)
    emb = m.item_text.clone()
    emb[1:] = emb[1:][m.catalogue.local[1:, 0].argsort(stable=True)]  # items by first code: the last domain lacks code 0
    m.set_catalogue_embeddings(emb, key="test", domains=[(25, 30), (1, 10), (11, 24)])
    assert m.catalogue.domains == [(1, 10), (11, 24), (25, 30)]
    assert any(m.catalogue.local[lo : hi + 1, 0].min() > 0 for lo, hi in m.catalogue.domains)  # a domain without the first code
    m.eval()
    for seed, (lo, hi) in enumerate(m.catalogue.domains):
        g = torch.Generator().manual_seed(seed)
        items = torch.randint(lo, hi + 1, (4, 6), generator=g)
        lengths = torch.tensor([6, 4, 2, 1])
        pad = torch.arange(6)[None] >= lengths[:, None]
        items[pad] = 0
        target = torch.randint(lo, hi + 1, (4,), generator=g)
        target[0] = lo + m.catalogue.local[lo : hi + 1, 0].argmin()  # the domain's first root child
        targets = torch.zeros_like(items)
        targets[torch.arange(4), lengths - 1] = target  # one target per user, after their whole window
        b = {"user": torch.arange(4), "items": items, "lengths": lengths, "targets": targets, "target": target}
        catalogue = list(range(lo, hi + 1))
        with torch.no_grad():
            loss = m.training_step(b, 0)
            history = items.masked_fill(items == target[:, None], 0)
            expected = by_hand_log_probs(m, b, target[:, None], history, catalogue=catalogue)
            assert loss.item() == pytest.approx(-expected.mean().item() / 2, rel=1e-4), (lo, hi)
            # the same users scored over the whole catalogue (one domain) give another loss
            m.catalogue.domains = []
            assert m.training_step(b, 0).item() != pytest.approx(loss.item(), rel=1e-3)
            m.catalogue.domains = [(1, 10), (11, 24), (25, 30)]
            found, scores = m.recommend(b, 5, None, (lo, hi))  # the smallest domain has 6 items
        assert ((found >= lo) & (found <= hi)).all()
        assert torch.allclose(scores, by_hand_log_probs(m, b, found, catalogue=catalogue), atol=1e-4)
    # a batch mixing domains (not one a MultiDomainDataModule serves) falls back to the whole catalogue
    assert m.catalogue.batch_domain(torch.tensor([3, 12])) is None and m.catalogue.batch_domain(torch.tensor([12, 24])) == (11, 24)


def test_prior_scores_of_a_span_equal_the_whole_catalogues_on_it():
    m, b = module(scale=2.0, hubness=True, hubness_k=3), batch()
    users = m.prior.users(b["items"], b["lengths"])
    whole = m.prior.item_scores(users)
    span = m.prior.item_scores(users, (11, 24))
    assert span.shape == (4, 15) and torch.allclose(span[:, 1:], whole[:, 11:25])


def test_prior_scores_are_the_log_sum_exp_below_every_node_and_so_are_their_gradients():
    from genrec.decoding import CodeTrie

    g = torch.Generator().manual_seed(0)
    N, first = 40, 11  # a domain's items 11..50, four tokens from small alphabets: prefixes are shared
    codes = torch.cat([torch.randint(0, 3, (N, 3), generator=g), torch.arange(N)[:, None]], 1)
    trie = CodeTrie(codes, torch.arange(first, first + N))
    scale = torch.tensor(3.0, requires_grad=True)
    raw = torch.randn(5, N + 1, generator=g)
    exclude = torch.tensor([[12, 0, 13], [50, 3, 0], [0, 0, 0], [11, 11, 60], [20, 21, 22]])  # 3, 60: outside the span
    under = first + torch.nonzero(trie.paths[:, 1] == 0)[:, 0]  # every item below one node of level 2
    exclude = torch.cat([exclude, torch.zeros(5, len(under), dtype=torch.long)], 1)
    exclude[2, : len(under)] = under
    priors = trie_priors(scale * raw, trie, exclude, first)
    # brute force: per node, log-sum-exp over the items whose prefix it is, the excluded ones left out
    brute_scale = torch.tensor(3.0, requires_grad=True)
    scores = brute_scale * raw[:, 1:]
    kept = torch.stack([~torch.isin(torch.arange(first, first + N), row) for row in exclude])
    brute = []
    for t in range(3):
        cols = []
        for node in range(trie.num_nodes(t)):
            below = (trie.paths[:, t] == node)[None] & kept
            cols.append(scores.masked_fill(~below, float("-inf")).logsumexp(1))
        brute.append(torch.stack(cols, 1))
        assert torch.allclose(priors[t], brute[t], atol=1e-5), t
    assert torch.isinf(priors[1][2, 0]) and torch.isinf(priors[2][2]).any()  # all excluded below: -inf, not NaN
    sum(p[p.isfinite()].sum() for p in priors[:3]).backward()
    sum(p[p.isfinite()].sum() for p in brute).backward()
    assert torch.allclose(scale.grad, brute_scale.grad, rtol=1e-5)


def test_init_from_starts_from_a_trained_checkpoints_weights_and_settings(tmp_path):
    import lightning as L

    m = module(codes="text-rotated", scale=3.0, hubness=True)
    with torch.no_grad():
        m.prior.scale.fill_(7.0)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=0)
    trainer.strategy.connect(m)
    trainer.save_checkpoint(tmp_path / "pre.ckpt")
    tuned = GenerativeModule(init_from=str(tmp_path / "pre.ckpt"))  # tokenizer, decoder and prior from the checkpoint
    assert tuned.decoder_config == m.decoder_config and tuned.prior.scale.item() == 7.0
    for (name, a), b in zip(m.state_dict().items(), tuned.state_dict().values()):
        assert torch.equal(a, b), name
    # its own checkpoint rebuilds without the file it started from
    trainer.strategy.connect(tuned)
    trainer.save_checkpoint(tmp_path / "tuned.ckpt")
    (tmp_path / "pre.ckpt").rename(tmp_path / "gone.ckpt")
    assert GenerativeModule.from_checkpoint(str(tmp_path / "tuned.ckpt")).prior.scale.item() == 7.0
    with pytest.raises(CheckpointMismatchError, match="model.init_from=.*does not fit this model"):
        GenerativeModule(init_from=str(tmp_path / "gone.ckpt"), decoder=DecoderConfig(dim=32, num_heads=2))
