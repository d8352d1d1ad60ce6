"""Calibrator inputs: which of the recommender's views carry over from the known attack to another.

    python benchmarks/robust_calibrator.py --ckpt runs/robust-suite/sasrec/bandwagon/version_0/checkpoints/final.ckpt

Reads a recommender trained on attacked data (its checkpoint names the attack: kind, seed, fake
profiles), and does what ``FraudsterReweighting`` does at one update: simulates the known attack
(random, 1%, its own targets, seed 1000), reads the recommender's sequence features of every training
user and of the simulated fakes, trains a calibrator per input variant on them, and scores the
training users against the true fake labels (ROC-AUC). Variants: ``full`` (recommender states +
per-position fit + LM embedding in the classifier), ``fit+lm`` (no states), ``fit+align`` (no
states; the LM embedding only as the alignment target); then the untrained anomaly scores
(``genrec.robust.signals.AnomalySignal``: each statistic alone, the sum with the whole-history
log count only, and the sum with the most anomalous log-count window, ``--windows``) and what
``FraudsterReweighting`` with that signal ranks by, the larger of the ``full`` calibrator's and the
anomaly score's percentiles. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {"full": {}, "fit+lm": {"states": False}, "fit+align": {"states": False, "lm_in_head": False}}


def main() -> None:
    import numpy as np
    import torch

    from genrec.modules import RetrievalModule
    from genrec.modules.checkpoints import load_checkpoint
    from genrec.robust import AttackConfig, AttackedDataModule
    from genrec.robust.attacks import generate, train_counts
    from genrec.robust.calibrator import Calibrator, CalibratorConfig, SequenceFeatures, sequence_features
    from genrec.robust.detector import detection_metrics, max_percentiles, percentiles
    from genrec.robust.encoders import build_encoder
    from genrec.robust.report import saved_state
    from genrec.robust.signals import AnomalySignal, UserView, anomaly_scores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a checkpoint trained with genrec.robust.AttackedDataModule")
    p.add_argument("--root", default=None, help="data folder (default: the one the checkpoint names)")
    p.add_argument("--epochs", type=int, default=10, help="calibrator epochs")
    p.add_argument("--cache-dir", default="runs/robust/lm_cache")
    p.add_argument("--negatives-per-epoch", type=int, nargs="*", default=[],
                   help="also the full calibrator drawing this many real users per epoch (CalibratorConfig.negatives_per_epoch)")
    p.add_argument("--flag-fraction", type=float, default=0.05, help="the top fraction whose recall is reported")
    p.add_argument("--windows", type=int, nargs="*", default=[10, 50],
                   help="log-count windows of the anomaly score (AnomalySignal.windows)")
    args = p.parse_args()

    ckpt = load_checkpoint(args.ckpt)
    fakes_state = (saved_state(ckpt, "AttackedDataModule") or {}).get("fakes")
    if fakes_state is None:
        raise SystemExit(f"{args.ckpt} holds no attack: pass a checkpoint trained on attacked data")
    hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    dm = AttackedDataModule(dataset=hp["dataset"], root=args.root or hp.get("root"), max_seq_len=hp["max_seq_len"],
                            dataset_options=hp.get("dataset_options"), attack=fakes_state["config"])
    dm.load_state_dict({"fakes": fakes_state})
    data, L = dm.data, hp["max_seq_len"]
    model = RetrievalModule.from_checkpoint(args.ckpt).eval()
    known = generate(data, dm.train_end, AttackConfig(kind="random", seed=1000, avoid_targets=dm.targets.tolist()), L)
    encoder = build_encoder({"kind": "sentence-transformers", "mode": "items", "cache_dir": args.cache_dir})
    spans = list(zip(data.offsets[:-1], dm.train_end))
    histories, stamps = [data.items[s:e] for s, e in spans], [data.timestamps[s:e] for s, e in spans]
    counts = train_counts(data, dm.train_end)
    windows = tuple(args.windows)
    users = sequence_features(model, histories, stamps, encoder.users(histories, data.item_text), L)
    fakes = sequence_features(model, known.sequences, known.timestamps, encoder.users(known.sequences, data.item_text), L)
    labels = torch.cat([torch.zeros(len(users)), torch.ones(len(fakes))])
    print(f"\nCalibrator trained on a simulated random attack, scored on {fakes_state['config']['kind']} fakes "
          f"({int(dm.is_fake.sum())} among {len(dm.is_fake):,} users), {args.ckpt}\n")
    def cells(score) -> str:  # ROC-AUC | recall of the top flag_fraction, counted as the callback's logs count it
        m = detection_metrics(percentiles(torch.as_tensor(np.asarray(score))).numpy(), dm.is_fake, 1 - args.flag_fraction)
        return f"{m['auc']:.3f} | {m['recall']:.2f}"

    print(f"| inputs | ROC-AUC | recall of the top {args.flag_fraction:.0%} |")
    print("|---|---|---|")
    scores, seconds = {}, {}
    variants = {**VARIANTS, **{f"full, {n} real users per epoch": {"negatives_per_epoch": n} for n in args.negatives_per_epoch}}
    for name, options in variants.items():
        cal = Calibrator(users.states.shape[-1], users.lm.shape[-1], L, CalibratorConfig(epochs=args.epochs, **options))
        start = time.perf_counter()
        cal.fit(SequenceFeatures.cat([users, fakes]), labels)
        seconds[name] = time.perf_counter() - start
        scores[name] = cal.predict(users)
        print(f"| {name} ({seconds[name]:.0f} s training) | {cells(scores[name])} |", flush=True)
    fake = torch.as_tensor(dm.is_fake)
    signal = AnomalySignal(windows)
    view = UserView(histories, stamps, users.mean_fit, counts, len(histories))
    stats = signal.statistics(view)
    names = ("mean_fit", "mean_log_count", *(f"mean_log_count_last{w}" for w in windows))
    for i, stat in enumerate(names):
        alone = anomaly_scores(stats[:, i : i + 1], stats[:, i : i + 1])
        print(f"| anomaly: {stat} alone (untrained; mean of fakes {stats[fake, i].mean():.3f}, "
              f"real users {stats[~fake, i].mean():.3f}) | {cells(alone)} |")
    whole = anomaly_scores(stats[:, :2], stats[:, :2])
    print(f"| anomaly: sum, whole-history log count (untrained) | {cells(whole)} |")
    anomaly = signal.score(view)
    print(f"| anomaly: fit + most anomalous log-count window (untrained; what the callback uses) | {cells(anomaly)} |")
    for name in scores:
        if name.startswith("full"):
            print(f"| max percentile of {name} and anomaly | {cells(max_percentiles(scores[name], anomaly))} |")


if __name__ == "__main__":
    main()
