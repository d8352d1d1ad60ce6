"""The attack configuration, apart from the generators: ``genrec.robust.attacks`` builds fakes from
it and ``genrec.robust.surrogate`` (which the model-based attack calls) reads it, so neither module
imports the other back.

One flat dataclass serves every kind; ``KIND_OPTIONS`` names the options only some kinds read (the
rest apply to all). Runs, configs and checkpoints spell an attack as its plain options, e.g.
``{kind: copy, budget: 0.02, seed: 3, splice: anywhere}``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from genrec.errors import DataError

Kind = Literal["random", "bandwagon", "segment", "model", "copy", "augmented"]
KINDS = ("random", "bandwagon", "segment", "model", "copy", "augmented")
IMITATIONS = ("copy", "augmented")  # fakes built from real users' histories
Splice = Literal["recent", "anywhere", "mixed"]
SPLICES = ("recent", "anywhere", "mixed")

# Options only some kinds read; every other option applies to all kinds.
KIND_OPTIONS = {"bandwagon": {"popular_fraction"}, "segment": {"segment_field", "segment_neighbours"},
                "model": {"surrogate_epochs", "surrogate_dim", "candidates", "model_steps"},
                "copy": {"targets_per_fake"}, "augmented": {"targets_per_fake", "filler_fraction", "popular_fraction"}}


@dataclass
class AttackConfig:
    """One attack; the whole object is saved with the run, so a run can be repeated exactly.

    ``splice`` says where a fake's targets go: ``recent``, at random positions among its last
    ``targets_in_last`` items; ``anywhere``, at random positions over the whole profile; ``mixed``,
    each fake one or the other by a fair coin. ``targets_per_fake`` (imitations): every target
    (null), a random ``k`` of them, or ``[lo, hi]``, a random subset whose size is drawn per fake.
    """

    kind: Kind = "random"
    budget: float = 0.01
    num_targets: int = 5
    targets: list[int] | None = None
    avoid_targets: list[int] = field(default_factory=list)
    seed: int = 0
    targets_in_last: int | None = None
    splice: Splice = "recent"
    target_repeats: int = 1
    popular_fraction: float = 0.5
    segment_field: str = "genres"
    segment_neighbours: int = 0
    surrogate_epochs: int = 10
    surrogate_dim: int = 32
    candidates: int = 32
    model_steps: int = 50
    targets_per_fake: int | list[int] | None = None
    filler_fraction: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"attack.kind must be one of {KINDS}, got {self.kind!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise DataError(f"attack.seed must be an integer in [0, 2**63), got {self.seed!r}")
        if not 0 < self.budget <= 1:
            raise DataError(f"attack.budget is the fraction of real users to add as fakes, in (0, 1]; got {self.budget}")
        if self.num_targets < 1 and not self.targets:
            raise DataError(f"attack.num_targets must be at least 1, got {self.num_targets}")
        if not 0 < self.popular_fraction <= 1:
            raise DataError(f"attack.popular_fraction must be in (0, 1], got {self.popular_fraction}")
        if self.segment_neighbours < 0:
            raise DataError(f"attack.segment_neighbours must be >= 0 (0: segment by segment_field), got {self.segment_neighbours}")
        for key in ("surrogate_epochs", "surrogate_dim", "candidates", "model_steps", "target_repeats"):
            if getattr(self, key) < 1:
                raise DataError(f"attack.{key} must be at least 1, got {getattr(self, key)}")
        self._check_targets_per_fake()
        if self.filler_fraction < 0:
            raise DataError(f"attack.filler_fraction must be >= 0, got {self.filler_fraction}")
        if self.targets_in_last is not None and self.targets_in_last < 1:
            raise DataError(f"attack.targets_in_last must be at least 1 (null: the model's input length), got {self.targets_in_last}")
        if self.splice not in SPLICES:
            raise DataError(f"attack.splice must be one of {SPLICES} (where a fake's targets go), got {self.splice!r}")

    def _check_targets_per_fake(self) -> None:
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
        """(lo, hi) of the number of targets each fake carries; None: all of them."""
        k = self.targets_per_fake
        return None if k is None else (k, k) if isinstance(k, int) else (k[0], k[1])

    @classmethod
    def from_dict(cls, options: dict[str, Any] | "AttackConfig") -> "AttackConfig":
        if isinstance(options, AttackConfig):
            return options
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise DataError(f"unknown attack option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        """The kind, plus every option this kind reads that differs from the default, other than the
        seed and the targets (runs with the same label and seed are one attack), e.g.
        ``bandwagon (target_repeats 4, popular_fraction 0.1)``."""
        default = AttackConfig(kind=self.kind).to_dict()
        ignored = {"kind", "seed", "targets", "avoid_targets", *set().union(*KIND_OPTIONS.values())}
        ignored -= KIND_OPTIONS.get(self.kind, set())
        changed = [f"{k} {v}" for k, v in self.to_dict().items() if k not in ignored and default[k] != v]
        return self.kind + (f" ({', '.join(changed)})" if changed else "")
