"""Item text of one or several catalogues (read as ``SequenceDataModule`` reads them) as sentence embeddings,
batched to train an item tokenizer; a random ``val_fraction`` of the items is held out."""
from __future__ import annotations

import hashlib
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from genrec.data.datamodule import PreprocessConfig, SequenceDataModule
from genrec.data.raw import DataError
from genrec.data.samplers import ResumableDataLoader, ShardedTrainSampler
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts

KCORE_KEYS = ("min_user_interactions", "min_item_interactions")
DATASET_KEYS = {"dataset", "root", "dataset_options", *KCORE_KEYS}


class ItemTextDataModule(L.LightningDataModule):
    """Embeddings of every item of ``datasets`` (a list of ``{dataset, root, dataset_options}``).

    Args:
        datasets: catalogues to learn from, each as the data keys of a ``SequenceDataModule``.
        text_encoder: sentence-transformers model (name or folder); saved with the tokenizer.
        text_template: ``str.format`` pattern over item text columns; saved with the tokenizer.
        val_fraction: share of items held out for validation.
    """

    def __init__(self, datasets: list[dict[str, Any]] | None = None, text_encoder: str = DEFAULT_ENCODER,
                 text_template: str = DEFAULT_TEMPLATE, val_fraction: float = 0.05, batch_size: int = 256,
                 seed: int = 0, encode_batch_size: int = 128):
        super().__init__()
        datasets = datasets or [{"dataset": "synthetic"}]
        for i, spec in enumerate(datasets):
            unknown = set(spec) - DATASET_KEYS
            if "dataset" not in spec or unknown:
                raise DataError(f"data.datasets[{i}] = {spec}: each entry needs 'dataset' and may have only {sorted(DATASET_KEYS)}")
        if not 0 <= val_fraction < 1:
            raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()
        self.text_encoder, self.text_template = text_encoder, text_template
        self._embeddings: torch.Tensor | None = None
        self._names: list[str] = []

    def _load(self) -> torch.Tensor:
        if self._embeddings is None:
            parts, names = [], []
            for spec in self.hparams.datasets:
                kcore = {k: spec[k] for k in KCORE_KEYS if k in spec}
                dm = SequenceDataModule(**{k: v for k, v in spec.items() if k not in kcore}, preprocess=PreprocessConfig(**kcore))
                texts = render_texts(dm.data.item_text, self.text_template, f"dataset {dm.data.name!r} ({spec.get('root')})")
                # the full list (padding row included) shares its cache entry with the recommender's catalogue
                parts.append(embed_texts(texts, self.text_encoder, self.hparams.encode_batch_size)[1:])
                names.append(dm.fingerprint)
            self._embeddings = torch.from_numpy(np.concatenate(parts))
            self._names = names
        return self._embeddings

    def prepare_data(self) -> None:
        self._load()

    @property
    def embeddings(self) -> torch.Tensor:
        """(N, E) embeddings of all items of all catalogues, in order."""
        return self._load()

    @property
    def embed_dim(self) -> int:
        return self.embeddings.shape[1]

    @property
    def num_items(self) -> int:
        return self.embeddings.shape[0]

    @property
    def fingerprint(self) -> str:
        self._load()
        joined = "+".join(self._names)
        return f"items:{self.num_items}:{hashlib.sha256(joined.encode()).hexdigest()[:12]}"

    def setup(self, stage: str | None = None) -> None:
        x = self.embeddings
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.seed))
        n_val = max(1, int(round(len(x) * self.hparams.val_fraction))) if self.hparams.val_fraction > 0 else 0
        self.val_set = TensorDataset(x[order[:n_val]])
        self.train_set = TensorDataset(x[order[n_val:]] if n_val < len(x) else x)

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(self.train_set, ShardedTrainSampler(self.train_set), batch_size=self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)
