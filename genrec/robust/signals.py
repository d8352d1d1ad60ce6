"""Untrained per-user signals that ``FraudsterReweighting`` ranks users by beside its calibrator.

A calibrator trained on one simulated attack learns which *side* of the real users its fakes lie
on, and attacks lie on different sides. A recommender that has fitted them predicts random,
bandwagon and segment fakes *worse* than real users and model-based fakes *better* (their fillers
were chosen for being predictable; docs/results/robust.md measures it), so "low fit = fake" learned
from random fakes ranks model-based fakes below real users. A signal is untrained instead: it scores every user from what the callback reads at an update
(``UserView``), larger meaning more suspect, and the update ranks each user by its percentiles
under the calibrator and every signal, combined as ``WeightUpdate.combine`` says (Fisher's sum or the largest).

``AnomalySignal``: the sum over per-user statistics of their distance from the users' median in
units of the median absolute deviation, large on either side. The statistics: the user's mean fit,
and the mean log training count of the user's items (fakes plant unpopular targets and draw fillers
more evenly than real users do), the latter scanned over windows: over the whole history and over
its last ``w`` items for each ``w`` in ``windows``, the largest of those distances counting. A long
fake profile dilutes its few unpopular targets in a whole-history mean (on ML-1M the model-based
fakes that kept their weight under the whole-history score were mostly long ones), while the window
that holds them stays anomalous.

``CoordinationSignal``: lockstep. Fakes built from real profiles (``copy``, ``augmented``) look like
real users one by one; what gives them away is that dozens of them took up the same few items in
the recent part of their histories (where the targets must be for a model to train on them). For
each item, its count in users' last ``w`` items is compared with what its overall training count
predicts (a binomial z-score: ``z = (r − ρc) / sqrt(ρ(1 − ρ)c + 1)``, ``ρ`` the share of all
interactions that are recent); a user scores the sum of ``z − threshold`` over the items of its
recent window with ``z`` above ``threshold``, over each window ``w`` in ``windows``, the largest
percentile counting. It needs no knowledge of the targets, reads only histories, and is sparse
(ML-20M-sized data in seconds: ``benchmarks/robust_coordination.py``).

``DenseBlockSignal``: position-free lockstep. Fakes that carry the same few targets form a dense
block of users × items wherever the targets sit in their histories; their own histories (copied,
augmented) are otherwise unrelated. The block shows in item pairs: two of the targets are held
together by many users (``support``), far more often than their popularity predicts (``lift``,
``cooccurrence · U / (deg_i · deg_j)``, popularity-discounted by construction). Item pairs with at
least ``min_support`` users and a lift of at least ``min_lift`` are *strong*, weighted
``1 + log(lift / min_lift)``; a user scores the summed weight of the strong pairs inside its
history. With ``max_coherence`` only lockstep pairs count, and they link items into groups
(connected components): a user scores the pairs of one group's items it holds, so a fake carrying 3
of 5 targets scores 3 even where some of its pairs alone missed a bar. Only items with ``min_support`` to
``U / min_lift`` users can be in a strong pair (a more popular item cannot reach the lift), so the
co-occurrence is counted over those items only, in chunks (``scipy.sparse``), each user's
``max_items`` rarest of them (long histories would otherwise dominate the cost).
A global densest-block peeling (FRAUDAR) does not find these fakes: each fake adds only a handful
of edges, while the densest blocks of a real log are organic and far denser (docs/results/robust.md).

A new signal subclasses ``UserSignal`` (a ``name`` for its logs, ``robust/<name>_*``, and
``score``) and is listed in the callback's ``signals``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Union

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
import torch
from torch import Tensor

from genrec.robust.detector import max_percentiles


@dataclass
class UserView:
    """What a signal may read at an update. Rows: the data module's users, then (``train_known``)
    the decoys; the first ``num_reference`` rows are the population every row is scored against."""

    histories: list[np.ndarray]  # training histories (item ids)
    timestamps: list[np.ndarray]
    mean_fit: Tensor  # (U,) the recommender's mean next-item cosine over each user's window
    counts: np.ndarray  # (N+1,) training interactions per item id, fakes included
    num_reference: int

    def __post_init__(self) -> None:
        if not len(self.histories) == len(self.timestamps) == len(self.mean_fit) >= self.num_reference > 0:
            raise ValueError(f"UserView: {len(self.histories)} histories, {len(self.timestamps)} timestamp rows, "
                             f"{len(self.mean_fit)} fits and {self.num_reference} reference users do not fit together")


@dataclass(frozen=True, kw_only=True)
class UserSignal:
    """A per-user fraud score that needs no training; larger is more suspect. A signal is a small
    typed config (its own options, validated on construction) with a ``score`` method.

    Args:
        weight: the signal's weight in the update's ranking: a user's percentile under it counts
            multiplied by ``weight`` (0: scored and logged, never ranked by).
        flag_above: a score above which a user is flagged *with confidence* and driven to
            ``WeightUpdate.flagged_weight`` (None: never). Set it where the signal's scores on
            clean data stay below it (docs/results/robust.md); ``flag_above`` needs a signal whose
            scale means the same on any data, such as the dense block's lockstep pairs.
    """

    weight: float = 1.0
    flag_above: float | None = None
    needs_model: ClassVar[bool] = True  # False: reads histories only, so it can run before training

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ValueError(f"{type(self).__name__}: weight must be in [0, 1] (got {self.weight})")
        if self.flag_above is not None and self.flag_above <= 0:
            raise ValueError(f"{type(self).__name__}: flag_above must be positive or null (got {self.flag_above})")

    @property
    def name(self) -> str:
        return self.kind

    def score(self, view: UserView) -> np.ndarray:  # (U,)
        raise NotImplementedError(f"{type(self).__name__} must implement score(view)")


@dataclass(frozen=True, kw_only=True)
class AnomalySignal(UserSignal):
    """Two-sided robust z-scores of the mean fit and of the most anomalous log-count window.

    Args:
        windows: besides the whole history, the log-count statistic is read over each history's
            last ``w`` items for each ``w`` here (``[]``: the whole history only).
    """

    kind: Literal["anomaly"] = "anomaly"
    windows: tuple[int, ...] = (10, 50)

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(int(w) < 1 for w in self.windows):
            raise ValueError(f"AnomalySignal: windows must be positive item counts (got {list(self.windows)})")
        object.__setattr__(self, "windows", tuple(int(w) for w in self.windows))

    def statistics(self, view: UserView) -> Tensor:
        """(U, 2 + len(windows)): mean fit, then the mean log count over the whole history and each window."""
        return torch.cat([view.mean_fit.float()[:, None], log_count_windows(view.histories, view.counts, self.windows)], 1)

    def score(self, view: UserView) -> np.ndarray:
        stats = self.statistics(view)
        return anomaly_scores(stats, stats[: view.num_reference], anomaly_groups(stats.shape[1]))


@dataclass(frozen=True, kw_only=True)
class CoordinationSignal(UserSignal):
    """Users whose recent items include items taken up in a burst: far more often in users' recent
    windows than their popularity predicts (module docs).

    Args:
        windows: recent-window lengths (items); the most suspicious window counts.
        threshold: the z-score above which an item's recent count is a burst (3: three standard
            deviations above the count its popularity predicts).
    """

    kind: Literal["coordination"] = "coordination"
    windows: tuple[int, ...] = (10, 50)
    threshold: float = 3.0
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.windows or any(int(w) < 1 for w in self.windows):
            raise ValueError(f"CoordinationSignal: windows must be one or more positive item counts (got {list(self.windows)})")
        if self.threshold < 0:
            raise ValueError(f"CoordinationSignal: threshold is a z-score, >= 0 (got {self.threshold})")
        object.__setattr__(self, "windows", tuple(int(w) for w in self.windows))

    def item_bursts(self, histories: list[np.ndarray], window: int, num_items: int) -> np.ndarray:
        """(N+1,) each item's z-score of its count in the histories' last ``window`` items."""
        lengths = np.array([len(h) for h in histories], np.int64)
        items = np.concatenate(histories) if len(histories) else np.zeros(0, np.int64)
        recent = np.concatenate([h[-window:] for h in histories]) if len(histories) else items
        c = np.bincount(items, minlength=num_items + 1).astype(np.float64)
        r = np.bincount(recent, minlength=num_items + 1).astype(np.float64)
        rho = np.minimum(lengths, window).sum() / max(1, lengths.sum())
        return (r - rho * c) / np.sqrt(rho * (1 - rho) * c + 1)

    def window_scores(self, view: UserView) -> list[np.ndarray]:
        """Per window: each user's summed excess ``z - threshold`` over its recent items' bursts (0: none)."""
        num_items = max(len(view.counts) - 1, max((int(h.max()) for h in view.histories if len(h)), default=0))
        out = []
        for w in self.windows:
            excess = np.maximum(self.item_bursts(view.histories, w, num_items) - self.threshold, 0.0)
            excess[0] = 0.0
            out.append(np.array([excess[np.unique(h[-w:])].sum() for h in view.histories]))
        return out

    def score(self, view: UserView) -> np.ndarray:
        per_window = self.window_scores(view)
        return per_window[0] if len(per_window) == 1 else max_percentiles(*per_window)


@dataclass(frozen=True, kw_only=True)
class DenseBlockSignal(UserSignal):
    """Users holding many strong item pairs: pairs far more often held together than their
    popularity predicts, by at least ``min_support`` users (module docs).

    Args:
        min_lift: the lift above which a pair counts (``cooccurrence · U / (deg_i · deg_j)``).
        min_support: the fewest users that must hold a pair, as a fraction of the users (a block
            smaller than that is not an attack worth the name).
        max_items: per user, how many of its candidate items (the rarest first) count towards
            co-occurrence; every item still counts when the user is scored.
        min_holders: the fewest users that must hold a pair whatever the data's size (on a small log a
            fraction is a handful of users, whose pairs' lift and coherence are noise).
        chunk: items per co-occurrence block (memory: ``chunk × candidates`` counts at most).
        max_coherence: keep only *lockstep* pairs, whose holders share at most this much besides
            the pair (``holder_coherence``), a user then scoring the pairs it holds within a group of
            linked lockstep pairs (null: the summed weight of every strong pair held).
        min_group: the fewest items a lockstep group must link to count (with ``max_coherence``).
            Organic lockstep pairs stand alone (two-item groups); fakes carrying subsets of one
            set of targets link three or more.
    """

    kind: Literal["dense_block"] = "dense_block"
    min_lift: float = 20.0
    min_support: float = 0.0025
    max_items: int = 200
    min_holders: int = 2
    chunk: int = 2048
    max_coherence: float | None = None
    min_group: int = 2
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.min_lift > 1:
            raise ValueError(f"DenseBlockSignal: min_lift must be above 1 (independent items have lift 1), got {self.min_lift}")
        if not 0 < self.min_support < 1:
            raise ValueError(f"DenseBlockSignal: min_support is a fraction of the users, in (0, 1); got {self.min_support}")
        if self.max_items < 2 or self.chunk < 1 or self.min_holders < 2 or self.min_group < 2:
            raise ValueError(f"DenseBlockSignal: max_items, min_holders and min_group must be >= 2 and chunk >= 1, got "
                             f"{self.max_items}, {self.min_holders}, {self.min_group}, {self.chunk}")
        if self.max_coherence is not None and not self.max_coherence > 0:
            raise ValueError(f"DenseBlockSignal: max_coherence must be positive or null, got {self.max_coherence}")
        if self.min_group != 2 and self.max_coherence is None:
            raise ValueError(f"DenseBlockSignal: min_group ({self.min_group}) counts lockstep groups, which need max_coherence; set it or drop min_group")

    def strong_pairs(self, histories: list[np.ndarray], num_items: int) -> sp.csr_matrix:
        """(N+1, N+1) symmetric: each strong pair's weight ``1 + log(lift / min_lift)``, else 0."""
        users = interaction_matrix(histories, num_items)
        num_users = users.shape[0]
        deg = np.asarray(users.sum(0)).ravel()
        support = max(self.min_holders, int(np.ceil(self.min_support * num_users)))
        candidates = np.flatnonzero((deg >= support) & (deg * self.min_lift <= num_users))
        empty = sp.csr_matrix((num_items + 1, num_items + 1))
        if len(candidates) < 2:
            return empty
        sub = _rarest_per_row(users[:, candidates].tocsr(), deg[candidates], self.max_items)  # (U, C)
        by_item = sub.T.tocsr()  # (C, U)
        rows, cols, weights = [], [], []
        for lo in range(0, len(candidates), self.chunk):
            co = (by_item[lo : lo + self.chunk] @ sub).tocoo()  # (chunk, C) co-occurrence counts
            i, j = co.row + lo, co.col
            lift = co.data * num_users / (deg[candidates[i]] * deg[candidates[j]])
            keep = (i < j) & (co.data >= support) & (lift >= self.min_lift)
            rows.append(candidates[i[keep]])
            cols.append(candidates[j[keep]])
            weights.append(1 + np.log(lift[keep] / self.min_lift))
        r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
        return sp.csr_matrix((np.r_[w, w], (np.r_[r, c], np.r_[c, r])), shape=empty.shape)

    def score(self, view: UserView) -> np.ndarray:
        num_items = max(len(view.counts) - 1, max((int(h.max()) for h in view.histories if len(h)), default=0))
        users = interaction_matrix(view.histories, num_items)
        pairs = self.strong_pairs(view.histories, num_items)
        if self.max_coherence is None:
            return np.asarray((users @ pairs).multiply(users).sum(1)).ravel() / 2  # each pair seen from both items
        return group_pairs_held(users, self.lockstep_groups(users, pairs))

    def lockstep_groups(self, users: sp.csr_matrix, pairs: sp.csr_matrix) -> np.ndarray:
        """(N+1,) each item's group (-1: none): the connected components of the lockstep pairs that
        link at least ``min_group`` items."""
        upper = sp.triu(pairs).tocoo()
        keep = holder_coherence(users, upper.row, upper.col) <= self.max_coherence if upper.nnz else np.zeros(0, bool)
        graph = sp.csr_matrix((np.ones(int(keep.sum())), (upper.row[keep], upper.col[keep])), shape=pairs.shape)
        _, label = connected_components(graph, directed=False)
        return np.where(np.bincount(label)[label] >= self.min_group, label, -1)


