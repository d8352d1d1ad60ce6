"""Full-catalogue ranking evaluation: streamed target ranks, top-k lists and ranking metrics."""
from genrec.evaluation.metrics import (
    RankingMetrics,
    popularity_vectors,
    ranks_from_topk,
    restrict_to_domain,
    target_ranks,
    topk_items,
)

__all__ = ["RankingMetrics", "popularity_vectors", "ranks_from_topk", "restrict_to_domain", "target_ranks", "topk_items"]
