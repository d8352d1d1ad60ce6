"""A SequenceDataModule whose training data carry an attack's fake users (after the real ones, in
training only: validation and test are the clean module's). The fakes are part of its ``state_dict``.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from genrec.data.datamodule import SequenceDataModule
from genrec.data.preprocess import SequenceData
from genrec.robust.attacks import AttackConfig, FakeProfiles, generate, inject

log = logging.getLogger(__name__)


class AttackedDataModule(SequenceDataModule):
    """``SequenceDataModule`` (``data_options``) plus ``attack`` options (``AttackConfig``), e.g.
    ``{"kind": "bandwagon", "seed": 1}``; None trains on clean data. ``is_fake`` labels every user."""

    def __init__(self, attack: dict[str, Any] | None = None, **data_options: Any):
        self.attack_config = AttackConfig.from_dict(attack) if attack is not None else None
        super().__init__(**data_options)
        self.save_data_hyperparameters()
        self.fakes: FakeProfiles | None = None

    def _split(self) -> None:
        super()._split()
        clean = self._data
        self.clean_data = clean
        self.num_real_users = clean.num_users
        if self.attack_config is not None:
            self.fakes = generate(clean, self.train_end, self.attack_config, self.hparams.max_seq_len)
            self._apply(self.fakes)
        else:
            self.is_fake = np.zeros(clean.num_users, bool)

    def _apply(self, fakes: FakeProfiles) -> None:
        clean = self.clean_data
        self._data, self.train_end = inject(clean, self.train_end[: clean.num_users], fakes)
        self.is_fake = np.arange(self._data.num_users) >= clean.num_users
        rank_zero_info(
            f"genrec: {fakes.config.kind} attack: {len(fakes)} fake users "
            f"({len(fakes) / clean.num_users:.2%} of {clean.num_users:,}), targets {fakes.targets.tolist()}"
        )

    @property
    def targets(self) -> np.ndarray:
        self._load()
        return self.fakes.targets if self.fakes is not None else np.zeros(0, np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"fakes": self.fakes.state() if self.fakes is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume with the saved fakes, even if regenerating them would give others (e.g. another torch build)."""
        saved = state.get("fakes")
        if saved is None:
            return
        self._load()
        fakes = FakeProfiles.from_state(saved)
        if self.fakes is None or fakes.state() != self.fakes.state():
            log.warning("genrec: the checkpoint's fake profiles differ from the regenerated ones; using the checkpoint's")
            self.fakes = fakes
            self._apply(fakes)
            if hasattr(self, "train_set"):
                self.setup("fit")

    def _load(self) -> SequenceData:
        # The parent returns the data it loaded, which on the first call is still the clean data.
        super()._load()
        return self._data