def group_pairs_held(users: sp.csr_matrix, group: np.ndarray) -> np.ndarray:
    """Per user, the item pairs it holds inside one group, ``Σ_g k_g (k_g − 1) / 2`` for ``k_g`` items of
    group ``g`` held (``group``: (N+1,) each item's group, -1 none). (U,)"""
    items = np.flatnonzero(group >= 0)
    member = sp.csr_matrix((np.ones(len(items)), (items, group[items])), shape=(len(group), int(group.max(initial=-1)) + 1))
    held = (users @ member).tocsr()  # (U, G) items held per group
    held.data = held.data * (held.data - 1) / 2
    return np.asarray(held.sum(1)).ravel()


def interaction_matrix(histories: list[np.ndarray], num_items: int) -> sp.csr_matrix:
    """(U, N+1) 1 where a user holds an item (repeats count once; padding id 0 never)."""
    lengths = np.array([len(h) for h in histories], np.int64)
    items = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    rows = np.repeat(np.arange(len(histories)), lengths)
    real = items > 0
    m = sp.csr_matrix((np.ones(int(real.sum()), np.float32), (rows[real], items[real])), shape=(len(histories), num_items + 1))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def holder_coherence(users: sp.csr_matrix, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """For each item pair, how much its holders share besides it: the squared distance between the
    holders' mean row and all users' mean row (the pair's own two items left out), less what a
    random sample of as many users would show, in units of the users' total item variance. About 0
    for holders drawn at random (the donors a copy attack took); holders of an organic pair share a
    taste. ``users``: (U, N+1) 0/1. (P,)"""
    num_users = users.shape[0]
    by_item = users.tocsc()
    holders = by_item[:, first].multiply(by_item[:, second]).tocsc()  # (U, P)
    n = np.asarray(holders.sum(0)).ravel().clip(1)
    g = np.asarray(users.mean(0)).ravel()
    sums = (holders.T @ users).tocsr()  # (P, N+1): how many holders hold each item
    sq = np.asarray(sums.multiply(sums).sum(1)).ravel() / n**2 - 2 * (sums @ g) / n + (g**2).sum()
    sq -= (1 - g[first]) ** 2 + (1 - g[second]) ** 2  # every holder holds both items of its pair
    var = g * (1 - g)
    rest = np.maximum(var.sum() - var[first] - var[second], 1e-12)
    return (sq - rest / n * (num_users - n) / max(num_users - 1, 1)) / rest


def text_surprisal(histories: list[np.ndarray], item_vectors: np.ndarray, top_k: int = 5) -> np.ndarray:
    """Per user, the mean surprisal of its ``top_k`` most surprising items, an item's surprisal
    being ``1 - cos(item, mean of the history's other items)`` under the text encoder's item
    vectors ((N+1, D), row 0 padding): a target spliced into a copied history reads unlike the
    rest of it. Histories of one item score 0. (U,)"""
    v = item_vectors / np.maximum(np.linalg.norm(item_vectors, axis=1, keepdims=True), 1e-12)
    lengths = np.array([len(h) for h in histories], np.int64)
    out = np.zeros(len(histories))
    if not lengths.sum():
        return out
    items = np.concatenate(histories).astype(np.int64)
    rows = np.repeat(np.arange(len(histories)), lengths)
    x = v[items]  # (T, D)
    sums = np.zeros((len(histories), v.shape[1]))
    np.add.at(sums, rows, x)
    dot = (x * sums[rows]).sum(1)  # v_i · S
    rest = np.sqrt(np.maximum((sums[rows] ** 2).sum(1) - 2 * dot + (x**2).sum(1), 1e-12))  # |S - v_i|
    surprise = 1 - (dot - (x**2).sum(1)) / rest
    surprise[lengths[rows] < 2] = 0.0
    order = np.lexsort((-surprise, rows))  # by user, most surprising first
    rank = np.arange(len(order)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    top = order[rank < top_k]
    np.add.at(out, rows[top], surprise[top])
    return out / np.maximum(np.minimum(lengths, top_k), 1)


def _rarest_per_row(m: sp.csr_matrix, deg: np.ndarray, k: int) -> sp.csr_matrix:
    """``m`` keeping, in each row, its ``k`` entries of the smallest ``deg``."""
    lengths = np.diff(m.indptr)
    if lengths.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), lengths)
    order = np.lexsort((deg[m.indices], rows))  # by row, rarest first
    rank = np.arange(len(order)) - np.repeat(m.indptr[:-1], lengths)
    keep = order[rank < k]
    return sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape)


