"""A trained run as every evaluation command sees it: its checkpoint read once, its module and data module rebuilt."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genrec.data.datamodule import rebuild_options
from genrec.modules.checkpoints import (CheckpointMismatchError, import_path, load_checkpoint, module_class_path,
                                        resolve_checkpoint)
from genrec.modules.generative_module import GenerativeModule
from genrec.recommender import Recommender


@dataclass
class Run:
    """``path``: the checkpoint file; ``ckpt``: its contents; ``model``: the module rebuilt from it, in eval mode."""

    path: Path
    ckpt: dict
    model: Recommender

    @property
    def folder(self) -> Path:
        """The run folder (reports go there unless told otherwise)."""
        return self.path.resolve().parent.parent

    def check_catalogue(self, dm: Any) -> None:
        """Refuse ``dm`` unless the model was trained on its catalogue (a generative model ranks any)."""
        trained_on = self.model.hparams.get("dataset_fingerprint", "")
        if trained_on and trained_on != dm.fingerprint and not isinstance(self.model, GenerativeModule):
            raise CheckpointMismatchError(f"{self.path} was trained on catalogue {trained_on!r}, but these data give "
                                          f"{dm.fingerprint!r}: a retrieval model ranks only the catalogue it was trained on")

    def datamodule(self, overrides: dict[str, Any] | None = None) -> Any:
        """The data module the run was trained with, ``overrides`` (data options) applied."""
        hp = self.ckpt.get("datamodule_hyper_parameters")
        if hp is None:
            raise CheckpointMismatchError(f"{self.path} holds no data module settings; pass a checkpoint written by train.py")
        overrides = dict(overrides or {})
        # --data.class_path picks another data module; the settings it shares default to the trained ones
        cls = import_path(overrides.pop("class_path", None) or self.ckpt.get("genrec", {}).get("datamodule")
                          or "genrec.data.SequenceDataModule")
        return cls(**rebuild_options(cls, dict(hp), overrides))


def load_run(path: str | Path) -> Run:
    """The run of a checkpoint file, or of a run folder's best checkpoint (``resolve_checkpoint``)."""
    path = resolve_checkpoint(path)
    ckpt = load_checkpoint(path)
    module_cls = import_path(module_class_path(ckpt))
    return Run(path, ckpt, module_cls.from_checkpoint(str(path), ckpt=ckpt).eval())
