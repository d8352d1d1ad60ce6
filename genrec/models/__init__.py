"""Sequence encoders: plain ``nn.Module``s mapping item embeddings to per-position user states.

Every encoder takes ``(x, timestamps, lengths, query_time=None)`` with ``x`` the raw item
embeddings ``(B, L, D)`` of right-padded sequences and ``query_time`` (B,) the time of the
interaction the last position predicts (None: unknown), and returns hidden states ``(B, L, D)``; the Lightning module owns the
item embedding table, the loss and the scoring.
"""
from genrec.models.hstu import HSTU, TimeBias
from genrec.models.sasrec import SASRec

__all__ = ["HSTU", "SASRec", "TimeBias"]