def log_count_windows(histories: list[np.ndarray], counts: np.ndarray, windows: tuple[int, ...] = ()) -> Tensor:
    """Mean ``log(1 + count)`` of each history's items, over the whole history, then over its last
    ``w`` items for each window (an empty history: 0). (U, 1 + len(windows))"""
    log_count = np.log1p(np.asarray(counts, np.float64))
    cols = [[float(log_count[h[-w:] if w else h].mean()) if len(h) else 0.0 for h in histories] for w in (0, *windows)]
    return torch.tensor(cols, dtype=torch.float32).T.reshape(len(histories), len(cols))


def anomaly_groups(num_stats: int) -> list[list[int]]:
    """Column groups of ``AnomalySignal.statistics``: the mean fit alone, the log-count windows together."""
    return [[0], list(range(1, num_stats))] if num_stats > 1 else [[0]]


def anomaly_scores(stats: Tensor, reference: Tensor, groups: list[list[int]] | None = None) -> np.ndarray:
    """Σ over groups of the largest ``|x - median| / MAD`` in the group, median and MAD per column over
    ``reference`` (S columns); ``groups`` default: every column alone. (U,)"""
    center = reference.median(0).values
    scale = (reference - center).abs().median(0).values.clamp(min=1e-6)
    z = (stats - center).abs() / scale
    groups = groups if groups is not None else [[c] for c in range(stats.shape[1])]
    return sum(z[:, g].max(1).values for g in groups).numpy()


# The signals a config can list, told apart by ``kind`` (``{kind: dense_block, max_coherence: 5}``).
Signal = Union[AnomalySignal, CoordinationSignal, DenseBlockSignal]
