"""Length-bucketed training batches: sequences of similar length share a batch.

Random batches of ML-1M pad almost every batch to the maximum length (200) although the median
training window is 93 items; attention costs grow with the square of the padded length, so
grouping similar lengths cuts that work (docs/performance.md), while every
training window is still used exactly once per epoch and the order of batches stays random.
"""
from __future__ import annotations

from typing import Sized

import numpy as np

from genrec.data.samplers import ShardedTrainSampler


def bucketed_order(lengths: np.ndarray, block: int, rng: np.random.Generator, pool_blocks: int = 64) -> np.ndarray:
    """A permutation whose consecutive ``block``-sized slices hold similar lengths, in random order.

    Shuffle, sort by length inside pools of ``pool_blocks`` blocks, cut blocks, shuffle the full
    blocks; each pool's last, partial block goes to the end so full blocks stay aligned.
    """
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
    """``ShardedTrainSampler`` whose epoch order comes in length-homogeneous steps.

    A step of all ranks together takes ``batch_size × num_replicas`` consecutive samples of the
    global order, so each step's samples are one length bucket; sharding, disjointness and
    mid-epoch resumption are the parent's.
    """

    def __init__(self, dataset: Sized, lengths: np.ndarray, batch_size: int, **kwargs):
        super().__init__(dataset, **kwargs)
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size

    def _order(self) -> list[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        return bucketed_order(self.lengths, self.batch_size * self.num_replicas, rng).tolist()
