"""Several datasets trained as one: each domain keeps its own catalogue in one joint id space.

Domain d's items get the ids ``first_d .. last_d``, its users follow the previous domain's, and raw ids are
prefixed with the domain name. Training steps hold one domain's windows each (``DomainBlockSampler``);
validation and test have one loader per evaluated domain, ranked within its id range (``eval_domains``).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from genrec.data.batching import DomainBlockSampler
from genrec.data.datamodule import (EvalTargets, Exclude, LoaderConfig, SequenceDataModule, TrainWindows,
                                    check_loader_options, load_sequences)
from genrec.data.fewshot import check_user_fraction, drawn_users
from genrec.data.preprocess import SequenceData
from genrec.data.raw import DataError
from genrec.data.registry import Source, get_source

DOMAIN_KEYS = ("name", "dataset", "root", "dataset_options", "min_user_interactions", "min_item_interactions",
               "train_user_fraction", "fraction_seed")


class MultiDomainDataModule(SequenceDataModule):
    """Leave-one-out sequences of several datasets, one joint id space, one catalogue per domain.

    Args:
        domains: one mapping per domain with ``dataset`` (registered name) and optionally ``name``
            (default: the dataset name; must be unique), ``root``, ``dataset_options``,
            ``min_user_interactions``, ``min_item_interactions``: as ``SequenceDataModule``'s;
            ``train_user_fraction`` and ``fraction_seed``: train on that share of the domain's users only (the
            same draw as ``FewShotDataModule``'s), validation and test on all of them.
        eval_on: names of the domains that validation and test cover (default: all), in order.
        domain_balance: in [0, 1]; domain d's share of the training steps is ``∝ windows_d ** (1 - domain_balance)``
            (0: as the data come; 1: equal shares).
        val_users_per_domain: validate each domain on a fixed random sample of this many users (0: all).
        the rest: settings shared by every domain, as ``SequenceDataModule``'s (``loader``: ``LoaderConfig``).
    """

    def __init__(self, domains: list[dict[str, Any]], eval_on: list[str] | None = None, domain_balance: float = 0.0,
                 val_users_per_domain: int = 0, cache_dir: str | None = None,
                 download: bool = True, use_cache: bool = True, max_seq_len: int = 200, exclude: Exclude = "history",
                 loader: LoaderConfig = LoaderConfig()):
        super(SequenceDataModule, self).__init__()
        check_loader_options(max_seq_len, exclude)
        if not 0 <= domain_balance <= 1:
            raise DataError(f"data.domain_balance must be in [0, 1] (0: domains as large as their data, 1: equal), got {domain_balance}")
        if val_users_per_domain < 0:
            raise DataError(f"data.val_users_per_domain must be 0 (all users) or positive, got {val_users_per_domain}")
        if not domains:
            raise DataError("data.domains is empty: list at least one domain, e.g. [{dataset: plain, root: ...}]")
        self.loader_config = loader
        self.save_data_hyperparameters()
        self.names: list[str] = []
        self.parts: list[tuple[Source, int, int]] = []  # source, k-core settings
        self.user_fractions: dict[str, tuple[float, int]] = {}  # domains that train on a share of their users
        for i, spec in enumerate(domains):
            if not isinstance(spec, dict) or "dataset" not in spec:
                raise DataError(f"data.domains[{i}] must be a mapping with at least 'dataset' (got {spec!r})")
            unknown = sorted(set(spec) - set(DOMAIN_KEYS))
            if unknown:
                raise DataError(f"data.domains[{i}] has unknown key(s) {unknown}; known: {list(DOMAIN_KEYS)}")
            name = str(spec.get("name") or spec["dataset"])
            if name in self.names:
                raise DataError(f"data.domains[{i}]: domain name {name!r} is used twice; give each domain a unique 'name'")
            self.names.append(name)
            fraction, seed = spec.get("train_user_fraction", 1.0), spec.get("fraction_seed", 0)
            check_user_fraction(f"data.domains[{i}]", fraction, seed)
            if fraction < 1:
                self.user_fractions[name] = (fraction, seed)
            self.parts.append((
                get_source(spec["dataset"], root=spec.get("root"), cache_dir=cache_dir, download=download,
                           **(spec.get("dataset_options") or {})),
                spec.get("min_user_interactions", 0), spec.get("min_item_interactions", 0),
            ))
        missing = [n for n in (eval_on or []) if n not in self.names]
        if missing:
            raise DataError(f"data.eval_on names unknown domain(s) {missing}; the domains are {self.names}")
        self.eval_names = list(eval_on or self.names)
        self._data: SequenceData | None = None

    def _load(self) -> SequenceData:
        if self._data is not None:
            return self._data
        datas = []
        for name, (source, min_user, min_item) in zip(self.names, self.parts):
            data = load_sequences(source, min_user, min_item, self.hparams.use_cache)
            rank_zero_info(f"genrec: domain {name!r} ({data.name}): {data.num_users:,} users, {data.num_items:,} items, "
                           f"{data.num_interactions:,} interactions")
            datas.append(data)
        self._data = combine(self.names, datas)
        first = np.cumsum([0] + [d.num_items for d in datas])
        self.item_ranges = {n: (int(first[i]) + 1, int(first[i + 1])) for i, n in enumerate(self.names)}
        user_first = np.cumsum([0] + [d.num_users for d in datas])
        self.user_ranges = {n: (int(user_first[i]), int(user_first[i + 1])) for i, n in enumerate(self.names)}
        self._split()
        return self._data

    @property
    def eval_domains(self) -> list[tuple[str, int, int]]:
        """``(name, first_id, last_id)`` of each evaluated domain, in the order of the eval loaders."""
        self._load()
        return [(n, *self.item_ranges[n]) for n in self.eval_names]

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        hp = self.hparams
        self.train_user_mask = self.training_users()
        if self.train_user_mask is not None:
            self.train_set.keep_users(self.train_user_mask)
        self.val_sets, self.test_sets = [], []
        for name in self.eval_names:
            lo, hi = self.user_ranges[name]
            mine = (self.eval_users >= lo) & (self.eval_users < hi)
            users, val_pos, test_pos = self.eval_users[mine], self.val_pos[mine], self.test_pos[mine]
            self.test_sets.append(EvalTargets(self.data, users, test_pos, hp.max_seq_len))
            cap = hp.val_users_per_domain
            if cap and len(users) > cap:  # a fixed sample, the same in every run of this data
                keep = np.sort(np.random.default_rng(0).choice(len(users), cap, replace=False))
                rank_zero_info(f"genrec: domain {name!r}: validating on {cap:,} of its {len(users):,} users "
                               "(data.val_users_per_domain); test covers all")
                users, val_pos = users[keep], val_pos[keep]
            self.val_sets.append(EvalTargets(self.data, users, val_pos, hp.max_seq_len))

    def training_users(self) -> np.ndarray | None:
        """A mask over the joint users marking those that train (None: all do); reports each domain's share."""
        if not self.user_fractions:
            return None
        chosen = np.ones(self.data.num_users, bool)
        for name, (fraction, seed) in self.user_fractions.items():
            lo, hi = self.user_ranges[name]
            chosen[lo:hi] = drawn_users(hi - lo, fraction, seed)
            rank_zero_info(f"genrec: domain {name!r}: training on {int(chosen[lo:hi].sum()):,} of its {hi - lo:,} users "
                           f"(train_user_fraction {fraction:g}, fraction_seed {seed}); validation and test cover all")
        return chosen

    def domain_of(self, users: np.ndarray) -> np.ndarray:
        """The domain index of each user."""
        return np.searchsorted([self.user_ranges[n][0] for n in self.names], users, side="right") - 1

    def train_sampler(self, dataset: TrainWindows) -> DomainBlockSampler:
        """Steps of one domain each, domains mixed by ``domain_balance`` (reported per domain)."""
        lc = self.loader_config
        domain = self.domain_of(dataset.users)
        lengths = dataset.ends - dataset.starts if lc.bucket_by_length else None
        sampler = DomainBlockSampler(dataset, domain, lc.batch_size, self.hparams.domain_balance, lengths,
                                     shards=lc.shards)
        per_step = lc.batch_size * sampler.num_replicas
        rank_zero_info("genrec: training windows per epoch (data.domain_balance=%g): " % self.hparams.domain_balance
                       + ", ".join(f"{n} {(domain == d).sum():,} -> {sampler.blocks.get(d, 0) * per_step:,}"
                                   for d, n in enumerate(self.names)))
        return sampler

    def val_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, train=False) for s in self.val_sets]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(s, train=False) for s in self.test_sets]


