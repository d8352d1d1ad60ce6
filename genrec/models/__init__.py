"""Sequence encoders: ``forward(x, timestamps, lengths, query_time=None)`` maps (B, L, D) item embeddings to states."""
from genrec.models.hstu import HSTU, TimeBias
from genrec.models.sasrec import SASRec

__all__ = ["HSTU", "SASRec", "TimeBias"]
