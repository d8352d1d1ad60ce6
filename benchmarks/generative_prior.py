"""How much a generative checkpoint adds to its text prior, on any catalogue (in-domain or zero-shot).

Decodes the validation and test splits of ``--root`` twice with the same checkpoint: the full
model, and the model with its learned token logits zeroed, which leaves the prior alone (with
the plain prior its beam decodes the text baseline's ranking; ``prior.popularity`` adds its
learned popularity term, on the catalogue trained on only). The difference is what the decoder learned
beyond text similarity on that catalogue; on a catalogue it never saw, what carried over.

    python benchmarks/generative_prior.py --ckpt runs/generative-scientific/version_0/checkpoints/<best>.ckpt \\
        --root ../shared/data/amazon-office
"""
from __future__ import annotations

import argparse

import torch

from genrec.data import LoaderConfig, SequenceDataModule
from genrec.evaluation.runner import evaluate_recommender
from genrec.metrics import RankingMetrics
from genrec.modules import GenerativeModule
from genrec.modules.checkpoints import resolve_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a GenerativeModule checkpoint trained with model.prior, or its run folder (best checkpoint)")
    parser.add_argument("--root", required=True, help="folder of a plain dataset with item text (interactions.csv, items.jsonl)")
    parser.add_argument("--dataset", default="plain")
    parser.add_argument("--max-seq-len", type=int, default=10)
    parser.add_argument("--beam", type=int, default=None, help="beam width (default: the checkpoint's)")
    args = parser.parse_args()

    dm = SequenceDataModule(dataset=args.dataset, root=args.root, max_seq_len=args.max_seq_len, exclude="history",
                            loader=LoaderConfig(eval_batch_size=256))
    dm.setup("test")
    rows = []
    for variant in ("full model", "prior alone"):
        module = GenerativeModule.from_checkpoint(str(resolve_checkpoint(args.ckpt))).eval()
        if module.prior is None:
            raise SystemExit(f"{args.ckpt} was trained without model.prior: there is no prior to compare against")
        if args.beam:
            module.hparams.beam_width = args.beam
        module.set_catalogue_from(dm)
        if variant == "prior alone":
            with torch.no_grad():
                module.net.heads.zero_()  # every learned token logit becomes 0
        for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
            metrics = evaluate_recommender(module, loader, RankingMetrics((1, 5, 10), (5, 10), mrr=False, max_rank=10))
            rows.append((variant, split, {k: float(v) for k, v in metrics.items()}))
    keys = list(rows[0][2])
    learned = {"λ": module.prior.scale, "γ": module.prior.hubness_scale, "β": module.prior.popularity_scale}
    terms = ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in learned.items() if v is not None)
    print(f"checkpoint {args.ckpt}; catalogue {args.root} ({dm.data.num_items:,} items); "
          f"prior {terms}; beam {module.hparams.beam_width}\n")
    print("| variant | split | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for variant, split, m in rows:
        print(f"| {variant} | {split} | " + " | ".join(f"{m[k]:.4f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
