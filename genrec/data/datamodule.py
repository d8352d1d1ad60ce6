"""LightningDataModule over per-user item sequences, split leave-one-out: for a user with at least 3
interactions the last item is the test target, the one before the validation target, the rest trains; users
with fewer train on what they have and are counted, not evaluated. Batches are right-padded with 0."""
from __future__ import annotations

import hashlib
import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from genrec import digests
from genrec.data import engine, preprocess
from genrec.data.batching import BucketedTrainSampler
from genrec.data.preprocess import SequenceData
from genrec.data.raw import DataError
from genrec.data.registry import Source, get_source
from genrec.data.samplers import EvalShardSampler, ResumableDataLoader, ShardedTrainSampler, Shards, check_shards

Exclude = Literal["history", "window", "none"]
PredictOn = Literal["test", "val", "all"]
VerifyCache = Literal["changed", "full"]
VERIFY_CACHE = ("changed", "full")
VERIFIED_RECORD = ".verified.json"


class TrainWindows(Dataset):
    """One sample per (user, window of ``max_seq_len + 1`` items): the most recent (``last``) or ``all`` tiling
    the training sequence."""

    def __init__(self, data: SequenceData, train_end: np.ndarray, max_seq_len: int, windows: str = "last"):
        self.data = data
        trained = np.flatnonzero(train_end - data.offsets[:-1] >= 2)
        if windows == "last":
            self.ends = np.asarray(train_end[trained], np.int64)
            self.starts = np.maximum(data.offsets[trained], self.ends - max_seq_len - 1)
            self.users = trained.astype(np.int64)
            return
        starts, ends, users = [], [], []
        for u in trained:
            lo, end = data.offsets[u], train_end[u]
            while end - lo >= 2:
                start = max(lo, end - max_seq_len - 1)
                starts.append(start)
                ends.append(end)
                users.append(u)
                end = start + 1  # the next window's last input is this window's first
        self.starts, self.ends, self.users = (np.asarray(a, np.int64) for a in (starts, ends, users))

    def __len__(self) -> int:
        return len(self.starts)

    def keep_users(self, chosen: np.ndarray) -> None:
        """Keep only the windows of the users where ``chosen`` (a mask over all users) is true."""
        keep = chosen[self.users]
        self.starts, self.ends, self.users = self.starts[keep], self.ends[keep], self.users[keep]

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        return int(self.users[i]), int(self.starts[i]), int(self.ends[i])


class EvalTargets(Dataset):
    """One sample per evaluated user (user, target position), ordered by history length so batches pad little."""

    def __init__(self, data: SequenceData, users: np.ndarray, target_pos: np.ndarray, max_seq_len: int):
        window = np.minimum(target_pos - data.offsets[users], max_seq_len)
        order = np.argsort(window, kind="stable")
        self.data, self.users, self.target_pos = data, users[order], target_pos[order]

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return int(self.users[i]), int(self.target_pos[i])


