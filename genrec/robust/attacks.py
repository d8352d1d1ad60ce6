"""Data-poisoning attacks: fake user profiles, written into the training part only, that push
target items into real users' lists. The kinds and their options: ``genrec.robust.attack_config``
and docs/robust.md. All randomness comes from ``AttackConfig.seed``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from genrec.data.preprocess import SequenceData
from genrec.errors import DataError
from genrec.robust.attack_config import IMITATIONS, AttackConfig
from genrec.robust.encoders import build_encoder
from genrec.robust.surrogate import model_based_profiles

ANYWHERE = np.iinfo(np.int64).max  # a tail longer than any profile: splice over the whole of it


@dataclass
class FakeProfiles:
    """The attack's output: fake sequences (internal item ids) with timestamps, and the targets."""

    sequences: list[np.ndarray]
    timestamps: list[np.ndarray]
    targets: np.ndarray
    config: AttackConfig
    donors: np.ndarray | None = None  # imitations: the real user each fake was built from

    def __len__(self) -> int:
        return len(self.sequences)

    def state(self) -> dict[str, Any]:
        state = {"config": self.config.to_dict(), "targets": self.targets.tolist(),
                 "sequences": [s.tolist() for s in self.sequences], "timestamps": [t.tolist() for t in self.timestamps]}
        return state if self.donors is None else {**state, "donors": self.donors.tolist()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "FakeProfiles":
        ints = lambda rows: [np.asarray(r, np.int64) for r in rows]
        return cls(ints(state["sequences"]), ints(state["timestamps"]), np.asarray(state["targets"], np.int64),
                   AttackConfig.from_dict(state["config"]),
                   donors=np.asarray(state["donors"], np.int64) if "donors" in state else None)


def train_counts(data: SequenceData, train_end: np.ndarray) -> np.ndarray:
    """Training interactions per item id (index 0 = padding, always 0). (N+1,)"""
    in_train = np.arange(len(data.items)) < np.repeat(train_end, data.lengths)
    return np.bincount(data.items[in_train], minlength=data.num_items + 1)


def sample_targets(counts: np.ndarray, num: int, rng: np.random.Generator, avoid: list[int] | np.ndarray = ()) -> np.ndarray:
    """``num`` distinct items from the least popular half of the items seen in training."""
    seen = np.flatnonzero(counts[1:] > 0) + 1
    order = seen[np.argsort(counts[seen], kind="stable")]
    pool = np.setdiff1d(order[: max(1, len(order) // 2)], np.asarray(avoid, np.int64))
    if len(pool) < num:
        raise DataError(f"only {len(pool)} items in the least popular half are left to attack; lower attack.num_targets ({num})")
    return np.sort(rng.choice(pool, num, replace=False))


def generate(data: SequenceData, train_end: np.ndarray, config: AttackConfig | dict, window: int) -> FakeProfiles:
    """Fake profiles for the clean ``data`` under ``config``; ``train_end``: end (exclusive) of each
    user's training part in ``data.items``; ``window``: the model's input length (default ``targets_in_last``)."""
    config = AttackConfig.from_dict(config)
    rng = np.random.default_rng(config.seed)
    counts = train_counts(data, train_end)
    if config.targets:
        targets = np.asarray(sorted(config.targets), np.int64)
        if targets.min() < 1 or targets.max() > data.num_items:
            raise DataError(f"attack.targets must be item ids in 1..{data.num_items}, got {config.targets}")
    else:
        targets = sample_targets(counts, config.num_targets, rng, config.avoid_targets)
    num_fakes = max(1, int(round(config.budget * data.num_users)))
    donors = rng.choice(np.flatnonzero(train_end - data.offsets[:-1] > 0), num_fakes)
    planted = np.tile(targets, config.target_repeats)  # every target, target_repeats times
    lengths = np.maximum(train_end[donors] - data.offsets[donors], len(planted) + 1)
    stamps = [_donor_stamps(data, train_end, d, n) for d, n in zip(donors, lengths)]
    tails = _tails(config, num_fakes, window, rng)
    sizes = config.subset_sizes()
    if sizes is not None and sizes[1] > len(targets):
        raise DataError(f"attack.targets_per_fake ({config.targets_per_fake}) exceeds the {len(targets)} targets")
    if config.kind in IMITATIONS:
        sequences, stamps = _imitations(data, train_end, counts, targets, donors, config, tails, rng)
        return FakeProfiles(sequences, stamps, targets, config, donors=donors)
    if config.kind == "model":
        sequences = model_based_profiles(data, train_end, counts, targets, lengths, config, rng, planted)
        if config.targets_in_last or config.splice != "recent":  # the targets among the fillers instead of after them
            sequences = [_with_targets(s[: -len(planted)], planted, t, rng) for s, t in zip(sequences, tails)]
    else:
        pool = _filler_pool(data, counts, targets, config)
        sequences = [_with_targets(_draw(pool, n - len(planted), rng), planted, t, rng) for n, t in zip(lengths, tails)]
    return FakeProfiles(sequences, [s[: len(q)] for s, q in zip(stamps, sequences)], targets, config)


def _tails(config: AttackConfig, num_fakes: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """Per fake, how many of its last positions may hold the targets (``ANYWHERE``: all of them)."""
    recent = config.targets_in_last or window
    if config.splice == "mixed":  # drawn only here, so the other splices' random streams stay as they were
        return np.where(rng.random(num_fakes) < 0.5, recent, ANYWHERE)
    return np.full(num_fakes, ANYWHERE if config.splice == "anywhere" else recent, np.int64)


def _donor_stamps(data: SequenceData, train_end: np.ndarray, donor: int, n: int) -> np.ndarray:
    own = data.timestamps[data.offsets[donor] : train_end[donor]]
    # A donor shorter than n (only when the targets need the room) repeats its last timestamp.
    return np.concatenate([own, np.full(max(0, n - len(own)), own[-1] if len(own) else 0)])[:n]


def _filler_pool(data: SequenceData, counts: np.ndarray, targets: np.ndarray, config: AttackConfig) -> np.ndarray:
    items = np.arange(1, data.num_items + 1)
    if config.kind == "random":
        pool = items
    elif config.kind == "bandwagon":
        pool = _popular(counts, config.popular_fraction)
    else:
        pool = (text_neighbours(data, targets, config.segment_neighbours) if config.segment_neighbours
                else segment_items(data, targets, config.segment_field))
    return np.setdiff1d(pool, targets)


def _popular(counts: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` most popular items by training count (at least one)."""
    return np.argsort(-counts[1:], kind="stable")[: max(1, int(np.ceil(fraction * (len(counts) - 1))))] + 1


def segment_items(data: SequenceData, targets: np.ndarray, field_name: str) -> np.ndarray:
    """Items whose ``field_name`` values (comma separated) include all of some target's values."""
    text = data.item_text
    if text is None or field_name not in text.columns:
        columns = [] if text is None else list(text.columns)
        raise DataError(
            f"the segment attack needs the item text field attack.segment_field={field_name!r}, but dataset "
            f"{data.name!r} has item text columns {columns}: pick one of them or another attack kind"
        )
    values = [frozenset(v.strip() for v in str(s).split(",") if v.strip()) for s in text[field_name]]
    keep = np.zeros(data.num_items + 1, bool)
    for t in targets:
        if values[t]:
            keep |= np.array([values[t] <= v for v in values])
    keep[0] = False
    return np.flatnonzero(keep)


def text_neighbours(data: SequenceData, targets: np.ndarray, k: int, encoder: dict | None = None) -> np.ndarray:
    """The union of each target's ``k`` nearest items by the cosine of their text embeddings (every
    item text column joined by ". "; default encoder: the offline MiniLM)."""
    if data.item_text is None or data.item_text.empty:
        raise DataError(f"attack.segment_neighbours needs item text, and dataset {data.name!r} has none: use segment_field or another attack kind")
    texts = data.item_text.astype(str).agg(". ".join, axis=1).tolist()  # row 0 = padding
    emb = build_encoder(encoder or {"kind": "sentence-transformers"}).encode(texts[1:])
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    sims = emb[targets - 1] @ emb.T  # (T, N)
    sims[np.arange(len(targets)), targets - 1] = -np.inf  # not the target itself
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k] + 1
    return np.unique(nearest)


def _draw(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n items from the pool, without repeats while the pool lasts (a real user rarely repeats)."""
    if len(pool) == 0:
        raise DataError("the attack's filler pool is empty (e.g. the targets share no segment with any item): use another attack kind")
    parts = [rng.permutation(pool) for _ in range(-(-n // len(pool)))]
    return np.concatenate(parts)[:n] if parts else np.zeros(0, np.int64)


def _with_targets(filler: np.ndarray, targets: np.ndarray, tail: int, rng: np.random.Generator) -> np.ndarray:
    return _splice(filler, np.zeros(len(filler), np.int64), targets, tail, rng)[0]


def _splice(base: np.ndarray, stamps: np.ndarray, inserted: np.ndarray, tail: int,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``base`` (in order) with ``inserted`` (shuffled) at random positions among the last ``tail``;
    an inserted item takes the timestamp of the base item before it (the first one's if none)."""
    n = len(base) + len(inserted)
    last = int(min(n, max(tail, len(inserted))))  # at least room for every inserted item
    mask = np.zeros(n, bool)
    mask[rng.choice(np.arange(n - last, n), len(inserted), replace=False)] = True
    out = np.zeros(n, np.int64)
    out[mask] = rng.permutation(inserted)
    out[~mask] = base
    times = np.zeros(n, np.int64)
    times[~mask] = stamps
    if len(base):
        before = np.maximum.accumulate(np.where(~mask, np.arange(n), -1))
        times[mask] = times[np.where(before >= 0, before, np.argmin(mask))[mask]]
    return out, times


def _imitations(data: SequenceData, train_end: np.ndarray, counts: np.ndarray, targets: np.ndarray,
                donors: np.ndarray, config: AttackConfig, tails: np.ndarray,
                rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``copy`` and ``augmented`` profiles: each donor's training history with the targets spliced in."""
    augmented = config.kind == "augmented" and config.filler_fraction > 0
    popular = _popular(counts, config.popular_fraction) if augmented else None
    sizes = config.subset_sizes()
    sequences, stamps = [], []
    for d, tail in zip(donors, tails):
        items, times = data.items[data.offsets[d] : train_end[d]], data.timestamps[data.offsets[d] : train_end[d]]
        if augmented:
            pool = np.setdiff1d(popular, np.concatenate([targets, items]))
            fillers = _draw(pool, int(round(config.filler_fraction * len(items))), rng)
            items, times = _splice(items, times, fillers, len(items) + len(fillers), rng)
        carried = targets
        if sizes is not None:  # a fixed size draws nothing, as it always has
            size = sizes[0] if sizes[0] == sizes[1] else int(rng.integers(sizes[0], sizes[1] + 1))
            carried = rng.choice(targets, size, replace=False)
        items, times = _splice(items, times, np.tile(carried, config.target_repeats), tail, rng)
        sequences.append(items)
        stamps.append(times)
    return sequences, stamps


def inject(data: SequenceData, train_end: np.ndarray, fakes: FakeProfiles,
           prefix: str = "fake") -> tuple[SequenceData, np.ndarray]:
    """``data`` with the fake users appended after the real ones (which keep their indices and item
    positions), and the extended ``train_end``: every fake item is training data."""
    lengths = np.array([len(s) for s in fakes.sequences], np.int64)
    offsets = np.concatenate([data.offsets, data.offsets[-1] + np.cumsum(lengths)])
    fake_ids = np.array([f"{prefix}_{i}" for i in range(len(fakes))], dtype=object)
    poisoned = replace(data, offsets=offsets, items=np.concatenate([data.items, *fakes.sequences]).astype(np.int64),
                       timestamps=np.concatenate([data.timestamps, *fakes.timestamps]).astype(np.int64),
                       user_ids=np.concatenate([data.user_ids, fake_ids]),
                       counts={**data.counts, f"{prefix}_users": len(fakes)})
    return poisoned, np.concatenate([train_end, offsets[-len(fakes) - 1 : -1] + lengths])
