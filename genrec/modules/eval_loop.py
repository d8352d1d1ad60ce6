"""The validation/test loop shared by the genrec modules: ``rank_targets(batch, metrics, domain)`` over one
domain, or over each of the data module's ``eval_domains`` (logged as ``val/<name>/hr@10``; ``val/hr@10`` pools).
"""
from __future__ import annotations

from torch import Tensor, nn

from genrec.metrics import RankingMetrics


class DomainEvalLoop:
    """Mixin for LightningModules that define ``val_metrics``/``test_metrics``, ``rank_targets`` and
    ``recommend(batch, k, exclude)``."""

    predict_k: int = 10  # list length of predict_step (evaluate.py recommend --k sets it)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"user": (B,), "items": (B, k), "scores": (B, k)}``, best first."""
        items, scores = self.recommend(batch, self.predict_k, batch.get("exclude"))
        return {"user": batch["user"], "items": items, "scores": scores}

    def _eval_domains(self) -> list[tuple[str, int, int]]:
        trainer = getattr(self, "_trainer", None)
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        return list(getattr(dm, "eval_domains", None) or [])

    def _domain_metrics(self, split: str, name: str) -> RankingMetrics:
        if not hasattr(self, "_per_domain"):
            self._per_domain = nn.ModuleDict()
        key = f"{split}__{name}"
        if key not in self._per_domain:
            pooled: RankingMetrics = getattr(self, f"{split}_metrics")
            self._per_domain[key] = RankingMetrics(pooled.hr_ks, pooled.ndcg_ks, pooled.mrr, pooled.max_rank).to(self.device)
        return self._per_domain[key]

    def _run_eval(self, split: str, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        pooled: RankingMetrics = getattr(self, f"{split}_metrics")
        domains = self._eval_domains()
        if not domains:
            self.rank_targets(batch, pooled)
            return
        name, lo, hi = domains[dataloader_idx]
        ranks = self.rank_targets(batch, self._domain_metrics(split, name), (lo, hi))
        pooled.update(ranks)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._run_eval("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._run_eval("test", batch, dataloader_idx)

    def _log_split(self, split: str) -> dict[str, Tensor]:
        pooled: RankingMetrics = getattr(self, f"{split}_metrics")
        values = {f"{split}/{k}": v.float() for k, v in pooled.compute().items()}
        pooled.reset()
        for name, _, _ in self._eval_domains():
            metrics = self._domain_metrics(split, name)
            values.update({f"{split}/{name}/{k}": v.float() for k, v in metrics.compute().items()})
            metrics.reset()
        self.log_dict(values, add_dataloader_idx=False)
        return values

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")