class Collator:
    """Index tuples -> padded ``items`` / ``timestamps`` (B, L) and ``query_time`` (B,), the time of the
    interaction the last position predicts; every ``release_pages_every`` batches (0 = never) it calls
    ``preprocess.release_pages`` on the mapped sequences."""

    def __init__(self, data: SequenceData, max_seq_len: int, exclude: Exclude = "history",
                 stochastic_length: float = 0.0, release_pages_every: int = 0):
        self.items, self.timestamps, self.offsets = data.items, data.timestamps, data.offsets
        self.max_seq_len = max_seq_len
        self.exclude = exclude
        self.stochastic_length = stochastic_length
        self.release_pages_every = release_pages_every
        self.batches = 0

    def _count_batch(self) -> None:
        self.batches += 1
        if self.release_pages_every and self.batches % self.release_pages_every == 0:
            preprocess.release_pages(self.items, self.timestamps, self.offsets)

    def _pad(self, spans: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._pad_rows([np.arange(s, e) for s, e in spans])

    def _pad_rows(self, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Items and timestamps at each row's positions, right-padded; and the rows' lengths."""
        width = max(1, max(len(r) for r in rows))
        items = np.zeros((len(rows), width), np.int64)
        stamps = np.zeros((len(rows), width), np.int64)
        for r, pos in enumerate(rows):
            items[r, : len(pos)] = self.items[pos]
            stamps[r, : len(pos)] = self.timestamps[pos]
        return items, stamps, np.array([len(r) for r in rows], np.int64)

    def _window(self, s: int, e: int) -> np.ndarray:
        """Positions of one training window, cut by HSTU's Stochastic Length (``LoaderConfig``) with torch's RNG."""
        pos = np.arange(s, e)
        a, n = self.stochastic_length, e - s - 1
        if not a:
            return pos
        m = int(self.max_seq_len ** (a / 2))
        if n <= m or torch.rand(()).item() < self.max_seq_len ** a / n**2:
            return pos
        keep = torch.randperm(n + 1)[: m + 1].sort().values.numpy()
        return pos[keep]

    def train(self, batch: list[tuple[int, int, int]]) -> dict[str, torch.Tensor]:
        self._count_batch()
        windows = [self._window(s, e) for _, s, e in batch]
        items, stamps, lengths = self._pad_rows([w[:-1] for w in windows])
        targets, _, _ = self._pad_rows([w[1:] for w in windows])
        return {
            "user": torch.as_tensor([b[0] for b in batch]),
            "items": torch.from_numpy(items),
            "timestamps": torch.from_numpy(stamps),
            "targets": torch.from_numpy(targets),
            "lengths": torch.from_numpy(lengths),
            "query_time": torch.from_numpy(self.timestamps[np.array([w[-1] for w in windows], np.int64)]),
        }

    def history(self, batch: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """Requests ``(user, end)``: the window before position ``end``, the ids to exclude, its last item's time."""
        self._count_batch()
        items, stamps, lengths = self._pad([(max(self.offsets[u], p - self.max_seq_len), p) for u, p in batch])
        out = {
            "user": torch.as_tensor([u for u, _ in batch]),
            "items": torch.from_numpy(items),
            "timestamps": torch.from_numpy(stamps),
            "lengths": torch.from_numpy(lengths),
            "query_time": torch.from_numpy(self.timestamps[np.array([p - 1 for _, p in batch], np.int64)].astype(np.int64)),
        }
        if self.exclude == "history":
            out["exclude"] = torch.from_numpy(self._pad([(self.offsets[u], p) for u, p in batch])[0])
        elif self.exclude == "window":
            out["exclude"] = out["items"]
        return out

    def eval(self, batch: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """``history`` before each held-out position, plus its ``target`` and that interaction's time."""
        out = self.history(batch)
        held_out = np.array([p for _, p in batch], np.int64)
        out["target"] = torch.from_numpy(self.items[held_out].astype(np.int64))
        out["query_time"] = torch.from_numpy(self.timestamps[held_out].astype(np.int64))
        return out


def cache_folder(source: Source, min_user_interactions: int, min_item_interactions: int,
                 fingerprint: str | None = None) -> Path:
    """Where the preprocessed tables of ``source`` under these filters are cached (``fingerprint``: if known)."""
    fingerprint = fingerprint or source.fingerprint()
    key = f"{fingerprint}-k{min_user_interactions}-{min_item_interactions}-v{preprocess.PREPROCESS_VERSION}"
    return source.cache_dir / "processed" / source.name / key


def verified_record(source: Source, verify: VerifyCache = "changed") -> digests.Verified | None:
    """The record of the files verified in full for ``source``'s caches; None when ``verify="full"``."""
    if verify not in VERIFY_CACHE:
        raise DataError(f"data.preprocess.verify_cache must be one of {VERIFY_CACHE} (got {verify!r})")
    if verify == "full":
        return None
    return digests.Verified(source.cache_dir / "processed" / source.name / VERIFIED_RECORD)


def _cached(source: Source, min_user_interactions: int, min_item_interactions: int,
            verified: digests.Verified | None) -> tuple[SequenceData | None, str]:
    """The cached sequences when usable, and the inputs' fingerprint; the newest cache of these settings is
    checked in a second thread while the inputs are hashed, and used when its key is their fingerprint."""
    settings = cache_folder(source, min_user_interactions, min_item_interactions, "guess")
    suffix = settings.name.removeprefix("guess")
    candidates = [p for p in settings.parent.glob(f"*{suffix}") if (p / "meta.json").is_file()]
    guess = max(candidates, key=lambda p: (p / "meta.json").stat().st_mtime_ns) if candidates else None
    with ThreadPoolExecutor(1) as pool:
        speculative = pool.submit(preprocess.inspect, guess, None, verified) if guess is not None else None
        fingerprint = source.fingerprint(verified)
        folder = cache_folder(source, min_user_interactions, min_item_interactions, fingerprint)
        if speculative is not None and guess == folder:
            data, problem = speculative.result()
            if problem is None and data is not None and data.fingerprint == fingerprint:
                return data, fingerprint
    return preprocess.load(folder, fingerprint, verified), fingerprint


def _prebuilt(folder: Path, min_user_interactions: int, min_item_interactions: int,
              verified: digests.Verified | None) -> SequenceData:
    """The sequences a preprocessing job wrote to ``folder``, never rebuilt (a failed check is an error)."""
    if min_user_interactions or min_item_interactions:
        raise DataError(f"data.preprocess.min_user_interactions / min_item_interactions apply when genrec preprocesses raw "
                        f"files; {folder} is already filtered (see the counts in its meta.json): set them to 0, or "
                        "pass the thresholds to the job that wrote it (--min-user, --min-item)")
    data, problem = preprocess.inspect(folder, None, verified)
    if problem is not None:
        raise DataError(f"{problem[0]} {problem[1]}: {folder} is not a complete folder in the sequence format "
                        "(docs/datasets.md); write it again with the job that made it")
    if data is None:
        raise DataError(f"{folder} does not exist: point data.root at the folder a preprocessing job wrote")
    return data


def load_sequences(source: Source, min_user_interactions: int = 0, min_item_interactions: int = 0,
                   use_cache: bool = True, memory_limit: str | None = None,
                   verify: VerifyCache = "changed") -> SequenceData:
    """Read, filter and index a source's interactions, through the cache when allowed, memory-mapped either
    way; ``memory_limit`` and ``verify``: ``PreprocessConfig``'s ``memory`` and ``verify_cache``."""
    verified = verified_record(source, verify)
    if (folder := source.prebuilt()) is not None:
        return _prebuilt(folder, min_user_interactions, min_item_interactions, verified)
    data, fingerprint = (_cached(source, min_user_interactions, min_item_interactions, verified) if use_cache
                         else (None, source.fingerprint()))
    if data is not None:
        return data
    folder = cache_folder(source, min_user_interactions, min_item_interactions, fingerprint)

    def unchanged() -> None:
        if source.fingerprint() != fingerprint:
            files = ", ".join(str(p) for p in source.input_files())
            raise DataError(f"{files} changed while being read, so the data read may mix two versions; "
                            "run again once nothing writes to them")

    if not use_cache:
        data = preprocess.build_sequences(source, min_user_interactions, min_item_interactions, fingerprint, memory_limit)
        unchanged()
        return data
    preprocess.check_writable(folder)
    try:
        preprocess.build(source, folder, min_user_interactions, min_item_interactions, fingerprint, memory_limit,
                         before_publish=unchanged)
    except OSError as err:  # e.g. the disk filled up while writing
        raise preprocess.cache_error(folder, err) from None
    data = preprocess.load(folder, fingerprint, verified)
    if data is None:
        raise DataError(f"the preprocessing cache {folder} failed its check right after it was written (see the "
                        "warning above); the disk may be failing: set data.cache_dir elsewhere")
    return data


@dataclass(frozen=True)
class LoaderConfig:
    """Which training windows the loaders serve and how they batch them.

    Args:
        train_windows: ``last`` (one window per user per epoch) or ``all`` (tile long sequences).
        stochastic_length: HSTU's Stochastic Length α in (1, 2] (0 = off): a training window of n inputs
            longer than m = ⌊max_seq_len^(α/2)⌋ keeps a random ordered m + 1 of its items with probability
            1 − max_seq_len^α / n²; evaluation sees whole windows.
        bucket_by_length: batch training windows of similar length together (``genrec.data.batching``).
        batch_size, eval_batch_size: sequences per training and per evaluation batch.
        num_workers: DataLoader worker processes (0 = load in the main process).
        release_pages_every: every this many batches, unmap the pages of the mapped sequence files from the
            loading process's RSS (0 = never; docs/performance.md, "Pages released").
        shards: how DDP ranks split the data: ``interleaved`` or ``contiguous`` (docs/distributed.md; not for
            multi-domain or pair data).
    """

    train_windows: Literal["last", "all"] = "last"
    stochastic_length: float = 0.0
    bucket_by_length: bool = True
    batch_size: int = 128
    eval_batch_size: int = 512
    num_workers: int = 0
    release_pages_every: int = 0
    shards: Shards = "interleaved"

    def __post_init__(self) -> None:
        if self.train_windows not in ("last", "all"):
            raise DataError(f"data.loader.train_windows must be 'last' or 'all' (got {self.train_windows!r})")
        if self.stochastic_length and not 1 < self.stochastic_length <= 2:
            raise DataError(f"data.loader.stochastic_length is HSTU's alpha, in (1, 2], or 0 for off (got {self.stochastic_length})")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise DataError("data.loader.batch_size and data.loader.eval_batch_size must be positive")
        check_counts(**{"loader.num_workers": self.num_workers, "loader.release_pages_every": self.release_pages_every})
        check_shards(self.shards)


@dataclass(frozen=True)
class PreprocessConfig:
    """How the raw files become the cached sequence files, and how a cached load verifies them.

    Args:
        min_user_interactions, min_item_interactions: k-core filtering (0 = off).
        use_cache: keep the preprocessed sequences in ``cache_dir`` (``false``: a temporary folder every run).
        verify_cache: ``changed`` hashes only files whose stat stamp changed since last hashed in full,
            ``full`` every byte on every load (docs/reliability.md).
        memory: the preprocessing engine's memory budget (e.g. ``"4GB"``); default $GENREC_PREPROCESS_MEMORY, else 1GB.
    """

    min_user_interactions: int = 0
    min_item_interactions: int = 0
    use_cache: bool = True
    verify_cache: VerifyCache = "changed"
    memory: str | None = None

    def __post_init__(self) -> None:
        check_counts(**{f"preprocess.{k}": getattr(self, k) for k in ("min_user_interactions", "min_item_interactions")})
        if self.verify_cache not in VERIFY_CACHE:
            raise DataError(f"data.preprocess.verify_cache must be one of {VERIFY_CACHE} (got {self.verify_cache!r})")
        if self.memory is not None:
            engine.memory_limit(self.memory)  # a typo fails here, not after the download


GROUPS: dict[str, type] = {"loader": LoaderConfig, "preprocess": PreprocessConfig}

PROTOCOL = ("dataset", "dataset_options", "max_seq_len", "min_user_interactions", "min_item_interactions", "exclude",
            "fit_on_validation")


def data_protocol(hparams: Any) -> dict[str, Any]:
    """The ``PROTOCOL`` settings (what a model saw and how it is evaluated) of a data module's hyper-parameters."""
    flat = {**dict(hparams), **(hparams.get("preprocess") or {})}
    return {key: flat[key] for key in PROTOCOL if key in flat}


def check_loader_options(max_seq_len: int, exclude: str) -> None:
    if max_seq_len < 2:
        raise DataError(f"data.max_seq_len must be at least 2 (got {max_seq_len}): a model needs a history and a target")
    if exclude not in ("history", "window", "none"):
        raise DataError(f"data.exclude must be 'history', 'window' or 'none' (got {exclude!r})")


def check_counts(**counts: int) -> None:
    """k-core thresholds and worker counts: 0 switches them off, a negative value is a typo."""
    for key, value in counts.items():
        if not value >= 0:
            raise DataError(f"data.{key} must be >= 0, got {value!r}")


def data_options(cls: type) -> list[str]:
    """The keyword arguments a data module class accepts, those forwarded through ``**data_options`` included."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                  and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def typed_overrides(cls: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` of data module options (as ``--data.KEY`` gives them) checked and typed by jsonargparse against
    ``cls``'s signature, grouped keys nested; a bad key or value is a ``ValueError`` naming it."""
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data", sub_configs=True)
    try:
        config = parser.parse_object({"data": overrides}, defaults=False, _skip_validation=True)
        parser.validate(config, skip_required=True)
    except (ArgumentError, KeyError, TypeError) as err:
        accepted = data_options(cls)
        known = [k for k in accepted if k not in GROUPS] + [
            f"{name}.{f.name}" for name, config in GROUPS.items() if name in accepted for f in fields(config)]
        raise ValueError(f"bad data option for {cls.__name__}: {err}; known: {sorted(known)}") from None
    return config.data.as_dict()


def rebuild_options(cls: type, hparams: dict[str, Any], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arguments that rebuild a data module of ``cls`` from a checkpoint's hyper-parameters and ``overrides``."""
    accepted = data_options(cls)
    overrides = typed_overrides(cls, overrides) if overrides else {}
    out = {**{k: v for k, v in hparams.items() if k in accepted}, **overrides}
    for name, config in GROUPS.items():
        if name in accepted:
            out[name] = config(**{**(hparams.get(name) or {}), **(overrides.get(name) or {})})
    return out


class SequenceDataModule(L.LightningDataModule):
    """Sequences of one dataset, split leave-one-out, batched for ID-based retrieval models.

    Args:
        dataset: registered dataset name (docs/datasets.md).
        root: folder that already holds the official files (nothing is downloaded then).
        dataset_options: reader options (e.g. ``{"category": "Beauty"}``).
        cache_dir: where downloads and the preprocessed cache live.
        max_seq_len: most recent items a model sees.
        exclude: what evaluation removes from the candidates: the user's ``history`` before the target,
            the input ``window``, or ``none``.
        fit_on_validation: also train on each user's validation target (the HSTU paper code's protocol);
            validation metrics are then seen-data metrics.
        loader: training windows and batching (``LoaderConfig``).
        preprocess: k-core filtering, the cache and its checks (``PreprocessConfig``).
    """

    def __init__(self, dataset: str = "synthetic", root: str | None = None,
                 dataset_options: dict[str, Any] | None = None, cache_dir: str | None = None, download: bool = True,
                 max_seq_len: int = 200, exclude: Exclude = "history", fit_on_validation: bool = False,
                 loader: LoaderConfig = LoaderConfig(), preprocess: PreprocessConfig = PreprocessConfig()):
        super().__init__()
        check_loader_options(max_seq_len, exclude)
        self.loader_config, self.preprocess_config = loader, preprocess
        self.save_data_hyperparameters()
        self.source = get_source(dataset, root=root, cache_dir=cache_dir, download=download, **(dataset_options or {}))
        self._data: SequenceData | None = None
        self.predict_on: PredictOn = "test"
        self.predict_users: np.ndarray | None = None

    def save_data_hyperparameters(self) -> None:
        """``save_hyperparameters`` of the calling ``__init__``, the option groups as plain dicts."""
        self.save_hyperparameters(ignore=["loader", "preprocess"], frame=inspect.currentframe().f_back)
        self.hparams["loader"] = asdict(self.loader_config)
        if hasattr(self, "preprocess_config"):  # multi-domain modules keep a flat use_cache
            self.hparams["preprocess"] = asdict(self.preprocess_config)

    @property
    def cache_folder(self) -> Path:
        pc = self.preprocess_config
        return cache_folder(self.source, pc.min_user_interactions, pc.min_item_interactions)

    def prepare_data(self) -> None:
        self._load()

    def _load(self) -> SequenceData:
        if self._data is not None:
            return self._data
        pc = self.preprocess_config
        self._data = load_sequences(self.source, pc.min_user_interactions, pc.min_item_interactions, pc.use_cache,
                                    pc.memory, pc.verify_cache)
        self._split()
        preprocess.release_pages(self._data.offsets)  # the split read every offset
        return self._data

    @property
    def data(self) -> SequenceData:
        return self._load()

    def _split(self) -> None:
        data = self._data
        lengths = data.lengths
        evaluable = np.flatnonzero(lengths >= 3)
        self.eval_users = evaluable
        self.val_pos = data.offsets[evaluable] + lengths[evaluable] - 2
        self.test_pos = data.offsets[evaluable] + lengths[evaluable] - 1
        self.train_end = data.offsets[1:].copy()
        # Training stops before the validation target, or (fit_on_validation) before the test target.
        self.train_end[evaluable] -= 1 if self.hparams.get("fit_on_validation", False) else 2
        counts = data.counts
        counts["users_not_evaluated_lt3"] = int(len(lengths) - len(evaluable))
        counts["users_without_training_pair"] = int((self.train_end - data.offsets[:-1] < 2).sum())
        rank_zero_info(f"genrec: {data.name}: {data.num_users:,} users, {data.num_items:,} items, "
                       f"{data.num_interactions:,} interactions; filtered: "
                       + ", ".join(f"{k}={v:,}" for k, v in preprocess.filtered_counts(counts).items()))
        if len(evaluable) == 0:
            raise DataError(f"dataset {data.name!r}: no user has 3 or more interactions, so there is nothing to evaluate")

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @property
    def fingerprint(self) -> str:
        """Identifies the catalogue: a checkpoint trained on another one must not be evaluated here."""
        ids = "\n".join(self.data.item_ids.astype(str)).encode()
        return f"{self.data.name}:{self.data.num_items}:{hashlib.sha256(ids).hexdigest()[:12]}"

    def train_item_counts(self) -> torch.Tensor:
        """Interactions per item in the training part only (the popularity baseline's scores)."""
        data = self.data
        trained = np.concatenate([data.items[s:e] for s, e in zip(data.offsets[:-1], self.train_end)])
        counts = np.bincount(trained, minlength=data.num_items + 1).astype(np.float32)
        preprocess.release_pages(data.items)
        return torch.from_numpy(counts)

    def add_training_users(self, data: SequenceData, train_end: np.ndarray) -> None:
        """Train on ``data``: the current users unchanged plus appended users that only train (``train_end``)."""
        old, n = self.data, self.data.num_users
        if (data.num_users < n or not np.array_equal(data.offsets[: n + 1], old.offsets)
                or not np.array_equal(data.items[: len(old.items)], old.items) or data.num_items != old.num_items):
            raise ValueError("add_training_users: the new data must keep every current user's sequence and the catalogue")
        if len(train_end) != data.num_users or not np.array_equal(train_end[:n], self.train_end[:n]):
            raise ValueError("add_training_users: train_end must keep the current users' training ends")
        self._data, self.train_end = data, np.asarray(train_end)
        if hasattr(self, "train_set"):
            self.setup("fit")

    def setup(self, stage: str | None = None) -> None:
        data, hp, lc = self._load(), self.hparams, self.loader_config
        self.collator = Collator(data, hp.max_seq_len, hp.exclude, lc.stochastic_length, lc.release_pages_every)
        self.train_set = TrainWindows(data, self.train_end, hp.max_seq_len, lc.train_windows)
        self.val_set = EvalTargets(data, self.eval_users, self.val_pos, hp.max_seq_len)
        self.test_set = EvalTargets(data, self.eval_users, self.test_pos, hp.max_seq_len)

    def _loader(self, dataset: Dataset, train: bool, collate: Any = None) -> DataLoader:
        lc = self.loader_config
        common = dict(num_workers=lc.num_workers, persistent_workers=lc.num_workers > 0)
        if train:
            return ResumableDataLoader(dataset, self.train_sampler(dataset), batch_size=lc.batch_size,
                                       collate_fn=self.collator.train, **common)
        sampler = EvalShardSampler(dataset, shards=lc.shards, keys=getattr(dataset, "users", None))
        return DataLoader(dataset, sampler=sampler, batch_size=lc.eval_batch_size,
                          collate_fn=collate or self.collator.eval, **common)

    def train_sampler(self, dataset: TrainWindows) -> ShardedTrainSampler:
        """The epoch order of the training windows: length-bucketed steps or a plain shuffle."""
        lc = self.loader_config
        if lc.bucket_by_length:
            return BucketedTrainSampler(dataset, dataset.ends - dataset.starts, lc.batch_size, shards=lc.shards)
        return ShardedTrainSampler(dataset, shards=lc.shards)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def set_predict_request(self, on: PredictOn = "test", users: np.ndarray | None = None) -> None:
        """What ``predict_dataloader`` serves: the history before the ``test`` or ``val`` target, or ``all`` of it,
        for ``users`` (user indices, in that order; None: every user)."""
        if on not in ("test", "val", "all"):
            raise ValueError(f"predict on 'test', 'val' or 'all', got {on!r}")
        if users is not None and len(users) == 0:  # else the empty request is blamed on the number of processes
            raise DataError("no users to predict for: the request lists none; list at least one user, or pass "
                            "None to predict for every user")
        self.predict_on, self.predict_users = on, None if users is None else np.asarray(users, np.int64)

    def predict_dataloader(self) -> DataLoader:
        data, on = self.data, self.predict_on
        if on == "all":
            users = np.flatnonzero(data.lengths >= 1) if self.predict_users is None else self.predict_users
            ends = data.offsets[users + 1]
        else:
            users = self.eval_users if self.predict_users is None else self.predict_users
            where = np.searchsorted(self.eval_users, users).clip(max=len(self.eval_users) - 1)
            missing = users[self.eval_users[where] != users]
            if len(missing):
                raise DataError(f"{len(missing):,} requested user(s) have no {on} target (fewer than 3 interactions), "
                                f"e.g. {data.user_ids[missing[:5]].tolist()}: predict on 'all' (full histories) instead")
            ends = (self.test_pos if on == "test" else self.val_pos)[where]
        requests = EvalTargets(data, users, ends, self.hparams.max_seq_len)
        return self._loader(requests, train=False, collate=self.collator.history if on == "all" else None)
