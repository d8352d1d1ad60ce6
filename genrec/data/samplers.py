"""Samplers and a loader that make distributed training and evaluation exact and resumable (docs/distributed.md).

They subclass ``DistributedSampler`` so that Lightning keeps them instead of injecting its own; with one
process they reduce to a plain shuffle (training) and the identity order (evaluation).
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Literal, Sized, get_args

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from genrec.errors import DataError


def world() -> tuple[int, int]:
    """(number of processes, this process's rank) of the default process group; (1, 0) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


Shards = Literal["interleaved", "contiguous"]


def check_shards(shards: str) -> None:
    """``data.loader.shards`` is one of ``Shards``."""
    if shards not in get_args(Shards):
        raise DataError(f"data.loader.shards must be 'interleaved' or 'contiguous' (got {shards!r})")


def block(n: int, num_replicas: int, rank: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``; the blocks' lengths differ by at most one."""
    return range(rank * n // num_replicas, (rank + 1) * n // num_replicas)


def replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """``num_replicas`` and ``rank``, each the default process group's where None."""
    w, r = world()
    return w if num_replicas is None else num_replicas, r if rank is None else rank


def default_seed() -> int:
    # seed_everything exports PL_GLOBAL_SEED to every rank, so all ranks agree on the data order.
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EvalShardSampler(DistributedSampler):
    """Deterministic, unpadded shard of an evaluation set, so every user is scored once: ``range(rank, len,
    num_replicas)``, or (``contiguous``) the samples whose ``keys`` (default: the index) fall in the rank's block."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 shards: Shards = "interleaved", keys: np.ndarray | None = None):
        check_shards(shards)
        num_replicas, rank = replicas(num_replicas, rank)
        if len(dataset) < num_replicas:
            raise ValueError(f"{len(dataset)} evaluation users cannot be shared by {num_replicas} processes without "
                             "leaving one of them idle: run evaluation with fewer devices (e.g. --trainer.devices 1)")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        if shards == "interleaved":
            self.indices: range | np.ndarray = range(rank, len(dataset), num_replicas)
        elif keys is None:
            self.indices = block(len(dataset), num_replicas, rank)
        else:
            if len(keys) != len(dataset):
                raise ValueError(f"one key per evaluation sample: got {len(keys)} for {len(dataset)}")
            place = np.empty(len(keys), np.int64)  # each sample's place in key order
            place[np.argsort(keys, kind="stable")] = np.arange(len(keys))
            own = block(len(keys), num_replicas, rank)
            self.indices = np.flatnonzero((place >= own.start) & (place < own.stop))
        self.num_samples = len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices.tolist() if isinstance(self.indices, np.ndarray) else self.indices)

    def __len__(self) -> int:
        return self.num_samples


class ShardedTrainSampler(DistributedSampler):
    """Disjoint, equally long, per-epoch reshuffled training shards (every W-th index of one permutation of
    ``(seed, epoch)``, or a contiguous block each); the next ``__iter__`` begins at ``start`` (samples consumed)."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None,
                 seed: int | None = None, shuffle: bool = True, shards: Shards = "interleaved"):
        check_shards(shards)
        num_replicas, rank = replicas(num_replicas, rank)
        if len(dataset) < num_replicas:
            raise ValueError(f"{len(dataset)} training sequences cannot be split into {num_replicas} non-empty "
                             "shards: use fewer processes or more data")
        seed = default_seed() if seed is None else seed
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.shards = shards
        self.used = len(dataset) - len(dataset) % num_replicas  # global samples per epoch
        self.start = 0

    @property
    def contiguous(self) -> bool:
        return self.shards == "contiguous"

    def _shard(self, start: int) -> range:
        """Positions of ``_order()`` this rank visits from ``start`` (global samples consumed) on."""
        if self.contiguous:
            return range(start // self.num_replicas, len(self))
        return range(start + self.rank, self.used, self.num_replicas)

    def __len__(self) -> int:
        return self.used // self.num_replicas

    def _block(self) -> range:
        """The indices this rank owns: all of them when interleaved."""
        if self.contiguous:
            return block(len(self.dataset), self.num_replicas, self.rank)
        return range(len(self.dataset))

    def _rng(self) -> np.random.Generator:
        """The epoch's random stream; each contiguous rank of several has its own."""
        key = (self.seed, self.epoch, self.rank) if self.contiguous and self.num_replicas > 1 else (self.seed, self.epoch)
        return np.random.default_rng(key)

    def _order(self) -> list[int]:
        """The epoch's order of the rank's block (subclasses may group it, e.g. by length)."""
        own = self._block()
        if not self.shuffle:
            return list(own)
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.dataset), generator=g).numpy()
        return perm[(perm >= own.start) & (perm < own.stop)].tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        start, self.start = self.start, 0
        return iter([order[i] for i in self._shard(start)])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` over a ``ShardedTrainSampler`` whose ``state_dict`` (in Lightning's checkpoints) counts
    the batches handed out, so a resumed run continues with the next samples."""

    def __init__(self, dataset: Any, sampler: ShardedTrainSampler, **kwargs: Any):
        if not isinstance(sampler, ShardedTrainSampler):
            raise TypeError("ResumableDataLoader needs a ShardedTrainSampler")
        super().__init__(dataset, sampler=sampler, **kwargs)
        self._epoch_start = 0  # global position where the current pass over the data began
        self._served = 0  # batches handed out by this rank in the current pass

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: the sampler is read at the first batch, after Lightning's set_epoch.
        sampler: ShardedTrainSampler = self.sampler  # type: ignore[assignment]
        self._epoch_start, self._served = sampler.start, 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        sampler: ShardedTrainSampler = self.sampler  # type: ignore[assignment]
        consumed = min(self._epoch_start + self._served * self.batch_size * sampler.num_replicas, sampler.used)
        return {
            "epoch": sampler.epoch,
            "consumed": consumed,
            "seed": sampler.seed,
            "num_replicas": sampler.num_replicas,
            "batch_size": self.batch_size,
            "dataset_len": len(self.dataset),
            "used": sampler.used,
            "shards": sampler.shards,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler: ShardedTrainSampler = self.sampler  # type: ignore[assignment]
        if state["dataset_len"] != len(self.dataset):
            raise ValueError(f"the checkpoint's training data had {state['dataset_len']} sequences, this run has "
                             f"{len(self.dataset)}: resume with the data settings the run was started with "
                             "(its config.yaml)")
        sampler.set_epoch(state["epoch"])
        sampler.seed = state["seed"]
        saved_used = state.get("used", state["dataset_len"] - state["dataset_len"] % state["num_replicas"])
        if not 0 < state["consumed"] < saved_used:  # saved at an epoch boundary: start the next pass afresh
            sampler.start = 0
            return
        saved_shards = state.get("shards", "interleaved")
        if saved_shards != sampler.shards:
            raise ValueError(f"the checkpoint was saved mid-epoch with data.loader.shards={saved_shards}; this run has "
                             f"{sampler.shards}: resume it with the same setting, or from a checkpoint written at the "
                             "end of an epoch")
        same = (state["num_replicas"], state["batch_size"]) == (sampler.num_replicas, self.batch_size)
        if not same:
            raise ValueError(f"the checkpoint was saved mid-epoch by {state['num_replicas']} process(es) with "
                             f"data.loader.batch_size={state['batch_size']}; this run has {sampler.num_replicas} and "
                             f"{self.batch_size}: resume it with the same number of processes and batch size, or from a "
                             "checkpoint written at the end of an epoch")
        sampler.start = state["consumed"]
