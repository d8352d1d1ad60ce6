"""Training the item tokenizer as an autoencoder of item text embeddings (squared L2 reconstruction loss),
logging ``val/cosine`` and ``val/collision_rate`` (items whose tokens an earlier item has)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from genrec.errors import check_range
from genrec.modules.base import GenrecModule
from genrec.modules.checkpoints import CheckpointMismatchError, load_checkpoint
from genrec.modules.optim import OptimConfig
from genrec.tokenizers.fsq import DEFAULT_LEVELS
from genrec.tokenizers.item_tokenizer import ItemTokenizer


class TokenizerAutoencoder(GenrecModule):
    """Fits an ``ItemTokenizer``; the embedding width, encoder and template come from the data module.

    Args:
        num_tokens: tokens per item (T).
        levels: FSQ levels per channel (codebook size = their product).
        hidden_dim: width of each chunk's encoder/decoder MLP.
        optim: AdamW (``OptimConfig``; no weight decay unless set).
        num_items: linked from the data module (logged).
        dataset_fingerprint: linked from the data module (logged).
    """

    def __init__(self, num_tokens: int = 4, levels: Sequence[int] = DEFAULT_LEVELS, hidden_dim: int = 256,
                 optim: OptimConfig = OptimConfig(weight_decay=0.0), num_items: int = 0, dataset_fingerprint: str = ""):
        super().__init__()
        for key, value in (("num_tokens", num_tokens), ("hidden_dim", hidden_dim)):
            check_range(f"model.{key}", value, at_least=1)
        self.save_config_hyperparameters("optim")
        self.tokenizer: ItemTokenizer | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        dm = self.trainer.datamodule
        for name in ("embed_dim", "text_encoder", "text_template", "embeddings"):
            if not hasattr(dm, name):
                raise TypeError(f"TokenizerAutoencoder needs a data module with item embeddings "
                                f"(genrec.data.item_text.ItemTextDataModule); {type(dm).__name__} has no {name!r}")
        hp = self.hparams
        self.tokenizer = ItemTokenizer(dm.embed_dim, hp.num_tokens, hp.levels, hp.hidden_dim, dm.text_encoder, dm.text_template)

    def _loss(self, x: Tensor) -> tuple[Tensor, Tensor]:
        recon, _ = self.tokenizer(x)
        return ((recon - x) ** 2).sum(-1).mean(), F.cosine_similarity(recon, x, dim=-1).mean()

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        loss, cosine = self._loss(batch[0])
        self.log_dict({"val/loss": loss, "val/cosine": cosine}, batch_size=len(batch[0]))

    def on_validation_epoch_end(self) -> None:
        x = self.trainer.datamodule.embeddings.to(self.device)
        with torch.no_grad():
            codes = self.tokenizer.fsq.codes_to_indices(self.tokenizer.fsq(self.tokenizer.latents(x)))  # (N, T)
        self.log("val/collision_rate", 1.0 - codes.unique(dim=0).shape[0] / len(codes))

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"tokenizer": dict(self.tokenizer.init_args)}


def load_tokenizer(path: str) -> ItemTokenizer:
    """The trained tokenizer of a ``TokenizerAutoencoder`` checkpoint, frozen, in eval mode."""
    ckpt = load_checkpoint(path)
    config = ckpt.get("genrec", {}).get("tokenizer")
    if config is None:
        raise CheckpointMismatchError(f"{path} holds no item tokenizer: pass a checkpoint written by "
                                      "'python train.py fit --config configs/tokenizer/<dataset>.yaml'")
    tokenizer = ItemTokenizer(**config)
    state = {k[len("tokenizer."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("tokenizer.")}
    tokenizer.load_state_dict(state)
    return tokenizer.eval().requires_grad_(False)
