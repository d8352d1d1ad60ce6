"""Length-bucketed training batches (less padding: docs/performance.md) and one-domain steps."""
from __future__ import annotations

from typing import Sized

import numpy as np

from genrec.data.samplers import ShardedTrainSampler


def bucketed_order(lengths: np.ndarray, block: int, rng: np.random.Generator, pool_blocks: int = 64) -> np.ndarray:
    """A permutation whose ``block``-sized slices hold similar lengths (sorted within pools of ``pool_blocks``
    blocks), in random order; each pool's partial block goes to the end."""
    order = rng.permutation(len(lengths))
    full, partial = [], []
    pool = block * pool_blocks
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        cut = len(chunk) - len(chunk) % block
        full += [chunk[i : i + block] for i in range(0, cut, block)]
        if cut < len(chunk):
            partial.append(chunk[cut:])
    rng.shuffle(full)
    return np.concatenate(full + partial) if full or partial else order


class BucketedTrainSampler(ShardedTrainSampler):
    """``ShardedTrainSampler`` whose steps (``batch_size × num_replicas`` samples; contiguous: each rank's
    batch) are one length bucket each."""

    def __init__(self, dataset: Sized, lengths: np.ndarray, batch_size: int, **kwargs):
        super().__init__(dataset, **kwargs)
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size

    def _order(self) -> list[int]:
        own = self._block()
        step = self.batch_size * (1 if self.contiguous else self.num_replicas)
        return (bucketed_order(self.lengths[own.start : own.stop], step, self._rng()) + own.start).tolist()


def domain_blocks(sizes: np.ndarray, total_blocks: int, balance: float) -> np.ndarray:
    """Blocks per domain in an epoch of ``total_blocks``: shares ``∝ size^(1 - balance)`` (0 = as the
    data come, 1 = every domain equally), rounded by largest remainder, at least one block each."""
    if not 0 <= balance <= 1:
        raise ValueError(f"domain balance must be in [0, 1], got {balance}")
    sizes = np.asarray(sizes, np.float64)
    share = sizes ** (1 - balance)
    share = share / share.sum() * max(total_blocks, len(sizes))
    blocks = np.floor(share).astype(np.int64)
    left = int(max(total_blocks, len(sizes)) - blocks.sum())
    blocks[np.argsort(-(share - blocks), kind="stable")[:left]] += 1
    return np.maximum(blocks, 1)


class DomainBlockSampler(ShardedTrainSampler):
    """``ShardedTrainSampler`` whose every step holds windows of one domain: domain d gets ``domain_blocks`` of the
    epoch's steps, its windows drawn cycling through fresh permutations (bucketed by ``lengths`` if given)."""

    def __init__(self, dataset: Sized, domains: np.ndarray, batch_size: int, balance: float = 0.0,
                 lengths: np.ndarray | None = None, **kwargs):
        super().__init__(dataset, **kwargs)
        if self.contiguous:
            raise ValueError("data.loader.shards: 'contiguous' is not supported with one-domain steps (multi-domain "
                             "or pair data): set data.loader.shards to 'interleaved'")
        self.domains = np.asarray(domains, np.int64)
        if len(self.domains) != len(dataset):
            raise ValueError(f"one domain per training window: got {len(self.domains)} for {len(dataset)} windows")
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.block = batch_size * self.num_replicas
        present = np.unique(self.domains)
        sizes = np.array([(self.domains == d).sum() for d in present])
        self.blocks = dict(zip(present.tolist(), domain_blocks(sizes, len(dataset) // self.block, balance).tolist()))
        self.used = sum(self.blocks.values()) * self.block  # global samples per epoch

    def _order(self) -> list[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        steps = []
        for d, n in self.blocks.items():
            own = np.flatnonzero(self.domains == d)
            need = n * self.block
            picks = np.concatenate([rng.permutation(own) for _ in range(-(-need // len(own)))])[:need]
            if self.lengths is not None:
                picks = picks[bucketed_order(self.lengths[picks], self.block, rng)]
            steps += np.split(picks, n)
        rng.shuffle(steps)
        return np.concatenate(steps).tolist()
