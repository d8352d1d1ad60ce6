"""ID-based generative retrieval: the item embedding table, the loss (``negatives``) and the evaluation
around a net that turns embedded sequences into user states."""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genrec.errors import check_range
from genrec.metrics import RankingMetrics
from genrec.models.jagged_attention import pack, unpack
from genrec.modules import negatives
from genrec.modules.base import GenrecModule
from genrec.modules.checkpoints import CheckpointMismatchError, build_net, class_path
from genrec.modules.eval_loop import DomainEvalLoop
from genrec.modules.negatives import LossConfig
from genrec.modules.optim import OptimConfig
from genrec.recommender import VectorRecommender

# The retrieval module's AdamW defaults: no weight decay and the Transformer's betas (SASRec's).
RETRIEVAL_OPTIM = OptimConfig(weight_decay=0.0, betas=(0.9, 0.98))

class RetrievalModule(DomainEvalLoop, VectorRecommender, GenrecModule):
    """Train and evaluate a sequence encoder for next-item retrieval.

    Args:
        net: a sequence encoder from ``genrec.models`` (its ``dim`` sets the embedding width).
        num_items: catalogue size N (linked from the data module; ids 1..N, 0 = padding).
        loss: the loss and its negatives (``LossConfig``).
        similarity: ``cosine`` against unit-norm item vectors; ``dot`` against the raw item embeddings.
        optim: AdamW and its learning-rate schedule (no weight decay, betas (0.9, 0.98) unless set).
        hr_ks: cut-offs of the logged HR.
        ndcg_ks: cut-offs of the logged NDCG.
        eval_chunk_size: items scored at a time during evaluation (bounds memory).
        dataset_fingerprint: the training catalogue (linked from the data module).
    """

    def __init__(self, net: nn.Module, num_items: int = 0, loss: LossConfig = LossConfig(),
                 similarity: Literal["cosine", "dot"] = "cosine", optim: OptimConfig = RETRIEVAL_OPTIM,
                 hr_ks: Sequence[int] = (1, 10, 50, 200), ndcg_ks: Sequence[int] = (10, 50, 200),
                 eval_chunk_size: int = 65536, dataset_fingerprint: str = ""):
        super().__init__()
        if num_items < 1:
            raise ValueError("model.num_items must be positive: it is linked from the data module (data.num_items)")
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"model.similarity must be 'cosine' or 'dot', got {similarity!r}")
        for name, ks in (("hr_ks", hr_ks), ("ndcg_ks", ndcg_ks)):
            for k in ks:
                check_range(f"model.{name}", k, at_least=1)
        check_range("model.eval_chunk_size", eval_chunk_size, at_least=1)
        self.save_config_hyperparameters("loss", "optim")
        self.net = net
        self.item_emb = nn.Embedding(num_items + 1, net.dim, padding_idx=0)
        nn.init.trunc_normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.val_metrics = RankingMetrics(hr_ks, ndcg_ks)
        self.test_metrics = RankingMetrics(hr_ks, ndcg_ks)
        self.user_weights: Tensor | None = None  # per user index (set_user_weights)

    @classmethod
    def init_args(cls, hp: dict[str, Any], ckpt: dict, source: str) -> dict[str, Any]:
        return {**hp, "net": build_net(ckpt.get("genrec", {}).get("net", {}), source)}

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"net": {"class_path": class_path(self.net), "init_args": dict(getattr(self.net, "init_args", {}))}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        theirs = checkpoint.get("hyper_parameters", {}).get("dataset_fingerprint", "")
        ours = self.hparams.dataset_fingerprint
        if theirs and ours and theirs != ours:
            raise CheckpointMismatchError(f"the checkpoint was trained on catalogue {theirs!r} but the data module "
                                          f"gives {ours!r}: evaluate it on the dataset it was trained on (same "
                                          "data.dataset, data.root and filtering)")
        own = self.state_dict()
        theirs_sd = checkpoint["state_dict"]
        problems = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                    for k, v in theirs_sd.items() if k in own and own[k].shape != v.shape]
        problems += [f"{k}: missing in checkpoint" for k in own if k not in theirs_sd]
        if problems:
            raise CheckpointMismatchError("the checkpoint does not fit this model (" + "; ".join(problems[:5])
                                          + "): use the model config it was trained with (its config.yaml beside "
                                          "the checkpoints)")

    # -- model -----------------------------------------------------------------------------------

    def item_vectors(self) -> Tensor:
        """Item vectors in the scoring space, row 0 = padding. (N+1, D)"""
        if self.hparams.similarity == "dot":
            return self.item_emb.weight
        return F.normalize(self.item_emb.weight, dim=-1, eps=1e-6)

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-position user states. (B, L, D)"""
        if getattr(self.net, "packed", False):
            states, at = self.encode_packed(batch)
            B, L = batch["items"].shape
            return unpack(states, at, B, L)
        return self.net(self.item_emb(batch["items"]), batch["timestamps"], batch["lengths"],
                        query_time=batch.get("query_time"))

    def encode_packed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """States (T, D) of the valid positions of a net that takes packed sequences (``net.packed``),
        and their (T,) indices into the flattened (B, L) batch."""
        items, lengths = batch["items"], batch["lengths"]
        at, offsets = pack(lengths, items.shape[1])
        states = self.net.forward_packed(self.item_emb(items.reshape(-1)[at]), batch["timestamps"].reshape(-1)[at],
                                         offsets, query_time=batch.get("query_time"))
        return states, at

    def user_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        """The state after each user's last history item (zeros for an empty history). (B, D)"""
        lengths = batch["lengths"]
        if getattr(self.net, "packed", False):
            states, _ = self.encode_packed(batch)
            out, some = states.new_zeros(len(lengths), states.shape[-1]), lengths > 0
            out[some] = states[lengths.cumsum(0)[some] - 1]
            return out
        states = self.encode(batch)
        last = (lengths - 1).clamp(min=0)
        return states[torch.arange(len(states), device=states.device), last]

    # -- loss ------------------------------------------------------------------------------------

    def set_user_weights(self, weights: Tensor | None) -> None:
        """Loss weight per user index (the data module's user order); None restores equal weights."""
        self.user_weights = weights

    def _logits(self, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """Logits of the valid positions, positive first (``negatives.logits``)."""
        return negatives.logits(self.loss_config, self.item_vectors(), states, targets, valid)

    def _position_losses(self, states: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        """Cross-entropy of each valid position (``negatives.position_losses``). (M,)"""
        return negatives.position_losses(self.loss_config, self.item_vectors(), states, targets, valid)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        targets = batch["targets"]
        if getattr(self.net, "packed", False):  # the loss of the valid positions, never padded
            states, at = self.encode_packed(batch)
            per_pos = negatives.packed_position_losses(self.loss_config, self.item_vectors(), states,
                                                       targets.reshape(-1)[at], at, tuple(targets.shape))
            sequence = torch.div(at, targets.shape[1], rounding_mode="floor")
        else:
            valid = targets > 0
            per_pos = self._position_losses(self.encode(batch), targets, valid)
            sequence = valid.nonzero()[:, 0]  # row-major, as per_pos
        if self.user_weights is not None:
            per_pos = per_pos * self.user_weights.to(per_pos.device)[batch["user"]][sequence]
        loss = per_pos.sum() / max(len(per_pos), 1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        return loss

    # -- evaluation ------------------------------------------------------------------------------

    @property
    def chunk_size(self) -> int:
        return self.hparams.eval_chunk_size

    def ranking_items(self) -> Tensor:
        """``item_vectors()``, computed again only once the embeddings' storage or version changed."""
        weight = self.item_emb.weight
        version = (weight.data_ptr(), weight._version)
        if getattr(self, "_ranking_items", (None,))[0] != version:
            # detached: a Parameter (similarity: dot) assigned to an attribute would register twice
            self._ranking_items = (version, self.item_vectors().detach())
        return self._ranking_items[1]
