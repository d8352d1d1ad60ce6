"""Fine-tuning a sentence-transformers encoder contrastively on which items follow which (docs/generative.md).

Validation scores the text formula (``TextScorer``) with the encoder as it is now; the best encoder is
saved as ``<run>/encoder``, the last as ``<run>/encoder-last``.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from genrec.errors import check_range
from genrec.metrics import RankingMetrics
from genrec.models.text_prior import TextScorer, mean_pair_cosine, recency_user_vectors
from genrec.modules.base import GenrecModule
from genrec.modules.eval_loop import DomainEvalLoop
from genrec.modules.optim import OptimConfig
from genrec.tokenizers.text import DEFAULT_ENCODER, embedding_dim, encode_with, load_encoder

try:
    from sentence_transformers.sentence_transformer.losses import (MultipleNegativesRankingLoss,
                                                                   MultipleNegativesSymmetricRankingLoss)
except ImportError:  # sentence-transformers before 6
    from sentence_transformers.losses import MultipleNegativesRankingLoss, MultipleNegativesSymmetricRankingLoss

LOSSES = {"symmetric": MultipleNegativesSymmetricRankingLoss, "forward": MultipleNegativesRankingLoss}
MAX_SCALE = 100.0  # CLIP's cap on a learned inverse temperature


def transformer_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of layers of a sentence-transformers model's first (transformer) module: its longest ``ModuleList``."""
    stacks = [m for m in encoder[0].modules() if isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ValueError(f"model.train_layers: found no layer stack in {type(encoder[0]).__name__}; use train_layers: all")
    return max(stacks, key=len)


def freeze_below(encoder: nn.Module, train_layers: int | str) -> tuple[int, int]:
    """Train only the top ``train_layers`` transformer layers and every module after the transformer
    (pooling, dense heads); ``"all"`` trains everything. Returns (trained, total) layers."""
    layers = transformer_layers(encoder)
    if train_layers == "all":
        return len(layers), len(layers)
    if not isinstance(train_layers, int) or not 0 <= train_layers <= len(layers):
        raise ValueError(f"model.train_layers must be 'all' or a number of top layers in 0..{len(layers)}, got {train_layers!r}")
    encoder[0].requires_grad_(False)
    for layer in layers[len(layers) - train_layers:]:
        layer.requires_grad_(True)
    return train_layers, len(layers)


def uniformity_loss(unit: Tensor, t: float = 2.0) -> Tensor:
    """log E exp(-t ||x - y||^2) over distinct pairs of unit rows (Wang & Isola 2020); lower = more spread."""
    sq = (2 - 2 * unit @ unit.T).clamp(min=0)  # squared distances of unit vectors
    off = ~torch.eye(len(unit), dtype=torch.bool, device=unit.device)
    return torch.logsumexp(-t * sq[off], 0) - math.log(off.sum().item())


@dataclass(frozen=True)
class ContrastiveConfig:
    """What the encoder is trained to do.

    Args:
        loss: ``symmetric`` (query→item and item→query) or ``forward`` (query→item).
        temperature: the softmax temperature (its start with ``learn_temperature``).
        learn_temperature: learn the scale ``1 / temperature``, as CLIP does (capped at ``MAX_SCALE``).
        uniformity: weight of Wang & Isola's uniformity term (0: off).
    """

    loss: Literal["symmetric", "forward"] = "symmetric"
    temperature: float = 0.05
    learn_temperature: bool = False
    uniformity: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"model.objective.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        check_range("model.objective.temperature", self.temperature, above=0)
        check_range("model.objective.uniformity", self.uniformity, at_least=0)


@dataclass(frozen=True)
class FormulaConfig:
    """The training-free text formula that validation scores with (``TextScorer``'s settings).

    Args:
        decay: recency weight per step back in the user vector, in (0, 1].
        hubness: weight of the hubness correction (0: off).
        hubness_k: neighbours in an item's hubness.
        center: centre each catalogue on its mean item vector before scoring.
        whiten: also whiten it by its shrunk item covariance (0: off).
    """

    decay: float = 0.3
    hubness: float = 0.5
    hubness_k: int = 50
    center: bool = False
    whiten: float = 0.0

    def __post_init__(self) -> None:
        check_range("model.scorer.hubness_k", self.hubness_k, at_least=1)
        check_range("model.scorer.whiten", self.whiten, at_least=0, at_most=1)
        if not 0 < self.decay <= 1:
            raise ValueError(f"model.scorer.decay must be in (0, 1], got {self.decay}")


class EncoderFinetune(DomainEvalLoop, GenrecModule):
    """A ``SentenceTransformer`` trained contrastively on ``PairDataModule`` pairs.

    Args:
        encoder: sentence-transformers name or folder to start from.
        train_layers: ``all``, or how many top transformer layers train (with the modules after them).
        objective: the contrastive loss (``ContrastiveConfig``).
        scorer: the text formula validation scores with (``FormulaConfig``).
        max_seq_length: encoder tokens per item text (saved with the encoder).
        optim: AdamW (``OptimConfig``; the learned temperature gets no weight decay).
        encode_batch_size: texts per batch when encoding catalogues for validation.
        num_items: linked from the data module (logged).
        dataset_fingerprint: linked from the data module (logged).
    """

    def __init__(self, encoder: str = DEFAULT_ENCODER, train_layers: int | Literal["all"] = "all",
                 objective: ContrastiveConfig = ContrastiveConfig(), scorer: FormulaConfig = FormulaConfig(),
                 max_seq_length: int = 64, optim: OptimConfig = OptimConfig(lr=2e-5), encode_batch_size: int = 128,
                 num_items: int = 0, dataset_fingerprint: str = ""):
        super().__init__()
        check_range("model.max_seq_length", max_seq_length, at_least=1)
        self.save_config_hyperparameters("objective", "scorer", "optim")
        self.encoder = load_encoder(encoder)
        self.encoder.max_seq_length = max_seq_length
        self.encoder.train()  # loaded for inference (dropout off); Lightning keeps the mode a submodule has
        trained, total = freeze_below(self.encoder, train_layers)
        rank_zero_info(f"genrec: fine-tuning {trained} of {encoder}'s {total} transformer layers and the modules after them "
                       f"({sum(p.numel() for p in self.encoder.parameters() if p.requires_grad):,} parameters)")
        # the loss only ever sees embeddings, so it needs no model
        self.loss_fn = LOSSES[objective.loss](None, scale=1 / objective.temperature)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / objective.temperature))) if objective.learn_temperature else None
        self.val_metrics = RankingMetrics((1, 5, 10), (5, 10), mrr=False)
        self.test_metrics = RankingMetrics((1, 5, 10), (5, 10), mrr=False)
        self.best = -math.inf  # best val/ndcg@10 so far, whose encoder <run>/encoder holds
        self.best_folder = ""  # where that encoder was written (an earlier run folder, after a resume)
        self._scorer: TextScorer | None = None
        self.texts: list[str] = []  # the joint catalogue's item texts, from the data module

    # -- training --------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        dm = self.trainer.datamodule
        if not hasattr(dm, "item_texts"):
            raise TypeError(f"EncoderFinetune needs a data module of text pairs (genrec.data.pairs.PairDataModule); "
                            f"{type(dm).__name__} has no item_texts")
        self.texts = dm.item_texts

    def embed(self, texts: list[str]) -> Tensor:
        """(len(texts), E) unit vectors with gradients; empty texts give zero rows, as ``encode_with`` gives."""
        out = torch.zeros(len(texts), embedding_dim(self.encoder), device=self.device)
        present = [i for i, t in enumerate(texts) if t]
        if present:
            prepare = getattr(self.encoder, "preprocess", None) or self.encoder.tokenize  # renamed in sentence-transformers 6
            features = {k: v.to(self.device) if torch.is_tensor(v) else v
                        for k, v in prepare([texts[i] for i in present]).items()}
            out = out.index_put((torch.tensor(present, device=self.device),),
                                F.normalize(self.encoder(features)["sentence_embedding"], dim=-1))
        return out

    def queries_and_positives(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Query vectors (B, E), positives (B, E) and the batch's distinct item vectors (U, E)."""
        query, positive = batch["query"], batch["positive"]
        zero = torch.zeros(1, dtype=query.dtype, device=query.device)
        ids, local = torch.unique(torch.cat([zero, query.flatten(), positive]), return_inverse=True)  # ids[0] = 0: padding
        table = self.embed([self.texts[i] for i in ids.tolist()])  # (U, E), row 0 the padding's zeros
        local_query = local[1 : 1 + query.numel()].view_as(query)
        users = recency_user_vectors(table, local_query, self.scorer_config.decay, batch["lengths"])  # (B, E)
        return users, table[local[1 + query.numel():]], table[1:]

    def scale(self) -> Tensor | float:
        return self.log_scale.exp().clamp(max=MAX_SCALE) if self.log_scale is not None else self.loss_fn.scale

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        users, positives, items = self.queries_and_positives(batch)
        if self.log_scale is not None:
            self.loss_fn.scale = self.scale()
        contrastive = self.loss_fn.compute_loss_from_embeddings([users, positives], None)
        logs = {"train/contrastive": contrastive, "train/scale": torch.as_tensor(self.scale()).detach()}
        loss = contrastive
        if self.objective_config.uniformity:
            uniform = uniformity_loss(items[items.norm(dim=-1) > 0])
            loss = loss + self.objective_config.uniformity * uniform
            logs["train/uniformity"] = uniform
        self.log("train/loss", loss, prog_bar=True, batch_size=len(users))
        self.log_dict(logs, batch_size=len(users))
        return loss

    def optimizer_params(self) -> list[dict]:
        groups = [{"params": [p for p in self.encoder.parameters() if p.requires_grad]}]
        if self.log_scale is not None:
            groups.append({"params": [self.log_scale], "weight_decay": 0.0})
        return groups

    # -- validation and test: the text formula with the encoder as it is now -------------------

    @torch.no_grad()
    def catalogue_scorer(self) -> tuple[TextScorer, list[float]]:
        """The text formula over every evaluated catalogue, encoded now, and each one's mean pair cosine."""
        domains = [(lo, hi) for _, lo, hi in self.trainer.datamodule.eval_domains]
        texts = self.texts
        unit = torch.zeros(len(texts), embedding_dim(self.encoder))
        for lo, hi in domains:
            unit[lo : hi + 1] = torch.from_numpy(encode_with(self.encoder, texts[lo : hi + 1], self.hparams.encode_batch_size))
        f = self.scorer_config
        scorer = TextScorer(unit.to(self.device), f.decay, f.hubness, f.hubness_k, f.center, domains, f.whiten)
        return scorer, mean_pair_cosine(unit, domains)

    def rank_targets(self, batch: dict[str, Tensor], metrics: RankingMetrics,
                     domain: tuple[int, int] | None = None) -> Tensor:
        return self._scorer.rank_targets(batch, metrics, domain)

    def _start_eval(self, split: str) -> None:
        self._scorer, cosines = self.catalogue_scorer()
        values = {f"{split}/{name}/mean_cosine": c for (name, _, _), c in zip(self._eval_domains(), cosines)}
        values[f"{split}/mean_cosine"] = sum(cosines) / len(cosines)
        self._cosines = values

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def on_validation_epoch_end(self) -> None:
        values = self._log_split("val") | self._cosines
        self.log_dict(self._cosines)
        self._scorer = None
        if self.trainer.sanity_checking:
            return
        if float(values["val/ndcg@10"]) > self.best:
            self.best = float(values["val/ndcg@10"])
            self.best_folder = str(self.save_encoder("encoder", values))

    def on_test_epoch_end(self) -> None:
        self._log_split("test")
        self.log_dict(self._cosines)
        self._scorer = None

    def on_train_end(self) -> None:
        metrics = self.trainer.callback_metrics
        last = self.save_encoder("encoder-last", {k: v for k, v in metrics.items() if k.startswith("val/")})
        # a resumed run logs to a new folder: bring the best encoder, written before the stop, beside the last
        best = last.with_name("encoder")
        if self.trainer.is_global_zero and not best.exists() and Path(self.best_folder).is_dir():
            shutil.copytree(self.best_folder, best)

    # -- saving ------------------------------------------------------------------------------------

    def save_encoder(self, name: str, val: dict[str, Tensor | float]) -> Path:
        """Write the encoder to ``<run>/<name>`` atomically, with ``genrec_finetune.json`` (step, metrics, settings)."""
        trainer = self.trainer
        folder = Path(trainer.log_dir or trainer.default_root_dir) / name
        if trainer.is_global_zero:
            partial = folder.with_name(f".{name}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            self.encoder.save(str(partial))
            summary = {"step": trainer.global_step, "epoch": trainer.current_epoch,
                       "val": {k: round(float(v), 6) for k, v in val.items()},
                       "settings": {k: v for k, v in self.hparams.items()}, "data": dict(trainer.datamodule.hparams)}
            (partial / "genrec_finetune.json").write_text(json.dumps(summary, indent=2, default=str))
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
        return folder

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"best_val_ndcg@10": self.best, "best_encoder": self.best_folder}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.best = checkpoint.get("genrec", {}).get("best_val_ndcg@10", -math.inf)
        self.best_folder = checkpoint.get("genrec", {}).get("best_encoder", "")