def combine(names: list[str], datas: list[SequenceData]) -> SequenceData:
    """Domains side by side in one id space (items and users of domain d after those of d-1)."""
    item_shift = np.cumsum([0] + [d.num_items for d in datas])
    offsets = [np.zeros(1, np.int64)]
    for d in datas:
        offsets.append(d.offsets[1:] + offsets[-1][-1])
    texts = [d.item_text for d in datas]
    if all(t is not None for t in texts):
        frames = [t.iloc[1:].assign(domain=n) for n, t in zip(names, texts)]
        item_text = pd.concat([pd.DataFrame(index=[0]), *frames], ignore_index=True)
        item_text = item_text.astype(object).where(item_text.notna(), "")
    else:
        item_text = None
        without = [n for n, t in zip(names, texts) if t is None]
        rank_zero_info(f"genrec: domains {without} have no item text, so the joint catalogue has none (ID models only)")
    counts: dict[str, int] = {}
    for n, d in zip(names, datas):
        for k, v in d.counts.items():
            counts[k] = counts.get(k, 0) + v
            counts[f"{n}:{k}"] = v
    return SequenceData(
        name="+".join(names),
        offsets=np.concatenate(offsets),
        items=np.concatenate([d.items + item_shift[i] for i, d in enumerate(datas)]),
        timestamps=np.concatenate([d.timestamps for d in datas]),
        user_ids=np.concatenate([np.array([f"{n}:{u}" for u in d.user_ids], dtype=object) for n, d in zip(names, datas)]),
        item_ids=np.concatenate([np.array([datas[0].item_ids[0]], dtype=object)]
                                + [np.array([f"{n}:{i}" for i in d.item_ids[1:]], dtype=object) for n, d in zip(names, datas)]),
        item_text=item_text,
        has_timestamps=all(d.has_timestamps for d in datas),
        counts=counts,
        fingerprint=hashlib.sha256("|".join(f"{n}={d.fingerprint}" for n, d in zip(names, datas)).encode()).hexdigest()[:16],
    )
