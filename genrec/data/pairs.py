"""(query, next item) pairs from the training part of several domains' sequences, to fine-tune a text encoder.

A pair is a training position with at least one earlier item: the positive is its item, the query the one
previous item (``item``) or the last ``history`` items (``user``). A pair whose positive is in its own query
(a repeat) is left out and counted. Validation and test are ``MultiDomainDataModule``'s.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from genrec.data.batching import DomainBlockSampler
from genrec.data.datamodule import LoaderConfig
from genrec.data.multidomain import MultiDomainDataModule
from genrec.data.preprocess import SequenceData
from genrec.data.raw import DataError
from genrec.data.samplers import ResumableDataLoader
from genrec.tokenizers.text import DEFAULT_TEMPLATE, render_texts

QueryKind = Literal["item", "user"]
BatchMix = Literal["domain", "mixed"]


class TrainPairs(Dataset):
    """Pairs of the training parts: ``positive`` (P,) positions, ``length`` (P,) query items before each
    (1 .. history), ``user`` (P,); ``left_out`` counts repeats per user."""

    def __init__(self, data: SequenceData, train_end: np.ndarray, history: int):
        starts = data.offsets[:-1]
        sizes = np.maximum(train_end - starts, 0)
        user = np.repeat(np.arange(data.num_users), sizes)
        pos = np.repeat(starts, sizes) + np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        before = pos - starts[user]  # items before t in the user's sequence
        keep = before >= 1
        user, pos, before = user[keep], pos[keep], before[keep]
        length = np.minimum(before, history)
        repeat = np.zeros(len(pos), bool)
        for lag in range(1, history + 1):
            inside = lag <= length
            repeat[inside] |= data.items[pos[inside] - lag] == data.items[pos[inside]]
        self.left_out = np.bincount(user[repeat], minlength=data.num_users)
        self.user, self.positive, self.length = user[~repeat], pos[~repeat], length[~repeat]

    def __len__(self) -> int:
        return len(self.positive)

    def keep_users(self, chosen: np.ndarray) -> None:
        """Keep only the pairs of the users where ``chosen`` (a mask over all users) is true."""
        keep = chosen[self.user]
        self.user, self.positive, self.length = self.user[keep], self.positive[keep], self.length[keep]
        self.left_out = np.where(chosen, self.left_out, 0)

    def __getitem__(self, i: int) -> int:
        return i


class PairCollator:
    """Pair indices → ``query`` (B, history) item ids, oldest first and right-padded with 0,
    ``lengths`` (B,), ``positive`` (B,) item ids, ``domain`` (B,) domain indices."""

    def __init__(self, data: SequenceData, pairs: TrainPairs, domain: np.ndarray, history: int):
        self.items, self.pairs, self.domain, self.history = data.items, pairs, domain, history

    def __call__(self, batch: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(batch, np.int64)
        pos, length = self.pairs.positive[idx], self.pairs.length[idx]
        back = np.arange(self.history)[None] - length[:, None]  # (B, history): column j is item t - length + j
        inside = back < 0
        query = np.where(inside, self.items[np.where(inside, pos[:, None] + back, 0)], 0)
        return {"query": torch.from_numpy(query), "lengths": torch.from_numpy(length),
                "positive": torch.from_numpy(self.items[pos].astype(np.int64)), "domain": torch.from_numpy(self.domain[idx])}


@dataclass(frozen=True)
class PairConfig:
    """Which pairs a batch holds.

    Args:
        query: ``item`` (the previous item's text) or ``user`` (the last ``history`` items).
        history: items in a ``user`` query (the text formula's window).
        batches: ``domain`` (every batch one domain's pairs, so in-batch negatives share its catalogue) or
            ``mixed``.
    """

    query: QueryKind = "item"
    history: int = 5
    batches: BatchMix = "domain"

    def __post_init__(self) -> None:
        if self.query not in ("item", "user"):
            raise DataError(f"data.pairing.query must be 'item' (the previous item) or 'user' (the last history items), got {self.query!r}")
        if self.batches not in ("domain", "mixed"):
            raise DataError(f"data.pairing.batches must be 'domain' (one domain per batch) or 'mixed', got {self.batches!r}")
        if self.history < 1:
            raise DataError(f"data.pairing.history must be at least 1, got {self.history}")


class PairDataModule(MultiDomainDataModule):
    """Query/positive pairs of several domains for contrastive encoder fine-tuning.

    Args:
        domains: as ``MultiDomainDataModule``'s.
        pairing: the query kind, its history and how batches mix domains (``PairConfig``).
        domain_balance: each domain's share of the pairs drawn is ``pairs_d ** (1 - domain_balance)``
            (1: every domain equally often; 0: as the data come).
        text_template: ``str.format`` pattern over the item text columns.
        loader: ``batch_size`` is the pairs per step (the in-batch negatives).
        data_options: ``MultiDomainDataModule``'s other arguments (``eval_on``, ``max_seq_len``, ...).
    """

    def __init__(self, domains: list[dict[str, Any]], pairing: PairConfig = PairConfig(), domain_balance: float = 1.0,
                 text_template: str = DEFAULT_TEMPLATE, loader: LoaderConfig = LoaderConfig(batch_size=64),
                 **data_options: Any):
        super().__init__(domains, domain_balance=domain_balance, loader=loader, **data_options)
        if loader.batch_size < 2:
            raise DataError(f"data.loader.batch_size must be at least 2: the other pairs of a batch are the negatives, got {loader.batch_size}")
        self.hparams.update(pairing=asdict(pairing), text_template=text_template)
        self.pairing = pairing
        self.query_items = 1 if pairing.query == "item" else pairing.history
        self._texts: list[str] | None = None

    @property
    def item_texts(self) -> list[str]:
        """One text per id of the joint catalogue (row 0, the padding, is "")."""
        if self._texts is None:
            self._texts = render_texts(self.data.item_text, self.hparams.text_template, f"domains {self.names}")
        return self._texts

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        self.item_texts  # a template error should stop the run before any training
        self.pairs = TrainPairs(self.data, self.train_end, self.query_items)
        if self.train_user_mask is not None:
            self.pairs.keep_users(self.train_user_mask)
        self.pair_domain = self.domain_of(self.pairs.user)
        self.pair_collator = PairCollator(self.data, self.pairs, self.pair_domain, self.query_items)
        user_domain = self.domain_of(np.arange(self.data.num_users))
        left_out = np.bincount(user_domain, weights=self.pairs.left_out, minlength=len(self.names))
        if not len(self.pairs):
            raise DataError(f"domains {self.names} have no training pair (a training item after another, not a repeat)")
        rank_zero_info(f"genrec: {self.pairing.query} pairs from training parts only: "
                       + ", ".join(f"{n} {(self.pair_domain == d).sum():,} ({int(left_out[d]):,} repeats left out)"
                                   for d, n in enumerate(self.names)))

    def train_dataloader(self) -> ResumableDataLoader:
        lc = self.loader_config
        mixed = self.pairing.batches == "mixed"
        sampler = DomainBlockSampler(self.pairs, self.pair_domain, 1 if mixed else lc.batch_size, self.hparams.domain_balance,
                                     shards=lc.shards)
        per_block = sampler.block
        rank_zero_info(f"genrec: pairs per epoch ({self.pairing.batches} batches, data.domain_balance="
                       f"{self.hparams.domain_balance:g}): " + ", ".join(
                           f"{n} {(self.pair_domain == d).sum():,} -> {sampler.blocks.get(d, 0) * per_block:,}"
                           for d, n in enumerate(self.names)))
        return ResumableDataLoader(self.pairs, sampler, batch_size=lc.batch_size, collate_fn=self.pair_collator,
                                   num_workers=lc.num_workers, persistent_workers=lc.num_workers > 0)
