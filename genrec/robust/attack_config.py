"""The attack configuration, a discriminated union on ``kind``: ``AttackConfig`` holds the options
every kind reads (and is the ``random`` attack), each subclass in ``ATTACKS`` a kind's own options.
Kept apart from ``genrec.robust.attacks`` so the surrogate reads it without importing the attacks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

from genrec.errors import DataError

Kind = Literal["random", "bandwagon", "segment", "model", "copy", "augmented"]
KINDS = get_args(Kind)
IMITATIONS = ("copy", "augmented")  # fakes built from real users' histories
Splice = Literal["recent", "anywhere", "mixed"]
SPLICES = get_args(Splice)


def _at_least_one(config: Any, *keys: str) -> None:
    for key in keys:
        if getattr(config, key) < 1:
            raise DataError(f"attack.{key} must be at least 1, got {getattr(config, key)}")


def _fraction(key: str, value: float) -> None:
    if not 0 < value <= 1:
        raise DataError(f"attack.{key} must be in (0, 1], got {value}")


@dataclass
class AttackConfig:
    """One attack, saved whole with the run so that it can be repeated exactly (options: docs/robust.md)."""

    kind: Kind = "random"
    budget: float = 0.01
    num_targets: int = 5
    targets: list[int] | None = None
    avoid_targets: list[int] = field(default_factory=list)
    seed: int = 0
    targets_in_last: int | None = None
    splice: Splice = "recent"
    target_repeats: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"attack.kind must be one of {KINDS}, got {self.kind!r}")
        if ATTACKS[self.kind] is not type(self):
            raise DataError(f"attack.kind {self.kind!r} is a {ATTACKS[self.kind].__name__}: build it with "
                            f"AttackConfig.from_dict({{'kind': {self.kind!r}, ...}})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise DataError(f"attack.seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not 0 < self.budget <= 1:
            raise DataError(f"attack.budget is the fraction of real users to add as fakes, in (0, 1]; got {self.budget}")
        if self.num_targets < 1 and not self.targets:
            raise DataError(f"attack.num_targets must be at least 1, got {self.num_targets}")
        _at_least_one(self, "target_repeats")
        if self.targets_in_last is not None and self.targets_in_last < 1:
            raise DataError(f"attack.targets_in_last must be at least 1 (null: the model's input length), got {self.targets_in_last}")
        if self.splice not in SPLICES:
            raise DataError(f"attack.splice must be one of {SPLICES} (where a fake's targets go), got {self.splice!r}")

    def subset_sizes(self) -> tuple[int, int] | None:
        """(lo, hi) of the number of targets each fake carries; None: all of them."""
        return None

    @classmethod
    def from_dict(cls, options: dict[str, Any] | "AttackConfig") -> "AttackConfig":
        """The attack of ``options``, as its kind's class. An option only other kinds read is accepted
        at its default (checkpoints before the union saved every kind's options), else refused."""
        if isinstance(options, AttackConfig):
            return options
        kind = options.get("kind", "random")
        if kind not in ATTACKS:
            raise DataError(f"attack.kind must be one of {KINDS}, got {kind!r}")
        own = {f.name for f in fields(ATTACKS[kind])}
        unknown = sorted(set(options) - own - set(KIND_DEFAULTS))
        if unknown:
            raise DataError(f"unknown attack option(s) {unknown}; known: {sorted(own | set(KIND_DEFAULTS))}")
        for key, value in options.items():
            if key not in own and value != KIND_DEFAULTS[key]:
                readers = [k for k, c in ATTACKS.items() if key in {f.name for f in fields(c)}]
                raise DataError(f"attack.{key} is read by kind {' and '.join(readers)}, not by kind {kind!r}: remove it "
                                f"or set attack.kind")
        return ATTACKS[kind](**{k: v for k, v in options.items() if k in own})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """The kind, plus every option that differs from the default, other than the seed and the
        targets (runs with the same label and seed are one attack), e.g.
        ``bandwagon (target_repeats 4, popular_fraction 0.1)``."""
        default = type(self)().to_dict()
        changed = [f"{k} {v}" for k, v in self.to_dict().items()
                   if k not in ("kind", "seed", "targets", "avoid_targets") and default[k] != v]
        return self.kind + (f" ({', '.join(changed)})" if changed else "")


@dataclass
class BandwagonAttack(AttackConfig):
    """Fillers drawn from the ``popular_fraction`` most popular items."""

    kind: Literal["bandwagon"] = "bandwagon"
    popular_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _fraction("popular_fraction", self.popular_fraction)


@dataclass
class SegmentAttack(AttackConfig):
    """Fillers from the targets' segment: items sharing their ``segment_field`` value, or with
    ``segment_neighbours`` > 0 their nearest items by text."""

    kind: Literal["segment"] = "segment"
    segment_field: str = "genres"
    segment_neighbours: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segment_neighbours < 0:
            raise DataError(f"attack.segment_neighbours must be >= 0 (0: segment by segment_field), got {self.segment_neighbours}")


@dataclass
class ModelAttack(AttackConfig):
    """Fillers chosen greedily by a surrogate model (``genrec.robust.surrogate``)."""

    kind: Literal["model"] = "model"
    surrogate_epochs: int = 10
    surrogate_dim: int = 32
    candidates: int = 32
    model_steps: int = 50

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least_one(self, "surrogate_epochs", "surrogate_dim", "candidates", "model_steps")


@dataclass
class CopyAttack(AttackConfig):
    """Real users' histories with the targets spliced in. ``targets_per_fake``: every target (null),
    a random ``k`` of them, or ``[lo, hi]``, a random subset whose size is drawn per fake."""

    kind: Literal["copy"] = "copy"
    targets_per_fake: int | list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        k = self.targets_per_fake
        if k is None:
            return
        if isinstance(k, (list, tuple)):
            if len(k) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in k) or not 1 <= k[0] <= k[1]:
                raise DataError(f"attack.targets_per_fake as a range is [lo, hi] with 1 <= lo <= hi, got {k!r}")
            self.targets_per_fake = [int(k[0]), int(k[1])]
        elif isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise DataError(f"attack.targets_per_fake must be at least 1, or a range [lo, hi] (null: all targets), got {k!r}")

    def subset_sizes(self) -> tuple[int, int] | None:
        k = self.targets_per_fake
        return None if k is None else (k, k) if isinstance(k, int) else (k[0], k[1])


@dataclass
class AugmentedAttack(CopyAttack):
    """A copy plus ``filler_fraction`` of its length in fillers from the ``popular_fraction`` most popular items."""

    kind: Literal["augmented"] = "augmented"
    filler_fraction: float = 0.3
    popular_fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.filler_fraction < 0:
            raise DataError(f"attack.filler_fraction must be >= 0, got {self.filler_fraction}")
        _fraction("popular_fraction", self.popular_fraction)


ATTACKS: dict[str, type[AttackConfig]] = {"random": AttackConfig, "bandwagon": BandwagonAttack, "segment": SegmentAttack,
                                          "model": ModelAttack, "copy": CopyAttack, "augmented": AugmentedAttack}
# every option only some kinds read, at its default
KIND_DEFAULTS = {f.name: f.default for c in ATTACKS.values() for f in fields(c) if f.name not in {g.name for g in fields(AttackConfig)}}
