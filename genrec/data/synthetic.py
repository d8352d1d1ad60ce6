"""Synthetic interactions with known structure (docs/datasets.md): the default dataset, needing no download.
The tables are a pure function of the options; the catalogue depends only on the item-side options."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genrec.data.raw import DataError, RawData
from genrec.data.registry import Source, register_source

VERSION = 1  # bump whenever the same options start producing different tables
SUCCESSORS = 3
CROSS_INTEREST_PROB = 0.1  # a successor slot that leaves the interest, so sessions can drift
MAX_USER_INTERESTS = 3
GLOBAL_TASTE = 0.1  # the share of a user's draws that follows global popularity (trends)
LENGTH_SIGMA = 0.5  # lognormal spread of sequence lengths
EPOCH = 1_577_836_800  # 2020-01-01 UTC
START_SPREAD = 365 * 86_400  # users start somewhere in the first year
GAP_MEDIAN = 3_600.0
GAP_SIGMA = 2.5  # with the median above: a minute apart at the low end, weeks in the tail
GAP_RANGE = (60, 28 * 86_400)
VOCAB_PER_INTEREST = 6
TITLE_WORDS = 2
DESCRIPTION_WORDS = 5
REJECTION_TRIES = 8
CHUNK_CELLS = 1 << 22  # bounds the per-step work matrix (users x items)

TOPICS = tuple("""
    astronomy baking cycling gardening jazz mountaineering photography poetry robotics sailing chess pottery
    birdwatching cinema knitting surfing archaeology coffee origami skiing calligraphy beekeeping fencing
    woodworking
""".split())
WORDS = tuple("""
    amber anchor arch atlas aurora basil beacon birch blossom bolt bramble breeze bronze canyon canvas cedar cinder
    cobalt comet copper coral crater crest crystal dawn delta dune echo ember falcon fern fjord flint forge frost
    galaxy garnet glacier granite grove harbor hazel heron horizon indigo iris ivory jade juniper kelp kestrel
    lagoon lantern lark laurel lichen linen lotus lunar magnet maple marble meadow mesa meteor mint mist moss nebula
    nectar nimbus nova oak oasis ochre onyx orbit orchid otter pebble pepper pine plume polar prism quartz quill
    raven reed ridge river rune saffron sage sapphire shale shore sierra silk slate solstice sparrow spruce summit
    tide timber topaz tundra velvet vertex violet willow zenith zephyr thistle cypress gossamer walnut cascade
    ripple clover
""".split())


@dataclass
class SyntheticOptions:
    """What the generator makes; each bad value raises a DataError naming the option."""

    num_users: int = 2000
    num_items: int = 1000
    num_interests: int = 20
    mean_length: float = 40.0
    min_length: int = 5
    popularity_exponent: float = 1.0
    transition_prob: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "num_interests", "min_length", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Integral):
                raise DataError(f"synthetic option {name}={value!r} must be an integer")
            setattr(self, name, int(value))
        for name in ("mean_length", "popularity_exponent", "transition_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real):
                raise DataError(f"synthetic option {name}={value!r} must be a number")
            setattr(self, name, float(value))
        _require(self.num_users >= 1, "num_users", self.num_users, "must be at least 1")
        _require(self.num_interests >= 1, "num_interests", self.num_interests, "must be at least 1")
        most = self.num_items // (SUCCESSORS + 1)  # successors are distinct items of the same interest
        _require(self.num_interests <= most, "num_interests", self.num_interests,
                 f"needs {SUCCESSORS + 1} items per interest; num_items={self.num_items} allows at most {most}")
        _require(1 <= self.min_length <= self.num_items, "min_length", self.min_length,
                 f"must be between 1 and num_items={self.num_items} (users never repeat an item)")
        _require(self.mean_length > 0, "mean_length", self.mean_length, "must be positive")
        _require(self.popularity_exponent >= 0, "popularity_exponent", self.popularity_exponent, "must be >= 0")
        _require(0 <= self.transition_prob <= 1, "transition_prob", self.transition_prob, "must be in [0, 1]")
        _require(self.seed >= 0, "seed", self.seed, "must be >= 0")


def _require(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise DataError(f"synthetic option {name}={value!r} {why}")


def _options_from(options: dict[str, Any]) -> SyntheticOptions:
    known = {f.name for f in fields(SyntheticOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DataError(f"unknown synthetic option {unknown[0]!r}; known options: {', '.join(sorted(known))}")
    return SyntheticOptions(**options)


def item_id(index: int) -> str:
    return f"i{index}"


def user_id(index: int) -> str:
    return f"u{index}"


@dataclass
class Catalogue:
    """The item side of the generator (row ``k``: item ``item_id(k)``); segment ``j < K`` of ``draw_items`` holds
    interest ``j``'s items, segment ``K`` all, and ``draw_edges`` (segment + cumulative weight) samples any mix."""

    interest: np.ndarray  # (I,) interest of each item
    popularity: np.ndarray  # (I,) Zipf weight, sums to 1
    within: np.ndarray  # (I,) popularity renormalised within the item's interest
    successors: np.ndarray  # (I, SUCCESSORS) item indices the walk may step to next
    draw_items: np.ndarray  # (2I,) the items of segment 0, 1, ..., K in turn
    draw_edges: np.ndarray  # (2I,)
    segment_last: np.ndarray  # (K + 1,) position of each segment's last item in draw_items


