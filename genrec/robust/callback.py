"""``FraudsterReweighting``: LoRec's iterative, LLM-calibrated down-weighting of likely fake users.

At fit start (global rank 0, then broadcast) it simulates a known attack and embeds every training
user and simulated fake with a language model; on every scheduled epoch it trains the calibrator
on the recommender's states of those users, scores every user and updates the per-user loss
weights (``WeightUpdate``). The schedule, formula and logged metrics: docs/robust.md.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from genrec.data.registry import default_cache_dir
from genrec.robust.attacks import AttackConfig, generate, inject, train_counts
from genrec.robust.calibrator import Calibrator, CalibratorConfig, SequenceFeatures, sequence_features
from genrec.robust.detector import Detector, DetectorConfig, detection_metrics, percentiles
from genrec.robust.encoders import build_encoder
from genrec.robust.signals import Signal, UserView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightUpdate:
    """When and how the per-user weights move: ``w ← w − lr · (s − mean(s))``, weight = σ(w) / σ(w0).

    Args:
        start_epoch: first epoch whose training uses updated weights.
        every: epochs between weight updates.
        lr: step size.
        w0: initial logit of every user.
        scores: ``s`` is the calibrated probability (``"raw"``, LoRec's) or its percentile (``"rank"``).
        flag_fraction: with ``"rank"``, the top fraction of users that count as flagged: ``s`` is
            ``clip((p - (1 - f)) / f, 0, 1)`` of percentile ``p``.
        flagged_weight: the weight at most of a user flagged with confidence (a signal's
            ``flag_above``), from the update that flags it on.
        combine: how the calibrated percentile and the signals' make one rank: ``"max"``, the
            largest of them (each times its signal's ``weight``), or ``"fisher"``, Fisher's sum of
            ``-log`` tail fractions (each times its ``weight``), so that signals agreeing on a user
            add up and a single extreme one still counts.
    """

    start_epoch: int = 2
    every: int = 1
    lr: float = 2.0
    w0: float = 0.0
    scores: Literal["raw", "rank"] = "raw"
    flag_fraction: float = 1.0
    flagged_weight: float = 0.01
    combine: Literal["max", "fisher"] = "max"

    def __post_init__(self) -> None:
        if self.start_epoch < 0 or self.every < 1:
            raise ValueError(f"FraudsterReweighting update: start_epoch must be >= 0 and every >= 1 "
                             f"(got {self.start_epoch}, {self.every})")
        if self.scores not in ("raw", "rank"):
            raise ValueError(f"FraudsterReweighting update: scores must be 'raw' or 'rank' (got {self.scores!r})")
        if not 0 < self.flag_fraction <= 1:
            raise ValueError(f"FraudsterReweighting update: flag_fraction must be in (0, 1] (got {self.flag_fraction})")
        if not 0 < self.flagged_weight < 1:
            raise ValueError(f"FraudsterReweighting update: flagged_weight must be in (0, 1) (got {self.flagged_weight})")
        if self.lr <= 0:
            raise ValueError(f"FraudsterReweighting update: lr must be positive (got {self.lr})")
        if self.combine not in ("max", "fisher"):
            raise ValueError(f"FraudsterReweighting update: combine must be 'max' or 'fisher' (got {self.combine!r})")

    def due(self, epoch: int) -> bool:
        return epoch >= self.start_epoch and (epoch - self.start_epoch) % self.every == 0


class FraudsterReweighting(L.Callback):
    """Per-user loss weights from an LM detector calibrated on the recommender's representations.

    Args:
        encoder: ``genrec.robust.encoders.build_encoder`` options (default: MiniLM, item mode).
        known_attack: ``AttackConfig`` options of the simulated attack the detectors learn from.
        update: when and how the weights move (``WeightUpdate``).
        signals: untrained per-user signals (``genrec.robust.signals``); with ``update.scores="rank"``
            a user's rank combines its calibrated percentile and each signal's (``update.combine``).
        detector, calibrator: ``DetectorConfig`` / ``CalibratorConfig`` options; the LM detector's
            scores are logged and reported, never part of the weights.
        threshold: score above which a user counts as flagged in precision/recall.
        cache_dir: where LM embeddings are cached (default: ``$GENREC_CACHE/lm_embeddings``).
        seed: seeds the known attack and the detectors.
        train_known: also train on the simulated fakes, as labelled decoys after the data module's users.
    """

    def __init__(self, encoder: dict[str, Any] | None = None, known_attack: dict[str, Any] | None = None,
                 update: WeightUpdate | None = None, signals: Sequence[Signal] = (),
                 detector: dict[str, Any] | None = None, calibrator: dict[str, Any] | None = None,
                 threshold: float = 0.5, cache_dir: str | None = None, seed: int = 0, train_known: bool = False):
        self.update = update or WeightUpdate()
        self.signals = list(signals)
        if self.signals and self.update.scores != "rank":
            raise ValueError("FraudsterReweighting: signals combine percentiles; set update.scores: rank as well")
        names = [s.name for s in self.signals]
        if len(set(names)) != len(names):
            raise ValueError(f"FraudsterReweighting: two signals share a name ({names}); each logs as robust/<name>_*")
        self.encoder_options = {"kind": "sentence-transformers", **(encoder or {})}
        self.known_attack = AttackConfig.from_dict({"kind": "random", "seed": seed + 1000, **(known_attack or {})})
        self.threshold, self.cache_dir, self.seed, self.train_known = threshold, cache_dir, seed, train_known
        self.detector_config = DetectorConfig(**{"seed": seed, **(detector or {})})
        self.calibrator_config = CalibratorConfig(**{"seed": seed, **(calibrator or {})})
        self.w: torch.Tensor | None = None
        self.updates = 0
        self.last_update_epoch = -1
        self.scores: np.ndarray | None = None
        self.update_scores: np.ndarray | None = None  # the last update's combined rank of each user
        self.lm_scores: np.ndarray | None = None
        self.signal_scores: dict[str, np.ndarray] = {}  # each signal's scores of the data module's users
        self.flagged: torch.Tensor | None = None  # (U,) bool: flagged with confidence (sticky)
        self._history_scores: dict[str, np.ndarray] = {}  # signals that read histories only, scored once per fit
        self.calibrator_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self._known: dict[str, Any] | None = None  # LM embeddings of users and simulated fakes, from fit start
        self._known_profiles = None  # the simulated known-attack fakes, generated in setup on every rank
        self.num_own_users: int | None = None  # the data module's users; decoys (train_known) follow them
        self.timings: dict[str, list[float]] = defaultdict(list)  # seconds per part, per call (benchmarks/robust_cost.py)

    @property
    def weights(self) -> torch.Tensor:
        return torch.sigmoid(self.w) / torch.sigmoid(torch.tensor(self.update.w0))

    def update_weights(self, scores: np.ndarray | None, flagged: torch.Tensor | None = None) -> torch.Tensor:
        """One iterative step from fraud scores in [0, 1] (None: no step), then the ``flagged`` users
        held at ``update.flagged_weight`` at most; the weights keep summing to the user count."""
        w = self.w.clone()
        if scores is not None:
            s = torch.as_tensor(scores, dtype=torch.float32)
            if self.update.scores == "rank":
                s = percentiles(s)
                f = self.update.flag_fraction
                s = ((s - (1 - f)) / f).clamp(0, 1)
            w = w - self.update.lr * (s - s.mean())
        base = torch.sigmoid(torch.tensor(self.update.w0))
        pinned = torch.zeros(len(w), dtype=torch.bool) if flagged is None else flagged.clone()
        if pinned.all():
            raise ValueError(f"FraudsterReweighting: every one of the {len(w)} users is flagged; raise the signals' flag_above")
        floor = torch.logit(base * self.update.flagged_weight)
        w[pinned] = torch.minimum(w[pinned], floor)
        # Shift the other logits so the total is restored; σ is monotone, so bisection on the shift converges.
        target = len(w) - (torch.sigmoid(w[pinned]) / base).sum()
        free = w[~pinned]
        lo, hi = -50.0, 50.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (torch.sigmoid(free + mid) / base).sum() < target else (lo, mid)
        w[~pinned] = free + (lo + hi) / 2
        self.w = w
        return self.weights

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or self.num_own_users is not None:
            return
        # The same profiles on every rank: generate() depends only on the data and the seed.
        self.num_own_users = dm.data.num_users
        avoid = sorted(set(self.known_attack.avoid_targets) | set(np.asarray(getattr(dm, "targets", [])).tolist()))
        self._known_profiles = generate(
            dm.data, dm.train_end, AttackConfig.from_dict({**self.known_attack.to_dict(), "avoid_targets": avoid}),
            dm.hparams.max_seq_len)
        if self.train_known:
            dm.add_training_users(*inject(dm.data, dm.train_end, self._known_profiles, prefix="decoy"))
            rank_zero_info(f"genrec: fraudster reweighting trains on {len(self._known_profiles)} labelled decoys "
                           f"(targets {self._known_profiles.targets.tolist()})")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None or not hasattr(pl_module, "set_user_weights"):
            raise ValueError("FraudsterReweighting needs a genrec data module and a module with set_user_weights (e.g. RetrievalModule)")
        num_users = dm.data.num_users
        if self.w is not None and len(self.w) != num_users:
            raise ValueError(f"FraudsterReweighting: the checkpoint holds weights for {len(self.w)} users, the data have {num_users}: resume with the same data and attack")
        if self.w is None:
            self.w = torch.full((num_users,), float(self.update.w0))
        prepared = None
        if trainer.is_global_zero:
            prepared = self._prepare(trainer, dm)
        self._known = trainer.strategy.broadcast(prepared, src=0)
        self.lm_scores = self._known["lm_scores"]
        self._history_scores = {}
        if self.flagged is None:  # a fresh run (a resumed one has its flags)
            state = self._flag_before_training(dm, trainer) if trainer.is_global_zero else None
            self.w, self.flagged = trainer.strategy.broadcast(state, src=0)
        pl_module.set_user_weights(self.weights)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if not self.update.due(epoch) or epoch == self.last_update_epoch:
            return
        state = self._update(trainer, pl_module) if trainer.is_global_zero else None
        state = trainer.strategy.broadcast(state, src=0)
        self.w, self.scores, self.calibrator_state = state["w"], state["scores"], state["calibrator"]
        self.update_scores = state["update_scores"]
        self.signal_scores, self.flagged = state["signals"], state["flagged"]
        self.updates, self.last_update_epoch = state["updates"], epoch
        self.history = state["history"]
        pl_module.set_user_weights(self.weights)

    def state_dict(self) -> dict[str, Any]:
        # Tensors and plain types only: Lightning resumes with torch.load(weights_only=True).
        as_tensor = lambda a: None if a is None else torch.as_tensor(a)
        return {"w": self.w, "w0": self.update.w0, "updates": self.updates, "last_update_epoch": self.last_update_epoch,
                "scores": as_tensor(self.scores), "update_scores": as_tensor(self.update_scores),
                "lm_scores": as_tensor(self.lm_scores),
                "signal_scores": {k: as_tensor(v) for k, v in self.signal_scores.items()},
                "flag_fraction": self.update.flag_fraction, "calibrator": self.calibrator_state, "history": self.history,
                "flagged": self.flagged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        as_array = lambda t: None if t is None else t.numpy()
        if float(state["w0"]) != self.update.w0:
            raise ValueError(f"FraudsterReweighting: the checkpoint's weights start from w0={state['w0']}, this run's "
                             f"update.w0 is {self.update.w0}: resume with the same update options")
        self.w, self.updates = state["w"], state["updates"]
        self.last_update_epoch, self.scores = state["last_update_epoch"], as_array(state["scores"])
        self.lm_scores, self.calibrator_state = as_array(state["lm_scores"]), state["calibrator"]
        self.update_scores = as_array(state.get("update_scores"))  # absent before combine options
        self.signal_scores = {k: as_array(v) for k, v in saved_signal_scores(state).items()}
        self.history = state["history"]
        self.flagged = state.get("flagged")  # checkpoints before confident flags: a fresh pass at fit start

    @contextmanager
    def _timed(self, part: str):
        start = time.perf_counter()
        yield
        self.timings[part].append(time.perf_counter() - start)

    def _histories(self, dm) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The data module's own users' training histories (not the decoys)."""
        data = dm.data
        spans = list(zip(data.offsets[:-1], dm.train_end))[: self.num_own_users]
        return [data.items[s:e] for s, e in spans], [data.timestamps[s:e] for s, e in spans]

    def _prepare(self, trainer: L.Trainer, dm) -> dict[str, Any]:
        data, known = dm.data, self._known_profiles
        cache = self.cache_dir or str(default_cache_dir() / "lm_embeddings")
        encoder = build_encoder({"cache_dir": cache, **self.encoder_options})
        histories, _ = self._histories(dm)
        with self._timed("setup: LM embedding"):
            lm_users = encoder.users(histories, data.item_text)
            lm_fakes = encoder.users(known.sequences, data.item_text)
        if not self.detector_config.enabled:
            return {"lm_users": lm_users, "lm_fakes": lm_fakes, "lm_scores": None}
        x = np.concatenate([lm_users, lm_fakes])
        y = np.concatenate([np.zeros(len(lm_users)), np.ones(len(lm_fakes))])
        with self._timed("setup: LM detector training"), own_random_streams(self.detector_config.seed):
            lm_scores = Detector(x.shape[1], self.detector_config).fit(x, y).predict(lm_users)
        labels = getattr(dm, "is_fake", None)
        if labels is not None and labels.any():
            metrics = detection_metrics(lm_scores, labels, self.threshold)
            rank_zero_info(f"genrec: LM detector on the training users: {_fmt(metrics)}")
            self._log(trainer, {f"robust/lm_{k}": v for k, v in metrics.items()})
        return {"lm_users": lm_users, "lm_fakes": lm_fakes, "lm_scores": lm_scores}

    def _update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        start = time.perf_counter()
        dm, k = trainer.datamodule, self._known
        max_len = dm.hparams.max_seq_len
        histories, stamps = self._histories(dm)
        known = self._known_profiles  # generated in setup, identically on every rank
        with self._timed("update: user scoring by the recommender"):
            users = sequence_features(pl_module, histories, stamps, k["lm_users"], max_len)
            fakes = sequence_features(pl_module, known.sequences, known.timestamps, k["lm_fakes"], max_len)
        # The calibrator's initialisation and dropout draw from a stream of their own, one per update.
        with own_random_streams(self.calibrator_config.seed + self.updates):
            calibrator = Calibrator(users.states.shape[-1], users.lm.shape[-1], max_len, self.calibrator_config)
            epochs = self.calibrator_config.epochs
            if self.calibrator_state is not None:
                calibrator.load_state_dict(self.calibrator_state)
                epochs = self.calibrator_config.warm_epochs or epochs
            labels = torch.cat([torch.zeros(len(users)), torch.ones(len(fakes))])
            with self._timed("update: calibrator training"):
                loss = calibrator.fit(SequenceFeatures.cat([users, fakes]), labels, epochs)
        with self._timed("update: calibrator scoring"):
            scores = calibrator.predict(users)
            decoys = calibrator.predict(fakes) if self.train_known else np.zeros(0, np.float32)
        update_scores = np.concatenate([scores, decoys])
        signal_scores = {}
        flagged = self.flagged
        if self.signals:  # relative to the data module's users; decoys are scored against them too
            fit = torch.cat([users.mean_fit, fakes.mean_fit]) if self.train_known else users.mean_fit
            view = self._view(dm, histories, stamps, fit)
            for s in self.signals:
                with self._timed(f"update: {s.name} signal"):
                    signal_scores[s.name] = self._score(s, view)
            update_scores = self.combined(update_scores, signal_scores)
            flagged = self.flags(signal_scores, flagged)
            signal_scores = {name: v[: len(scores)] for name, v in signal_scores.items()}
        weights = self.update_weights(update_scores, flagged)
        own = weights[: len(scores)]
        entry = {"epoch": trainer.current_epoch, "calibrator_loss": float(loss), "calibrator_epochs": epochs,
                 "update_seconds": time.perf_counter() - start, "weight_min": weights.min().item(),
                 "weight_max": weights.max().item(), "weight_std": weights.std().item()}
        if len(decoys):
            entry["weight_decoy"] = weights[len(scores):].mean().item()
        labels_true = getattr(dm, "is_fake", None)
        if flagged is not None:
            entry.update(self._flag_counts(flagged[: len(scores)], labels_true))
        if labels_true is not None and labels_true.any():
            fake = torch.as_tensor(labels_true)
            entry.update({"weight_fake": own[fake].mean().item(), "weight_real": own[~fake].mean().item()})
            entry.update(detection_metrics(scores, labels_true, self.threshold))
            if signal_scores:  # flagged: in the top flag_fraction, as the update counts them
                top = 1 - self.update.flag_fraction
                for name, v in signal_scores.items():
                    entry.update({f"{name}_{k}": m for k, m in detection_metrics(percentiles(torch.as_tensor(v)).numpy(), labels_true, top).items()})
                entry.update({f"update_{k}": v for k, v in detection_metrics(update_scores[: len(scores)], labels_true, top).items()})
        rank_zero_info(f"genrec: fraudster reweighting, update {self.updates + 1}: {_fmt(entry)}")
        self._log(trainer, {f"robust/{k}": v for k, v in entry.items() if k != "epoch"})
        return {"w": self.w, "scores": scores, "update_scores": update_scores[: len(scores)], "signals": signal_scores, "calibrator": calibrator.state_dict(),
                "updates": self.updates + 1, "history": self.history + [entry], "flagged": flagged}

    def _score(self, signal: Signal, view: UserView) -> np.ndarray:
        """A signal's scores of the view's users. The training histories do not change during a fit, so
        a signal that reads histories only (``needs_model`` False) is scored once and reused."""
        if signal.needs_model:
            return np.asarray(signal.score(view), np.float32)
        if signal.name not in self._history_scores:
            self._history_scores[signal.name] = np.asarray(signal.score(view), np.float32)
        return self._history_scores[signal.name]

    def combined(self, calibrated: np.ndarray, signal_scores: dict[str, np.ndarray]) -> np.ndarray:
        """Each user's rank from its calibrated percentile and each signal's, weighted by the signal's
        ``weight``, as ``update.combine`` says (the largest, or Fisher's sum), as a percentile. (U,)"""
        counted = [s for s in self.signals if s.weight > 0]
        p = torch.stack([percentiles(torch.as_tensor(v)) for v in [calibrated, *(signal_scores[s.name] for s in counted)]])
        weight = torch.tensor([1.0] + [s.weight for s in counted])[:, None]
        if self.update.combine == "max":
            return percentiles((weight * p).max(0).values).numpy()
        n = p.shape[1]
        tail = (1 - p) * (n - 1) / n + 1 / n  # the fraction of users ranked at or above, in [1/n, 1]
        return percentiles((weight * -torch.log(tail)).sum(0)).numpy()

    def flags(self, signal_scores: dict[str, np.ndarray], before: torch.Tensor | None) -> torch.Tensor | None:
        """Users flagged with confidence: above some signal's ``flag_above`` now or at an earlier update."""
        flagged = before
        for s in self.signals:
            if s.flag_above is not None and s.name in signal_scores:
                now = torch.as_tensor(signal_scores[s.name] > s.flag_above)
                flagged = now if flagged is None else flagged | now
        return flagged

    def _flag_before_training(self, dm, trainer: L.Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights and flags before the first epoch: the signals that read histories only and
        have a ``flag_above`` score the training histories, and the users they flag are held at
        ``update.flagged_weight``."""
        early = [s for s in self.signals if not s.needs_model and s.flag_above is not None]
        flagged = torch.zeros(len(self.w), dtype=torch.bool)
        if not early:
            return self.w, flagged
        start = time.perf_counter()
        view = self._view(dm, *self._histories(dm))
        with self._timed("setup: flags before training"):
            flagged = self.flags({s.name: self._score(s, view) for s in early}, flagged)
        self.update_weights(None, flagged)
        entry = {"flag_seconds": time.perf_counter() - start,
                 **self._flag_counts(flagged[: self.num_own_users], getattr(dm, "is_fake", None))}
        rank_zero_info(f"genrec: fraudster reweighting, flags before training: {_fmt(entry)}")
        self._log(trainer, {f"robust/{k}": v for k, v in entry.items()})
        return self.w, flagged

    @staticmethod
    def _flag_counts(flagged: torch.Tensor, labels: np.ndarray | None) -> dict[str, float]:
        """How many of the data module's users are flagged with confidence (and how many of them are fakes)."""
        out = {"confident": float(flagged.sum())}  # not "flagged": detection_metrics' count of the top fraction
        if labels is not None and labels.any():
            fake = torch.as_tensor(labels)
            out.update({"confident_fakes": float(flagged[fake].sum()), "confident_real": float(flagged[~fake].sum())})
        return out

    def _view(self, dm, histories: list[np.ndarray], stamps: list[np.ndarray],
              mean_fit: torch.Tensor | None = None) -> UserView:
        """The data module's users, then the decoys when they are trained on (``train_known``); ``mean_fit``
        None: zeros (before training)."""
        own = len(histories)
        if self.train_known:
            known = self._known_profiles
            histories, stamps = histories + list(known.sequences), stamps + list(known.timestamps)
        fit = torch.zeros(len(histories)) if mean_fit is None else mean_fit
        # train_counts: what the recommender trains on, fakes included
        return UserView(histories, stamps, fit, train_counts(dm.data, dm.train_end), own)

    @staticmethod
    def _log(trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=trainer.global_step)


@contextmanager
def own_random_streams(seed: int):
    """Torch's global random stream seeded with ``seed`` inside, restored to where it was on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def saved_signal_scores(state: dict[str, Any]) -> dict[str, Any]:
    """A saved callback state's signal scores by name (checkpoints before ``signals`` held ``anomaly_scores``)."""
    if "signal_scores" in state:
        return dict(state["signal_scores"])
    return {"anomaly": state["anomaly_scores"]} if state.get("anomaly_scores") is not None else {}


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
