"""The calibrator on a draw of real users per epoch (``CalibratorConfig.negatives_per_epoch``):
what the first weight update's detection keeps, and what its training costs.

    OMP_NUM_THREADS=2 python benchmarks/robust_negatives.py --backbone hstu --negatives 1000 500

Per attack (ML-1M, 1% fakes, seed 1, the project's own generators; the fakes' labels of the
training data, no test target): the recommender of ``configs/robust/<backbone>-ml-1m.yaml`` is
trained up to the first update's epoch (``update.start_epoch`` of ``configs/robust/defence.yaml``),
then that update is run as ``FraudsterReweighting`` runs it, once per variant (all real users,
then each ``--negatives``), from the same recommender. Prints a Markdown table: the calibrated
score's and the update's ROC-AUC against the true fakes, and the calibrator's training seconds.
"""
from __future__ import annotations

import argparse
import tempfile

import lightning as L
import torch

from robust_cost import Stub, build, defence_callback


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="../shared/data/ml-1m")
    p.add_argument("--backbone", default="hstu")
    p.add_argument("--attacks", nargs="+", default=["bandwagon", "segment", "copy", "random", "model"])
    p.add_argument("--negatives", type=int, nargs="+", default=[1000])
    p.add_argument("--cache-dir", default=None, help="LM-embedding cache (default: the defence's own)")
    args = p.parse_args()
    print("| attack | real users per epoch | calibrated AUC | update AUC | calibrator training s |")
    print("|---|---|---|---|---|", flush=True)
    for attack in args.attacks:
        torch.manual_seed(0)
        dm, module = build(args.root, attack, args.backbone)
        cb = defence_callback(args.cache_dir)
        epochs = cb.update.start_epoch
        L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, limit_val_batches=0).fit(module, datamodule=dm)
        for negatives in [None, *args.negatives]:
            cb = defence_callback(args.cache_dir)
            cb.calibrator_config.negatives_per_epoch = negatives
            stub = Stub(dm, epochs)
            cb.setup(stub, module, "fit")
            cb.w = torch.zeros(dm.data.num_users)
            cb._known = cb._prepare(stub, dm)
            entry = cb._update(stub, module)["history"][-1]
            train_s = cb.timings["update: calibrator training"][-1]
            print(f"| {attack} | {negatives or 'all'} | {entry['auc']:.3f} | {entry['update_auc']:.3f} | {train_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