def generate(options: SyntheticOptions | None = None) -> tuple[RawData, np.ndarray]:
    """The tables, plus the successor table (row ``k``: the successors of ``item_id(k)``)."""
    opts = options or SyntheticOptions()
    catalogue_rng, walk_rng, text_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(opts.seed).spawn(3))
    catalogue = _catalogue(catalogue_rng, opts)
    interactions = _interactions(walk_rng, opts, catalogue)
    items = _item_text(text_rng, opts, catalogue.interest)
    return RawData(name="synthetic", interactions=interactions, items=items), catalogue.successors


def _distinct_offsets(rng: np.random.Generator, span: np.ndarray, k: int) -> np.ndarray:
    """``k`` distinct offsets in ``[1, span]`` per row (``span >= k``), drawn without a loop."""
    # Sorting k draws from [0, span - k] and adding 0..k-1 makes them strictly increasing.
    draws = np.sort(rng.integers(0, span[:, None] - k + 1, size=(len(span), k)), axis=1)
    return draws + np.arange(k) + 1


def _catalogue(rng: np.random.Generator, opts: SyntheticOptions) -> Catalogue:
    n, k = opts.num_items, opts.num_interests
    interest = rng.permutation(np.arange(n) % k)
    # a random popularity rank (ids say nothing of it), in log space so steep exponents cannot underflow
    log_popularity = -opts.popularity_exponent * np.log1p(rng.permutation(n))
    popularity = np.exp(log_popularity - log_popularity.max())
    popularity /= popularity.sum()

    # successors: a popularity-weighted draw without replacement (Gumbel top-k) within the item's interest
    successors = np.empty((n, SUCCESSORS), dtype=np.int64)
    within = np.empty(n)
    segments = [np.flatnonzero(interest == j) for j in range(k)] + [np.arange(n)]
    for members in segments[:-1]:
        weight = np.exp(log_popularity[members] - log_popularity[members].max())
        within[members] = weight / weight.sum()
        step = max(1, CHUNK_CELLS // len(members))
        for lo in range(0, len(members), step):
            rows = np.arange(lo, min(lo + step, len(members)))
            keys = log_popularity[members] + rng.gumbel(size=(len(rows), len(members)))  # (R, M)
            keys[np.arange(len(rows)), rows] = -np.inf  # never the item itself
            successors[members[rows]] = members[np.argpartition(-keys, SUCCESSORS - 1, axis=1)[:, :SUCCESSORS]]
    leave = rng.random((n, SUCCESSORS)) < CROSS_INTEREST_PROB
    elsewhere = (np.arange(n)[:, None] + rng.integers(1, n, size=(n, SUCCESSORS))) % n  # never the item itself
    successors = np.where(leave, elsewhere, successors)

    weights = [within[members] for members in segments[:-1]] + [popularity]
    # Dividing by the last cumulative weight ends every segment's edges exactly at segment + 1.
    edges = [j + np.cumsum(w) / np.cumsum(w)[-1] for j, w in enumerate(weights)]
    return Catalogue(interest=interest, popularity=popularity, within=within, successors=successors,
                     draw_items=np.concatenate(segments), draw_edges=np.concatenate(edges),
                     segment_last=np.cumsum([len(members) for members in segments]) - 1)


def _interactions(rng: np.random.Generator, opts: SyntheticOptions, catalogue: Catalogue) -> pd.DataFrame:
    u, k = opts.num_users, opts.num_interests
    most = min(MAX_USER_INTERESTS, k)
    count = rng.integers(1, most + 1, size=u)
    first = rng.integers(0, k, size=u)
    others = _distinct_offsets(rng, np.full(u, k - 1), most - 1)
    interests = (first[:, None] + np.concatenate([np.zeros((u, 1), dtype=np.int64), others], axis=1)) % k
    # Normalised exponentials are Dirichlet(1, ..., 1) over the user's `count` interests.
    weights = rng.exponential(size=(u, most)) * (np.arange(most) < count[:, None])
    weights /= weights.sum(axis=1, keepdims=True)
    slots = np.concatenate([interests, np.full((u, 1), k)], axis=1)  # the last slot: the whole catalogue
    slot_cdf = np.cumsum(np.concatenate([(1 - GLOBAL_TASTE) * weights, np.full((u, 1), GLOBAL_TASTE)], axis=1), axis=1)
    slot_cdf[:, -1] = 1.0

    mu = np.log(opts.mean_length) - LENGTH_SIGMA**2 / 2  # so the mean is mean_length
    lengths = np.rint(rng.lognormal(mu, LENGTH_SIGMA, size=u)).astype(np.int64)
    lengths = np.clip(lengths, opts.min_length, opts.num_items)

    chunk = max(1, CHUNK_CELLS // opts.num_items)
    items = np.concatenate([_walk(rng, opts, catalogue, slots[lo : lo + chunk], slot_cdf[lo : lo + chunk],
                                  lengths[lo : lo + chunk]) for lo in range(0, u, chunk)])

    users = np.repeat(np.arange(u), lengths)
    gaps = np.clip(rng.lognormal(np.log(GAP_MEDIAN), GAP_SIGMA, size=len(items)), *GAP_RANGE).astype(np.int64)
    begin = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    gaps[begin] = 0
    elapsed = np.cumsum(gaps)
    starts = EPOCH + rng.integers(0, START_SPREAD, size=u)
    timestamps = starts[users] + elapsed - elapsed[begin][users]
    return pd.DataFrame({"user": np.array([user_id(i) for i in range(u)], dtype=object)[users],
                         "item": np.array([item_id(i) for i in range(opts.num_items)], dtype=object)[items],
                         "timestamp": timestamps.astype(np.int64)}).astype({"user": str, "item": str})


def _walk(rng: np.random.Generator, opts: SyntheticOptions, catalogue: Catalogue, slots: np.ndarray,
          slot_cdf: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The item sequences of a block of users, concatenated; own draws pick slot ``s`` by ``slot_cdf`` (B, S)."""
    b = len(lengths)
    seq = np.full((b, int(lengths.max())), -1, dtype=np.int64)  # (B, T)
    seen = np.zeros((b, opts.num_items), dtype=bool)  # (B, I)
    for t in range(seq.shape[1]):
        active = np.flatnonzero(lengths > t)
        step = np.full(len(active), -1, dtype=np.int64)
        if t > 0:
            follow = rng.random(len(active)) < opts.transition_prob
            candidates = catalogue.successors[seq[active, t - 1]]  # (A, S)
            fresh = ~seen[active[:, None], candidates]
            pick = np.where(fresh, rng.random(candidates.shape), -1.0).argmax(axis=1)
            take = follow & fresh.any(axis=1)
            step[take] = candidates[take, pick[take]]
        need = step < 0
        rows = active[need]
        step[need] = _draw_unseen(rng, catalogue, slots[rows], slot_cdf[rows], seen[rows])
        seq[active, t] = step
        seen[active, step] = True
    return seq[np.arange(seq.shape[1]) < lengths[:, None]]


def _draw_unseen(rng: np.random.Generator, catalogue: Catalogue, slots: np.ndarray, slot_cdf: np.ndarray,
                 seen: np.ndarray) -> np.ndarray:
    """One unseen item per row from the row's slot mix, by rejection sampling, else ``_draw_dense``."""
    out = np.full(len(slots), -1, dtype=np.int64)
    pending = np.arange(len(slots))
    for _ in range(REJECTION_TRIES):
        if not len(pending):
            return out
        # u in (0, 1]: the first slot whose cdf reaches u has positive probability.
        slot = (slot_cdf[pending] < 1.0 - rng.random(len(pending))[:, None]).sum(axis=1)
        segment = slots[pending, slot]
        where = np.searchsorted(catalogue.draw_edges, segment + rng.random(len(pending)), side="right")
        # segment + u can round up to segment + 1; the clip keeps the draw inside its segment.
        item = catalogue.draw_items[np.minimum(where, catalogue.segment_last[segment])]
        fresh = ~seen[pending, item]
        out[pending[fresh]] = item[fresh]
        pending = pending[~fresh]
    if len(pending):
        out[pending] = _draw_dense(rng, catalogue, slots[pending], slot_cdf[pending], seen[pending])
    return out


def _draw_dense(rng: np.random.Generator, catalogue: Catalogue, slots: np.ndarray, slot_cdf: np.ndarray,
                seen: np.ndarray) -> np.ndarray:
    """The exact draw of ``_draw_unseen`` over a dense (R, I) weight matrix; uniform once nothing weighted is left."""
    everything = len(catalogue.segment_last) - 1
    probability = np.diff(slot_cdf, prepend=0.0, axis=1)
    weight = np.zeros(seen.shape)  # (R, I)
    for s in range(slots.shape[1]):
        segment = slots[:, s, None]
        own = np.where(catalogue.interest == segment, catalogue.within, 0.0)
        weight += probability[:, s, None] * np.where(segment == everything, catalogue.popularity, own)
    weight[seen] = 0.0
    spent = ~(weight > 0).any(axis=1)
    weight[spent] = ~seen[spent]
    cdf = np.cumsum(weight, axis=1)
    # u in (0, total]: the first index whose cdf reaches u has positive weight, hence is unseen.
    target = (1.0 - rng.random(len(weight))) * cdf[:, -1]
    return (cdf < target[:, None]).sum(axis=1)


def _item_text(rng: np.random.Generator, opts: SyntheticOptions, interest: np.ndarray) -> pd.DataFrame:
    k, n = opts.num_interests, opts.num_items
    names = [TOPICS[j % len(TOPICS)] + (f" {j // len(TOPICS) + 1}" if j >= len(TOPICS) else "") for j in range(k)]
    # Interests get disjoint vocabularies while the word list lasts, then they start to share.
    shuffled = np.array(WORDS)[rng.permutation(len(WORDS))]
    vocab = shuffled[(np.arange(k)[:, None] * VOCAB_PER_INTEREST + np.arange(VOCAB_PER_INTEREST)) % len(WORDS)]
    slots = np.tile(np.arange(VOCAB_PER_INTEREST), (n, 1))
    title_slots = rng.permuted(slots, axis=1)[:, :TITLE_WORDS]
    text_slots = rng.permuted(slots, axis=1)[:, :DESCRIPTION_WORDS]
    titles, descriptions = [], []
    for i in range(n):
        words = vocab[interest[i]]
        titles.append(" ".join(w.capitalize() for w in words[title_slots[i]]) + f" {i}")
        a, b, c, d, e = words[text_slots[i]]
        descriptions.append(f"A {a} {b} with {c} and {d}, for lovers of {e}.")
    return pd.DataFrame({"item": [item_id(i) for i in range(n)], "title": titles, "description": descriptions,
                         "categories": [names[j] for j in interest]}).astype(str)


@register_source("synthetic")
class SyntheticSource(Source):
    """The generator as a dataset source; options are the fields of ``SyntheticOptions``."""

    def __init__(self, root: str | None = None, cache_dir: str | None = None, download: bool = True, **options: Any):
        super().__init__(root, cache_dir, download, **options)
        self.settings = _options_from(options)
        # the fingerprint hashes the resolved options, so defaults spelled out or not share a cache entry
        self.options = {**asdict(self.settings), "version": VERSION}

    def load(self) -> RawData:
        return generate(self.settings)[0]

    def input_files(self) -> list[Path]:
        return []
