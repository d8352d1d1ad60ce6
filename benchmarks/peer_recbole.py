"""genrec's SASRec against RecBole's SASRec on ML-1M, side by side in one run.

Both use the HSTU paper's SASRec settings (length 200, d 50, 2 blocks, 1 head, dropout 0.2,
lr 1e-3, batch 128, leave-one-out, full ranking). RecBole runs through
``../shared/tools/peer_recbole.sh`` capped at ``--peer-batches`` batches per epoch (its epoch time
is extrapolated from them: it turns every prefix into a sample, ~7,673 batches a full epoch);
genrec trains full epochs. Each side runs in its own process so peak memory is its own.
Prints seconds per training epoch, seconds per full evaluation, peak RSS and the ratios.

    python benchmarks/peer_recbole.py --peer-batches 40 --epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PEER = REPO.parent / "shared" / "tools" / "peer_recbole.sh"
ML1M = REPO.parent / "shared" / "data" / "ml-1m"


def ours(epochs: int, negatives: str, bucket: bool) -> dict:
    """Child process: train genrec SASRec for ``epochs`` full epochs, time each epoch and evaluation."""
    import torch

    from genrec.data import LoaderConfig, SequenceDataModule
    from genrec.metrics import RankingMetrics
    from genrec.evaluation.runner import evaluate_recommender
    from genrec.models import SASRec
    from genrec.modules import RetrievalModule
    from genrec.modules.negatives import LossConfig

    torch.manual_seed(42)
    dm = SequenceDataModule(dataset="ml-1m", root=str(ML1M), max_seq_len=200,
                            loader=LoaderConfig(batch_size=128, eval_batch_size=512, bucket_by_length=bucket))
    dm.setup("fit")
    model = RetrievalModule(SASRec(dim=50, num_blocks=2, num_heads=1, ffn_dim=50, dropout=0.2, max_seq_len=200),
                            num_items=dm.num_items, loss=LossConfig(negatives=negatives))
    model.log = lambda *args, **kwargs: None
    opt = model.configure_optimizers()
    train_s, eval_s = [], []
    for epoch in range(epochs):
        model.train()
        loader = dm.train_dataloader()
        if hasattr(loader.batch_sampler, "set_epoch"):
            loader.batch_sampler.set_epoch(epoch)
        start = time.perf_counter()
        for batch in loader:
            loss = model.training_step(batch, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_s.append(time.perf_counter() - start)
        model.eval()
        start = time.perf_counter()
        metrics = evaluate_recommender(model, dm.val_dataloader(), RankingMetrics((10,), (10,)))
        eval_s.append(time.perf_counter() - start)
    return {"epoch_s": statistics.median(train_s), "eval_s": statistics.median(eval_s), "val": metrics,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "threads": torch.get_num_threads()}


def peer(batches: int) -> dict:
    env = {**os.environ, "PEER_RECBOLE_MAX_BATCHES": str(batches)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(["bash", str(PEER), "1"], env=env, capture_output=True, text=True, check=True).stdout
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    line = [l for l in out.splitlines() if l.startswith("recbole_sasrec_ml1m")][-1]
    fields = dict(re.findall(r"(\w+)=([\d./]+)", line))
    return {"epoch_s": float(fields["epoch_s"]), "eval_s": float(fields["eval_s"]),
            "peak_rss_gb": max(peak, before) / 2**20, "line": line}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2, help="genrec epochs (median reported)")
    p.add_argument("--peer-batches", type=int, default=40, help="RecBole batches timed per epoch")
    p.add_argument("--negatives", default="sequence")
    p.add_argument("--no-bucket", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(ours(args.epochs, args.negatives, not args.no_bucket)))
        return
    cmd = [sys.executable, __file__, "--child", "--epochs", str(args.epochs), "--negatives", args.negatives]
    cmd += ["--no-bucket"] if args.no_bucket else []
    g = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    r = peer(args.peer_batches)
    print(f"RecBole: {r['line']}")
    print(f"genrec val (after {args.epochs} epochs, negatives={args.negatives}): {g['val']}")
    print("| | genrec SASRec | RecBole SASRec | ratio (goal) |")
    print("|---|---|---|---|")
    print(f"| s / training epoch | {g['epoch_s']:.1f} | {r['epoch_s']:.1f} (from {args.peer_batches} batches) | {g['epoch_s'] / r['epoch_s']:.4f} (≤ 0.01) |")
    print(f"| s / full evaluation | {g['eval_s']:.2f} | {r['eval_s']:.2f} | {g['eval_s'] / r['eval_s']:.3f} (≤ 0.1) |")
    print(f"| peak memory GB | {g['peak_rss_gb']:.2f} | {r['peak_rss_gb']:.2f} | {g['peak_rss_gb'] / r['peak_rss_gb']:.3f} (≤ 0.2) |")


if __name__ == "__main__":
    main()
