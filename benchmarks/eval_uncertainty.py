"""What the report's uncertainty and the recommendation writer cost on ML-1M (6,040 users, 3,706 items).

* bootstrap: 95% intervals (1,000 resamples, ``genrec.evaluation.uncertainty``) of all 8 metrics
  of the model and the popularity baseline, from ML-1M-sized per-user ranks (6,040 users), i.e. the
  work ``evaluate.py`` adds per report; and the breakdowns' per-group intervals on top;
* predict: ``evaluate.py recommend``'s path (``predict_step`` + ``RecommendationWriter``, Parquet)
  writing all 6,040 users' top-100 from their full histories, history excluded, with the
  ``configs/sasrec/ml-1m.yaml`` and ``configs/hstu/ml-1m.yaml`` nets (untrained unless ``--ckpt``:
  the cost does not depend on the weights). Data loading and preprocessing (cached) are not timed.

    python benchmarks/eval_uncertainty.py --data ../shared/data/ml-1m     # about a minute on 2 CPU cores

Targets (issue 21): bootstrap under 2 s, predict under 30 s on 2 cores.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from genrec.data import LoaderConfig, SequenceDataModule
from genrec.evaluation.breakdown import breakdown
from genrec.evaluation.uncertainty import Bootstrap, bootstrap_ci, per_user_metrics
from genrec.models import HSTU, SASRec
from genrec.modules import RetrievalModule
from genrec.prediction import RecommendationWriter

HR, NDCG = (1, 10, 50, 200), (10, 50, 200)
NETS = {
    "SASRec": lambda: SASRec(dim=50, num_blocks=2, num_heads=1, ffn_dim=50, dropout=0.2, attn_dropout=0.0, max_seq_len=200, norm="pre"),
    "HSTU": lambda: HSTU(dim=50, num_blocks=2, num_heads=1, attn_dim=50, linear_dim=50, dropout=0.2, max_seq_len=200),
}


def time_bootstrap(users: int, resamples: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    frame = pd.concat([pd.DataFrame({"scorer": s, "user": np.arange(users), "history": rng.integers(2, 2000, users),
                                     "target_train_count": rng.integers(0, 3000, users), "rank": r})
                       .assign(**per_user_metrics(r, HR, NDCG)) for s, r in
                       (("model", rng.geometric(0.02, users) - 1), ("popularity", rng.geometric(0.005, users) - 1))])
    boot = Bootstrap(resamples)
    start = time.perf_counter()
    for scorer in ("model", "popularity"):
        rows = frame[frame["scorer"] == scorer]
        bootstrap_ci({k: rows[k].to_numpy() for k in per_user_metrics(np.zeros(1), HR, NDCG)}, boot)
    report = time.perf_counter() - start
    start = time.perf_counter()
    breakdown(frame, "hr@10", boot)
    return report, time.perf_counter() - start


def time_predict(dm: SequenceDataModule, net: str, ckpt: str | None, k: int, out: Path) -> tuple[float, int]:
    torch.manual_seed(0)
    model = (RetrievalModule.from_checkpoint(ckpt) if ckpt else RetrievalModule(NETS[net](), num_items=dm.num_items)).eval()
    model.predict_k = k
    dm.set_predict_request("all")
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=[RecommendationWriter(str(out))])
    start = time.perf_counter()
    trainer.predict(model, datamodule=dm, return_predictions=False)
    seconds = time.perf_counter() - start
    return seconds, pd.read_parquet(out, columns=["user"])["user"].nunique()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ml-1m", help="ML-1M folder (official files)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ckpt", default=None, help="time this ML-1M retrieval checkpoint instead of the untrained nets")
    args = parser.parse_args()
    dm = SequenceDataModule(dataset="ml-1m", root=args.data, max_seq_len=200, loader=LoaderConfig(eval_batch_size=512))
    dm.setup("predict")
    users = dm.data.num_users
    rows = []
    report, groups = time_bootstrap(users, args.resamples)
    rows.append((f"bootstrap CIs, 2 scorers x 8 metrics, {args.resamples:,} resamples", f"{users:,} users", report, "< 2 s"))
    rows.append((f"breakdown CIs, 12 groups x 2 scorers, {args.resamples:,} resamples", f"{users:,} users", groups, ""))
    with tempfile.TemporaryDirectory() as tmp:
        for net in ["checkpoint"] if args.ckpt else list(NETS):
            seconds, written = time_predict(dm, net, args.ckpt, args.k, Path(tmp) / f"{net}.parquet")
            rows.append((f"predict top-{args.k}, full histories, {net}, Parquet", f"{written:,} users", seconds, "< 30 s"))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| what | size | seconds | target |")
    print("|---|---|---:|---|")
    for what, size, seconds, target in rows:
        print(f"| {what} | {size} | {seconds:.2f} | {target} |")


if __name__ == "__main__":
    main()
