"""Catalogue-aware decoding for text-tokenized models: a CSR trie and batched beam search."""
from genrec.decoding.beam import beam_search, constrained_beam_search
from genrec.decoding.trie import CodeTrie

__all__ = ["CodeTrie", "beam_search", "constrained_beam_search"]
