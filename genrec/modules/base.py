"""The base of genrec's Lightning modules: rebuilding one from its checkpoint alone, the identity
every checkpoint carries, and AdamW with its learning-rate schedule from one ``OptimConfig``."""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Iterable

import lightning as L
import torch

from genrec.modules.checkpoints import VERSION, VERSION_KEY, checkpoint_identity, load_checkpoint, migrate, with_configs
from genrec.modules.optim import OptimConfig, adamw


class GenrecModule(L.LightningModule):
    """A Lightning module with ``from_checkpoint`` and ``configure_optimizers`` from ``self.optim_config``.

    Subclasses adapt a checkpoint's arguments in ``init_args``, choose what trains in ``optimizer_params``
    and add to ``checkpoint["genrec"]`` with ``checkpoint_extras``.
    """

    optim_config: OptimConfig

    def save_config_hyperparameters(self, *groups: str) -> None:
        """``save_hyperparameters`` with the dataclass arguments ``groups`` as dicts (``self.<group>_config``)."""
        frame = inspect.currentframe().f_back
        args = frame.f_locals
        self.save_hyperparameters(ignore=[*groups, "net"], frame=frame)
        for group in groups:
            value = args[group]
            self.hparams[group] = dataclasses.asdict(value) if value is not None else None
            setattr(self, f"{group}_config", value)

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str | torch.device = "cpu", ckpt: dict | None = None):
        """Rebuild the module (and its net) from its checkpoint alone; ``ckpt``: its contents, already read."""
        ckpt = load_checkpoint(path, map_location) if ckpt is None else ckpt
        hp = cls.init_args(dict(ckpt["hyper_parameters"]), ckpt, str(path))
        module = cls(**with_configs(cls, {name: hp[name] for name in inspect.signature(cls.__init__).parameters if name in hp}))
        module.load_state_dict(ckpt["state_dict"])
        return module

    @classmethod
    def init_args(cls, hp: dict[str, Any], ckpt: dict, source: str) -> dict[str, Any]:
        """A checkpoint's hyper-parameters ``hp`` adapted to the constructor (``source`` names the file in errors)."""
        return hp

    def optimizer_params(self) -> Iterable[Any]:
        """What the optimizer updates: the trainable parameters (or parameter groups)."""
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        return adamw(self.optimizer_params(), self.optim_config, lambda: self.trainer.estimated_stepping_batches)

    def checkpoint_extras(self) -> dict[str, Any]:
        """What ``checkpoint["genrec"]`` holds besides the module's identity."""
        return {}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["genrec"] = {**checkpoint_identity(self), **self.checkpoint_extras()}
        checkpoint[VERSION_KEY] = VERSION

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming: the checkpoint in today's format (its learning-rate schedule included)."""
        migrate(checkpoint)
