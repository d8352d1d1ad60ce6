"""The catalogue's token tuples as a trie stored in CSR transition tables, one per token position.

Node ``n`` at level ``t`` has children ``indptr[t][n] : indptr[t][n+1]`` of ``codes[t]`` (tokens) and
``next[t]`` (child nodes; item ids at the last level), so a beam step is a few gathers (as in STATIC).
``paths[:, t]`` is every item's node at level t; the root is also a dense code → child table.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class CodeTrie:
    """Built from ``codes`` (N, T): the tokens of items ``item_ids`` (default 1..N)."""

    def __init__(self, codes: Tensor, item_ids: Tensor | None = None):
        codes_np = codes.detach().cpu().numpy().astype(np.int64)
        if codes_np.ndim != 2 or len(codes_np) == 0:
            raise ValueError(f"trie codes must be a non-empty (N, T) table, got shape {tuple(codes.shape)}")
        n, depth = codes_np.shape
        ids = np.arange(1, n + 1) if item_ids is None else item_ids.detach().cpu().numpy().astype(np.int64)
        order = np.lexsort(codes_np.T[::-1])  # rows sorted by token 0, then 1, ...
        rows, ids = codes_np[order], ids[order]
        self.depth = depth
        self.indptr: list[Tensor] = []
        self.codes: list[Tensor] = []
        self.next: list[Tensor] = []
        self.max_branch: list[int] = []
        parent = np.zeros(n, np.int64)  # each sorted row's node at the current level
        paths = np.zeros((n, depth), np.int64)  # in sorted row order
        for t in range(depth):
            new = np.ones(n, bool)
            new[1:] = (rows[1:, : t + 1] != rows[:-1, : t + 1]).any(1)  # first row of each child prefix
            child = np.cumsum(new) - 1  # child node id of each row
            if t == depth - 1 and not new.all():
                dup = np.flatnonzero(~new)[0]
                raise ValueError(f"items {ids[dup - 1]} and {ids[dup]} have the same tokens {rows[dup].tolist()}: "
                                 "resolve collisions first (ItemTokenizer.tokenize does)")
            num_parents = int(parent.max()) + 1
            counts = np.bincount(parent[new], minlength=num_parents)
            self.indptr.append(torch.from_numpy(np.concatenate([[0], np.cumsum(counts)])))
            self.codes.append(torch.from_numpy(rows[new, t].copy()))
            self.next.append(torch.from_numpy(ids[new] if t == depth - 1 else child[new]))
            self.max_branch.append(int(counts.max()))
            paths[:, t] = ids if t == depth - 1 else child
            parent = child
        self.paths = torch.empty(n, depth, dtype=torch.long)
        self.paths[torch.from_numpy(order)] = torch.from_numpy(paths)  # back to the input row order
        root_codes = self.codes[0]
        self.root_table = torch.full((int(root_codes.max()) + 1,), -1, dtype=torch.long)
        self.root_table[root_codes] = self.next[0]

    @property
    def num_items(self) -> int:
        return len(self.next[-1])

    @property
    def device(self) -> torch.device:
        return self.codes[0].device

    def to(self, device: torch.device | str) -> "CodeTrie":
        for table in (self.indptr, self.codes, self.next):
            table[:] = [x.to(device) for x in table]
        self.root_table = self.root_table.to(device)
        self.paths = self.paths.to(device)
        return self

    def num_nodes(self, level: int) -> int:
        """Nodes at ``level + 1`` (the children of level ``level``); at the last level, the items."""
        return len(self.codes[level])

    def root_children(self, vocab_size: int) -> tuple[Tensor, Tensor]:
        """Dense root transitions over codes 0..vocab_size-1: (next node or item id (V,), validity (V,))."""
        if vocab_size < len(self.root_table):
            raise ValueError(f"the trie uses first tokens up to {len(self.root_table) - 1}, beyond the model's {vocab_size} codes")
        table = torch.full((vocab_size,), -1, dtype=torch.long, device=self.root_table.device)
        table[: len(self.root_table)] = self.root_table
        return table.clamp(min=0), table >= 0

    def children(self, level: int, nodes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Tokens, next nodes (item ids at the last level) and validity (…, K) of the children of ``nodes`` (…)."""
        indptr = self.indptr[level]
        start = indptr[nodes]  # (…)
        count = indptr[nodes + 1] - start
        offset = torch.arange(self.max_branch[level], device=nodes.device)  # (K,)
        valid = offset < count[..., None]  # (…, K)
        idx = torch.where(valid, start[..., None] + offset, 0)
        return (self.codes[level][idx].masked_fill(~valid, 0), self.next[level][idx].masked_fill(~valid, 0), valid)
