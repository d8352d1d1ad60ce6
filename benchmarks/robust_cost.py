"""Where a defended run's extra wall time goes: each part of one ``FraudsterReweighting`` setup and
update, timed on ML-1M with the options of ``configs/robust/defence.yaml``.

    OMP_NUM_THREADS=2 python benchmarks/robust_cost.py --root ../shared/data/ml-1m [--backbone hstu] [--attack copy] [--repeats 2]

The data module and the recommender are built from ``configs/robust/<backbone>-ml-1m.yaml``
(1% fakes of ``--attack``); the recommender is untrained, which changes nothing in what the parts
cost. The setup parts run once per fit, the update parts at every scheduled epoch; the update is
run ``--repeats`` times, so the later ones show the warm-started calibrator (``warm_epochs``). For
reference, one undefended training epoch of the same module is timed in the same process (the
ratio of the two is what a shared machine's load changes least). Prints a Markdown table (wall
seconds per part, the median over repeats).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def build(root: str, attack: str | None, backbone: str):
    import importlib

    from genrec.data import LoaderConfig
    from genrec.modules import RetrievalModule
    from genrec.robust import AttackedDataModule

    base = yaml.safe_load((ROOT / f"configs/robust/{backbone}-ml-1m.yaml").read_text())
    data = {**base["data"]["init_args"], "root": root, "attack": {"kind": attack, "seed": 1} if attack else None}
    data["loader"] = LoaderConfig(**data.get("loader", {}))
    dm = AttackedDataModule(**data)
    dm.setup("fit")
    model = base["model"]["init_args"]
    module_name, cls = model["net"]["class_path"].rsplit(".", 1)
    net = getattr(importlib.import_module(module_name), cls)(**model["net"]["init_args"])
    # as LightningCLI does: a config's group keys override the module's default group
    defaults = inspect.signature(RetrievalModule.__init__).parameters
    options = {k: dataclasses.replace(defaults[k].default, **v) if k in ("loss", "optim") else v
               for k, v in model.items() if k != "net"}
    module = RetrievalModule(net, num_items=dm.data.num_items, **options)
    return dm, module


def defence_callback(cache_dir: str):
    from jsonargparse import ArgumentParser

    from genrec.robust import FraudsterReweighting

    spec = next(c for c in yaml.safe_load((ROOT / "configs/robust/defence.yaml").read_text())["trainer"]["callbacks"]
                if c["class_path"].endswith("FraudsterReweighting"))
    parser = ArgumentParser()
    parser.add_argument("--cb", type=FraudsterReweighting)
    cb = parser.instantiate(parser.parse_object({"cb": spec})).cb
    cb.cache_dir = cache_dir
    return cb


def training_epoch(dm, module) -> float:
    import lightning as L

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    return time.perf_counter() - start


class Stub:
    """What the callback reads from a Trainer, outside one."""

    def __init__(self, dm, epoch: int):
        self.datamodule, self.current_epoch, self.is_global_zero = dm, epoch, True
        self.loggers, self.log_dir, self.global_step = [], None, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="../shared/data/ml-1m")
    parser.add_argument("--backbone", default="sasrec", help="configs/robust/<backbone>-ml-1m.yaml (sasrec, hstu)")
    parser.add_argument("--attack", default="copy", help="attack kind of the data (default copy; 'none': clean)")
    parser.add_argument("--repeats", type=int, default=2, help="updates to time (the first is cold, later ones warm)")
    args = parser.parse_args()
    torch.manual_seed(0)
    dm, module = build(args.root, None if args.attack == "none" else args.attack, args.backbone)
    times: dict[str, list[float]] = defaultdict(list)
    times["reference: one undefended training epoch"].append(training_epoch(dm, module))
    with tempfile.TemporaryDirectory() as cache:
        cb = defence_callback(cache)
        cb.timings = times
        stub = Stub(dm, cb.update.start_epoch)
        t = time.perf_counter()
        cb.setup(stub, module, "fit")
        times["setup: known-attack simulation"].append(time.perf_counter() - t)
        cb.w = torch.zeros(dm.data.num_users)
        cb._prepare(stub, dm)  # cold: fills the LM cache
        cb._known = cb._prepare(stub, dm)  # later: a run that finds the cache
        for r in range(args.repeats):
            stub.current_epoch = cb.update.start_epoch + r * cb.update.every
            t = time.perf_counter()
            state = cb._update(stub, module)
            times["update: total"].append(time.perf_counter() - t)
            cb.calibrator_state, cb.updates = state["calibrator"], state["updates"]
    print(f"\n{args.backbone}, {dm.data.name}: {dm.data.num_users:,} users, attack {args.attack}, {torch.get_num_threads()} threads, "
          f"update every {cb.update.every} epochs from epoch {cb.update.start_epoch}\n")
    print("| part | s (first) | s (later, median) |")
    print("|---|---|---|")
    for name, v in times.items():
        later = f"{statistics.median(v[1:]):.2f}" if len(v) > 1 else "–"
        print(f"| {name} | {v[0]:.2f} | {later} |")


if __name__ == "__main__":
    main()
