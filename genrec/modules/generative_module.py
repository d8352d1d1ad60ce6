"""Text-tokenized generative recommender (after RecGPT): next-item T-token cross-entropy, beam decoding.

A frozen ``ItemTokenizer`` tokenizes whichever catalogue is set (zero-shot included); training and
decoding normalise over the tokens the catalogue trie allows, and evaluation ranks the target in the
constrained beam search's top-K list (docs/generative.md).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from genrec.decoding import CodeTrie, constrained_beam_search
from genrec.errors import check_range
from genrec.metrics import RankingMetrics, ranks_from_topk
from genrec.models.generative import DecoderConfig, GenerativeDecoder, random_rotations
from genrec.models.text_prior import TextPrior, TextPriorConfig, prior_at, trie_priors
from genrec.modules.base import GenrecModule
from genrec.modules.checkpoints import CheckpointMismatchError, load_checkpoint, resolve_checkpoint
from genrec.modules.eval_loop import DomainEvalLoop
from genrec.modules.optim import OptimConfig
from genrec.modules.token_catalogue import TokenCatalogue
from genrec.modules.tokenizer_ae import load_tokenizer
from genrec.tokenizers.item_tokenizer import ItemTokenizer
from genrec.tokenizers.text import embed_catalogue, render_texts

log = logging.getLogger(__name__)


class GenerativeModule(DomainEvalLoop, GenrecModule):
    """Train and evaluate a hybrid-attention decoder over FSQ item tokens.

    Args:
        tokenizer: a ``TokenizerAutoencoder`` checkpoint, or the ``ItemTokenizer``'s arguments (as saved).
        decoder: the decoder's shape and how it embeds codes (``DecoderConfig``).
        prior: the text baseline as a prior on every token's logits (``TextPriorConfig``); null: none.
        optim: AdamW and its learning-rate schedule (``OptimConfig``).
        beam_width: beams kept while decoding (at least the largest cut-off is used).
        hr_ks: logged HR cut-offs; the decoded list is as long as the largest cut-off.
        ndcg_ks: logged NDCG cut-offs.
        init_from: a ``GenerativeModule`` checkpoint or run folder to start from: its weights, tokenizer
            and, unless given, its ``decoder`` and ``prior`` settings.
        num_items: linked from the data module.
        dataset_fingerprint: linked from the data module.
    """

    def __init__(self, tokenizer: str | dict[str, Any] = "",
                 decoder: DecoderConfig | None = None, prior: TextPriorConfig | None = None,
                 optim: OptimConfig | None = None, beam_width: int = 20, hr_ks: Sequence[int] = (1, 5, 10),
                 ndcg_ks: Sequence[int] = (5, 10), init_from: str = "", num_items: int = 0, dataset_fingerprint: str = ""):
        super().__init__()
        start = None
        if init_from:
            start = load_checkpoint(resolve_checkpoint(init_from))
            hp = start["hyper_parameters"]
            if not isinstance(hp.get("tokenizer"), dict) or "decoder" not in hp:
                raise CheckpointMismatchError(f"model.init_from={init_from} is not a GenerativeModule checkpoint of this genrec version")
            tokenizer = tokenizer if isinstance(tokenizer, dict) else hp["tokenizer"]
            decoder = decoder or DecoderConfig(**hp["decoder"])
            prior = prior or (TextPriorConfig(**hp["prior"]) if hp.get("prior") else None)
        decoder, optim = decoder or DecoderConfig(), optim or OptimConfig()
        if not tokenizer:
            raise ValueError("model.tokenizer is required: train a tokenizer first "
                             "(python train.py fit --config configs/tokenizer/<dataset>.yaml) and pass its checkpoint")
        check_range("model.beam_width", beam_width, at_least=1)
        for name, ks in (("hr_ks", hr_ks), ("ndcg_ks", ndcg_ks)):
            for k in ks:
                check_range(f"model.{name}", k, at_least=1)
        self.save_config_hyperparameters("decoder", "prior", "optim")
        tok = ItemTokenizer(**tokenizer) if isinstance(tokenizer, dict) else load_tokenizer(tokenizer)
        self.hparams["tokenizer"] = dict(tok.init_args)
        self.tokenizer = tok.requires_grad_(False)
        chunk = tok.embed_dim // tok.num_tokens
        self.net = GenerativeDecoder(tok.fsq.levels, tok.num_tokens, tok.embed_dim, decoder, chunk)
        self.prior = TextPrior(prior, tok.embed_dim) if prior else None
        self.max_rank = max([*hr_ks, *ndcg_ks])  # the decoded list's length (``Recommender``)
        self.val_metrics = RankingMetrics(hr_ks, ndcg_ks, max_rank=self.max_rank)
        self.test_metrics = RankingMetrics(hr_ks, ndcg_ks, max_rank=self.max_rank)
        self.catalogue = TokenCatalogue(tok.num_tokens, tok.embed_dim)
        self.user_weights: Tensor | None = None
        if start is not None:
            try:
                self.load_state_dict(start["state_dict"])
            except RuntimeError as err:
                raise CheckpointMismatchError(
                    f"model.init_from={init_from} does not fit this model ({str(err).splitlines()[0]}): leave model.decoder "
                    "and model.prior unset to take the checkpoint's, or give the settings it was trained with") from None

    @classmethod
    def init_args(cls, hp: dict[str, Any], ckpt: dict, source: str) -> dict[str, Any]:
        """The tokenizer comes from the checkpoint's own state, the weights from the checkpoint, not ``init_from``."""
        if not isinstance(hp.get("tokenizer"), dict):
            raise CheckpointMismatchError(f"{source} is not a GenerativeModule checkpoint (no tokenizer arguments)")
        if "decoder" not in hp:
            raise CheckpointMismatchError(f"{source} was written before the model's options were grouped into "
                                          "decoder/prior/optim (genrec < 0.2): retrain it with the current configs")
        return {**hp, "init_from": ""}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"tokenizer": dict(self.tokenizer.init_args), "collision_rate": self.catalogue.collision_rate}

    # -- catalogue -------------------------------------------------------------------------------

    def set_catalogue(self, item_text: pd.DataFrame | None, key: str = "", source: str = "item text",
                      counts: Tensor | None = None, domains: Sequence[tuple[int, int]] | None = None) -> None:
        """Tokenize a catalogue from its text table (row i = item i); ``counts``, ``domains``: see ``TextPrior``."""
        tok = self.tokenizer
        texts = render_texts(item_text, tok.text_template, source)
        embeddings = embed_catalogue(texts, tok.text_encoder, sorted(domains) if domains else None)
        self.set_catalogue_embeddings(torch.from_numpy(embeddings), key, counts, domains)

    def set_catalogue_from(self, dm: Any) -> None:
        """The catalogue of a data module, with its training counts only when it is the dataset trained on."""
        trained_on = self.hparams.dataset_fingerprint
        in_domain = not trained_on or trained_on == dm.fingerprint
        counts = dm.train_item_counts() if self.prior is not None and self.prior.popularity_scale is not None and in_domain else None
        ranges = getattr(dm, "item_ranges", None)  # every domain's items, evaluated or not (MultiDomainDataModule)
        domains = sorted(ranges.values()) if ranges else None
        self.set_catalogue(dm.data.item_text, dm.fingerprint, f"dataset {dm.data.name!r}", counts, domains)

    def set_catalogue_embeddings(self, embeddings: Tensor, key: str = "", counts: Tensor | None = None,
                                 domains: Sequence[tuple[int, int]] | None = None) -> None:
        """Tokenize a catalogue from its text embeddings (N+1, E), row 0 = padding (``set_catalogue``)."""
        if counts is not None and counts.shape != (len(embeddings),):
            raise ValueError(f"counts must have one entry per catalogue row ({len(embeddings)}), got {tuple(counts.shape)}")
        cat = self.catalogue.set(self.tokenizer.cpu(), embeddings, key, domains)
        self.tokenizer.to(self.device)
        if self.prior is not None:
            self.prior.set_items(self.catalogue.text, counts, domains)
        if self.net.feature_dim:
            self.net.set_code_features(self.code_features())
        log.info("genrec: tokenized %d items; %d collisions (%.2f%%) resolved", cat.num_items, cat.collisions, 100 * cat.collision_rate)

    @torch.no_grad()
    def code_features(self) -> Tensor:
        """The frozen tokenizer's decoded text chunk of every code at every position, unit-norm. (T, V, E/T)"""
        values = self.tokenizer.fsq.all_codes()  # (V, C)
        return torch.stack([F.normalize(dec(values), dim=-1) for dec in self.tokenizer.decoders])

    def setup(self, stage: str | None = None) -> None:
        dm = self.trainer.datamodule
        if self.catalogue.key != dm.fingerprint:
            self.set_catalogue_from(dm)
        # training must cover the linked catalogue; predicting may be zero-shot on another one
        if stage == "fit" and self.hparams.num_items and self.hparams.num_items != len(self.catalogue.codes) - 1:
            raise CheckpointMismatchError(f"model.num_items={self.hparams.num_items} but the catalogue has {len(self.catalogue.codes) - 1} items")

    def _inputs(self, items: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.catalogue.trie is None:
            raise RuntimeError("no catalogue: call set_catalogue(...) or run through a Trainer with a data module")
        return self.catalogue.codes[items], self.catalogue.text[items] if self.decoder_config.text_input else None

    def token_logits(self, queries: Tensor, t: int, table: Tensor | None = None) -> Tensor:
        """Logits of token position t over the catalogue's codes there: (…, D) → (…, len(slot_vocab[t]))."""
        return queries @ (self.net.code_table(self.catalogue.slot_vocab[t], t) if table is None else table).T

    # -- training --------------------------------------------------------------------------------

    def set_user_weights(self, weights: Tensor | None) -> None:
        """Loss weight per user index (the data module's user order); None restores equal weights."""
        self.user_weights = weights

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.decoder_config.codes == "text-rotated":  # a fresh rotation of the text space per step (decoding uses none)
            net = self.net
            net.set_rotation(random_rotations(net.num_tokens, net.feature_dim, device=self.device))
        try:
            return self._training_step(batch)
        finally:
            self.net.set_rotation(None)

    def _training_step(self, batch: dict[str, Tensor]) -> Tensor:
        items = batch["items"]
        codes, text = self._inputs(items)
        states = self.net(codes, text, batch["lengths"])  # (B, L, T, D)
        valid = batch["targets"] > 0  # (B, L)
        target_ids = batch["targets"][valid]  # (M,)
        target = self.catalogue.codes[target_ids]  # (M, T)
        queries = self.net.next_queries(states[valid], target)  # (M, T, D)
        domain = self.catalogue.batch_domain(target_ids)
        trie, first = self.catalogue.domain_trie(domain)
        priors = None
        if self.prior is not None:
            L = items.shape[1]
            history = items[:, None, :].expand(-1, L, -1).tril()[valid]  # (M, L): the items up to each position
            history = history.masked_fill(history == target_ids[:, None], 0)
            scores = self.prior.item_scores(self.prior.users(items)[valid], domain)
            priors = trie_priors(scores, trie, history, first)
        path = trie.paths[target_ids - first]  # (M, T): each target's trie node per level (trie rows follow item ids)
        per_item = 0
        for t in range(target.shape[1]):
            logits, nxt, allowed = self.child_logits(queries[:, t], t, path[:, t - 1] if t else None, trie)
            if priors is not None:
                logits = logits + prior_at(priors, t, nxt, first)
            logp = logits.masked_fill(~allowed, float("-inf")).log_softmax(-1)
            label = ((nxt == path[:, t, None]) & allowed).float().argmax(-1, keepdim=True)  # the target's child
            per_item = per_item - logp.gather(1, label)[:, 0]
        if self.user_weights is not None:
            w = self.user_weights.to(per_item.device)[batch["user"]]  # (B,)
            per_item = per_item * w[:, None].expand_as(valid)[valid]
        loss = per_item.sum() / (valid.sum().clamp(min=1) * target.shape[1])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(valid))
        return loss

    def child_logits(self, queries: Tensor, t: int, parents: Tensor | None,
                     trie: CodeTrie | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Logits of token t over the children of each row's node at level t of ``trie`` (default the
        catalogue's): queries (M, D), parents (M,) → logits, child nodes, validity, each (M, K)."""
        trie = self.catalogue.trie if trie is None else trie
        table = self.net.code_table(self.catalogue.slot_vocab[t], t)  # (V_t, D)
        if t == 0:  # the root's children: the codes used at the first position, as a dense table
            logits = self.token_logits(queries, 0, table)
            nxt, allowed = trie.root_children(logits.shape[1])
            return logits, nxt.expand_as(logits), allowed.expand_as(logits)
        local, nxt, allowed = trie.children(t, parents)  # (M, K)
        return torch.einsum("md,mkd->mk", queries, table[local]), nxt, allowed

    # -- decoding --------------------------------------------------------------------------------

    @torch.no_grad()
    def recommend(self, batch: dict[str, Tensor], k: int, exclude: Tensor | None = None,
                  domain: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
        """Top-k catalogue items (within ids ``domain = (first, last)``) and their log-probs. ((B, k), (B, k))"""
        codes, text = self._inputs(batch["items"])
        lengths = batch["lengths"]
        states = self.net(codes, text, lengths)
        last = states[torch.arange(len(states), device=states.device), (lengths - 1).clamp(min=0)]  # (B, T, D)
        tables = [self.net.code_table(v, t) for t, v in enumerate(self.catalogue.slot_vocab)]
        trie, first = self.catalogue.domain_trie(domain)
        bias = None
        if self.prior is not None:
            scores = self.prior.item_scores(self.prior.users(batch["items"], lengths), domain)
            priors = trie_priors(scores, trie, exclude, first)

            def bias(t: int, nxt: Tensor) -> Tensor:  # nxt (B, W, K) child nodes
                return prior_at(priors, t, nxt.reshape(len(nxt), -1), first).view_as(nxt)

        def step(t: int, prefix: Tensor) -> Tensor:  # prefix (B, W, t) local indices
            state = last[:, t, None].expand(-1, prefix.shape[1], -1)  # (B, W, D)
            codes = torch.stack([self.catalogue.slot_vocab[s][prefix[..., s]] for s in range(t)], -1) if t else prefix
            return self.token_logits(self.net.step_query(state, codes), t, tables[t])

        return constrained_beam_search(step, trie, len(lengths), self.hparams.beam_width, k, exclude,
                                       child_bias=bias, normalize=True)

    def rank_targets(self, batch: dict[str, Tensor], metrics: RankingMetrics,
                   domain: tuple[int, int] | None = None) -> Tensor:
        """Decode each user's top-K within the catalogue, or within ids ``domain = (first, last)``."""
        target, exclude = batch["target"], batch.get("exclude")
        if exclude is not None:
            exclude = exclude.masked_fill(exclude == target[:, None], 0)  # the target is never excluded
        items, _ = self.recommend(batch, self.max_rank, exclude, domain)
        ranks = ranks_from_topk(items, target)
        metrics.update(ranks)
        return ranks

    @property
    def item_text(self) -> Tensor:
        """The catalogue's item text embeddings (N+1, E)."""
        return self.catalogue.text

    @property
    def collision_rate(self) -> float:
        """Share of the catalogue's items whose tokens collided before resolution."""
        return self.catalogue.collision_rate

    def collision_rates(self, ranges: dict[str, tuple[int, int]]) -> dict[str, float]:
        """Share of each domain's items (``name -> (first_id, last_id)``) changed by collision resolution."""
        return self.catalogue.collision_rates(ranges)
