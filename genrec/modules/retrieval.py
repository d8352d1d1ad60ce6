"""ID-based generative retrieval: next-item prediction over the whole catalogue.

The module owns the item embedding table (shared by inputs and outputs, as in SASRec and HSTU),
the loss and the evaluation; the net only turns embedded sequences into user states.
Training: sampled softmax with uniform random negatives (a negative equal to the positive is
masked out) or full softmax, on cosine similarities (or dot products) divided by a temperature.
Evaluation: the state at each user's last position is ranked against every catalogue item with
streaming top-k counting (``genrec.evaluation``); metrics are logged as ``val/hr@10`` etc.
"""
from __future__ import annotations

import inspect
from typing import Literal, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.errors import check_range
from genrec.metrics import RankingMetrics, batch_ranks, topk_items
from genrec.modules.checkpoints import (
    CheckpointMismatchError,
    build_net,
    checkpoint_identity,
    class_path,
    load_checkpoint,
)
from genrec.modules.eval_loop import DomainEvalLoop
from genrec.modules.optim import Schedule, adamw, check_schedule


def _rows(table: Tensor, ids: Tensor) -> Tensor:
    """``table[ids]`` through ``index_select``, whose backward (``index_add_``) is several times
    faster on CPU than the accumulating ``index_put_`` behind advanced indexing."""
    return table.index_select(0, ids.reshape(-1)).view(*ids.shape, table.shape[-1])


class RetrievalModule(DomainEvalLoop, L.LightningModule):
    """Train and evaluate a sequence encoder for next-item retrieval.

    Args:
        net: a sequence encoder from ``genrec.models`` (its ``dim`` sets the embedding width).
        num_items: catalogue size N (linked from the data module; ids 1..N, 0 = padding).
        loss: ``sampled_softmax`` (paper setting) or ``full_softmax``.
        num_negatives: uniform negatives per position for the sampled softmax.
        negatives: ``position`` draws fresh negatives for every position (paper); ``sequence``
            shares one draw across a sequence's positions (far cheaper on CPU; see
            docs/performance.md); ``interleaved``: ``negative_groups`` draws per sequence, position
            l using draw l mod G (the ML-1M configs: most of a per-position draw's quality at about
            a per-sequence draw's cost).
        negative_groups: draws per sequence of ``negatives: interleaved``.
        temperature: softmax temperature on the scores (paper: 0.05).
        similarity: ``cosine`` (paper): the user state (unit-norm from the nets) against unit-norm
            item vectors; ``dot``: against the raw item embeddings, so every item's norm is learned
            and scales its score for all users, as in the original SASRec's dot product (an item
            pushed by poisoning can then rise in every user's list at once; ``genrec.robust``).
        lr, weight_decay, betas: AdamW settings.
        lr_schedule: ``constant`` (paper) or ``cosine`` (linear warm-up over ``warmup_steps``,
            then a half cosine down to ``min_lr_ratio * lr`` at the last step).
        hr_ks, ndcg_ks: cut-offs of the logged metrics.
        eval_chunk_size: items scored at a time during evaluation (bounds memory).
        dataset_fingerprint: identifies the training catalogue; linked from the data module and
            checked before evaluating on another dataset.
    """

    def __init__(
        self,
        net: nn.Module,
        num_items: int = 0,
        loss: Literal["sampled_softmax", "full_softmax"] = "sampled_softmax",
        num_negatives: int = 128,
        negatives: Literal["position", "sequence", "interleaved"] = "position",
        negative_groups: int = 8,
        temperature: float = 0.05,
        similarity: Literal["cosine", "dot"] = "cosine",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: Sequence[float] = (0.9, 0.98),
        lr_schedule: Schedule = "constant",
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        hr_ks: Sequence[int] = (1, 10, 50, 200),
        ndcg_ks: Sequence[int] = (10, 50, 200),
        eval_chunk_size: int = 65536,
        dataset_fingerprint: str = "",
    ):
        super().__init__()
        if num_items < 1:
            raise ValueError("model.num_items must be positive: it is linked from the data module (data.num_items)")
        if loss not in ("sampled_softmax", "full_softmax"):
            raise ValueError(f"model.loss must be 'sampled_softmax' or 'full_softmax', got {loss!r}")
        if negatives not in ("position", "sequence", "interleaved"):
            raise ValueError(f"model.negatives must be 'position', 'sequence' or 'interleaved', got {negatives!r}")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"model.similarity must be 'cosine' or 'dot', got {similarity!r}")
        check_range("model.num_negatives", num_negatives, at_least=1)
        check_range("model.negative_groups", negative_groups, at_least=1)
        check_range("model.temperature", temperature, above=0)
        check_range("model.lr", lr, above=0)
        check_range("model.weight_decay", weight_decay, at_least=0)
        for i, beta in enumerate(betas):
            check_range(f"model.betas[{i}]", beta, at_least=0, below=1)
        for name, ks in (("hr_ks", hr_ks), ("ndcg_ks", ndcg_ks)):
            for k in ks:
                check_range(f"model.{name}", k, at_least=1)
        check_range("model.eval_chunk_size", eval_chunk_size, at_least=1)
        check_schedule(lr_schedule, warmup_steps, min_lr_ratio)
        self.save_hyperparameters(ignore=["net"])
        self.net = net
        self.item_emb = nn.Embedding(num_items + 1, net.dim, padding_idx=0)
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.val_metrics = RankingMetrics(hr_ks, ndcg_ks)
        self.test_metrics = RankingMetrics(hr_ks, ndcg_ks)
        # Per-user loss weights (e.g. from the fraudster-reweighting callback); None = all ones.
        self.user_weights: Tensor | None = None

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu") -> "RetrievalModule":
        """Rebuild module and net from a checkpoint alone."""
        ckpt = load_checkpoint(path, map_location)
        hp = dict(ckpt["hyper_parameters"])
        net = build_net(ckpt.get("genrec", {}).get("net", {}), path)
        accepted = inspect.signature(cls.__init__).parameters
        module = cls(net=net, **{k: v for k, v in hp.items() if k in accepted})
        module.load_state_dict(ckpt["state_dict"])
        return module

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["genrec"] = {
            **checkpoint_identity(self),
            # The net's class and arguments, so the checkpoint alone rebuilds the model.
            "net": {"class_path": class_path(self.net), "init_args": dict(getattr(self.net, "init_args", {}))},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        theirs = checkpoint.get("hyper_parameters", {}).get("dataset_fingerprint", "")
        ours = self.hparams.dataset_fingerprint
        if theirs and ours and theirs != ours:
            raise CheckpointMismatchError(
                f"the checkpoint was trained on catalogue {theirs!r} but the data module gives {ours!r}: "
                "evaluate it on the dataset it was trained on (same data.dataset, data.root and filtering)"
            )
        own = self.state_dict()
        theirs_sd = checkpoint["state_dict"]
        problems = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in theirs_sd.items() if k in own and own[k].shape != v.shape]
        problems += [f"{k}: missing in checkpoint" for k in own if k not in theirs_sd]
        if problems:
            raise CheckpointMismatchError(
                "the checkpoint does not fit this model (" + "; ".join(problems[:5]) + "): "
                "use the model config it was trained with (its config.yaml beside the checkpoints)"
            )

    # -- model -----------------------------------------------------------------------------------

    def item_vectors(self) -> Tensor:
        """All item vectors in the scoring space (L2-normalised unless ``similarity: dot``), row 0 = padding. (N+1, D)"""
        if self.hparams.similarity == "dot":
            return self.item_emb.weight
        return F.normalize(self.item_emb.weight, dim=-1, eps=1e-6)

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-position user states. (B, L, D)"""
        return self.net(self.item_emb(batch["items"]), batch["timestamps"], batch["lengths"],
                        query_time=batch.get("query_time"))

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        """The state after each user's last history item. (B, D)"""
        states = self.encode(batch)
        last = (batch["lengths"] - 1).clamp(min=0)
        return states[torch.arange(len(states), device=states.device), last]

    @torch.no_grad()
    def recommend(self, batch: dict[str, Tensor], k: int, exclude: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Top-k item ids and scores for each user of an evaluation batch. ((B, k), (B, k)); slots
        beyond a user's candidates (all but fewer than k items excluded) hold id 0 with score -inf."""
        scores, ids = topk_items(self.user_vectors(batch), self.item_vectors(), k, exclude, self.hparams.eval_chunk_size,
                                 pad=True)
        return ids, scores

    # -- loss ------------------------------------------------------------------------------------

    def set_user_weights(self, weights: Tensor | None) -> None:
        """Loss weight per user index (the data module's user order); None restores equal weights."""
        self.user_weights = weights

    def _logits(self, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """Logits of the valid positions, positive first: (M, 1+K), or (M, N+1) for full softmax."""
        hp = self.hparams
        items = self.item_vectors()
        if hp.loss == "full_softmax":
            logits = states[valid] @ items.T  # (M, N+1)
            logits[:, 0] = float("-inf")
            return logits / hp.temperature
        B, K, dev = states.shape[0], hp.num_negatives, states.device
        flat, where = states[valid], torch.nonzero(valid)  # (M, D), (M, 2): (sequence, position)
        if hp.negatives == "position":
            neg_ids = torch.randint(1, hp.num_items + 1, (len(flat), K), device=dev)
            neg = torch.bmm(_rows(items, neg_ids), flat.unsqueeze(-1)).squeeze(-1)  # (M, K)
        elif hp.negatives == "sequence":
            ids = torch.randint(1, hp.num_items + 1, (B, K), device=dev)
            neg = torch.bmm(states, _rows(items, ids).transpose(1, 2))[valid]  # (B, L, K) -> (M, K)
            neg_ids = ids[where[:, 0]]
        else:  # interleaved
            # G draws per sequence; position l uses draw l % G (same FLOPs as one draw per sequence).
            G, L, D = hp.negative_groups, states.shape[1], states.shape[2]
            pad = -L % G
            s = F.pad(states, (0, 0, 0, pad)).view(B, (L + pad) // G, G, D).transpose(1, 2)  # (B, G, L/G, D)
            ids = torch.randint(1, hp.num_items + 1, (B, G, K), device=dev)
            scores = torch.einsum("bgld,bgkd->bglk", s, _rows(items, ids))  # (B, G, L/G, K)
            neg = scores.transpose(1, 2).reshape(B, L + pad, K)[:, :L][valid]
            neg_ids = ids[where[:, 0], where[:, 1] % G]
        tgt = targets[valid]
        pos = (flat * _rows(items, tgt)).sum(-1, keepdim=True)  # (M, 1)
        neg = neg.masked_fill(neg_ids == tgt.unsqueeze(-1), float("-inf"))
        return torch.cat([pos, neg], dim=-1) / hp.temperature

    def _position_losses(self, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """Cross-entropy of each valid position (row-major order), positive against negatives. (M,)

        Equal to cross-entropy over ``_logits``; the interleaved draws take a dense path instead:
        positions stay in their (B, G, L/G) group layout, accidental hits are masked by a broadcast
        compare, and the loss is logaddexp(positive, logsumexp(negatives)) - positive, so no
        (M, 1 + K) logits are gathered, concatenated or transposed.
        """
        hp = self.hparams
        if hp.loss == "full_softmax" or hp.negatives != "interleaved":
            logits = self._logits(states, targets, valid)
            labels = targets[valid] if hp.loss == "full_softmax" else torch.zeros_like(targets[valid])
            return F.cross_entropy(logits, labels, reduction="none")
        B, L, D = states.shape
        G, K, T = hp.negative_groups, hp.num_negatives, hp.temperature
        items, pad = self.item_vectors(), -L % G
        ids = torch.randint(1, hp.num_items + 1, (B, G, K), device=states.device)  # as _logits draws
        s = F.pad(states / T, (0, 0, 0, pad)).view(B, (L + pad) // G, G, D).transpose(1, 2)  # (B, G, L/G, D)
        t = F.pad(targets, (0, pad)).view(B, (L + pad) // G, G).transpose(1, 2)  # (B, G, L/G)
        neg = torch.matmul(s, _rows(items, ids).transpose(-1, -2))  # (B, G, L/G, K)
        neg = neg.masked_fill(ids[:, :, None, :] == t[..., None], float("-inf"))
        lse = torch.logsumexp(neg, dim=-1).transpose(1, 2).reshape(B, L + pad)[:, :L]  # (B, L)
        pos = (states * _rows(items, targets)).sum(-1) / T  # (B, L)
        return (torch.logaddexp(pos, lse) - pos)[valid]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        targets = batch["targets"]
        valid = targets > 0
        states = self.encode(batch)
        per_pos = self._position_losses(states, targets, valid)
        if self.user_weights is not None:
            w = self.user_weights.to(per_pos.device)[batch["user"]]  # (B,)
            per_pos = per_pos * w[:, None].expand_as(targets)[valid]
        loss = per_pos.sum() / valid.sum().clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        return loss

    # -- evaluation ------------------------------------------------------------------------------

    def rank_targets(self, batch: dict[str, Tensor], metrics: RankingMetrics,
                   domain: tuple[int, int] | None = None) -> Tensor:
        """Rank each target among the catalogue, or among ids ``domain = (first, last)`` only."""
        ranks = batch_ranks(self.user_vectors(batch), self._eval_items, batch, self.hparams.eval_chunk_size, domain)
        metrics.update(ranks)
        return ranks

    def on_validation_epoch_start(self) -> None:
        # detached: under similarity: dot item_vectors() is the embedding Parameter itself, which
        # assigned to an attribute would register as a second parameter of the module
        self._eval_items = self.item_vectors().detach()

    on_test_epoch_start = on_validation_epoch_start

    def configure_optimizers(self):
        hp = self.hparams
        return adamw(
            self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=hp.betas, schedule=hp.lr_schedule,
            warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio,
            total_steps=lambda: self.trainer.estimated_stepping_batches,
        )
