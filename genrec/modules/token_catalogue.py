"""The catalogue a generative model ranks (not saved): every item's tokens, text embedding and token trie.

The trie is over local indices: a code's position among the sorted codes used at its position (``slot_vocab``).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from genrec.decoding import CodeTrie
from genrec.tokenizers.item_tokenizer import ItemTokenizer, TokenizedCatalogue


class TokenCatalogue(nn.Module):
    """Token tables of one catalogue (empty until ``set``); ids 1..N, row 0 padding."""

    def __init__(self, num_tokens: int, embed_dim: int):
        super().__init__()
        self.register_buffer("codes", torch.zeros(0, num_tokens, dtype=torch.long), persistent=False)  # (N+1, T)
        self.register_buffer("local", torch.zeros(0, num_tokens, dtype=torch.long), persistent=False)  # (N+1, T)
        self.register_buffer("text", torch.zeros(0, embed_dim), persistent=False)  # (N+1, E)
        self.trie: CodeTrie | None = None  # over local code indices
        self.domain_tries: dict[tuple[int, int], CodeTrie] = {}
        self.domains: list[tuple[int, int]] = []  # (first_id, last_id) of each domain of the catalogue
        self.slot_vocab: list[Tensor] = []  # per token position, the sorted codes the catalogue uses
        self.key: str | None = None  # which catalogue this is (a data module's fingerprint)
        self.collision_rate = 0.0
        self.collided: Tensor | None = None  # (N+1,) bool: items whose tokens collision resolution changed

    def set(self, tokenizer: ItemTokenizer, embeddings: Tensor, key: str = "",
            domains: Sequence[tuple[int, int]] | None = None) -> TokenizedCatalogue:
        """Tokenize the catalogue of text embeddings (N+1, E) (``tokenizer`` on the CPU)."""
        device = self.text.device
        cat = tokenizer.tokenize(embeddings.float().cpu())
        codes = cat.codes  # (N+1, T) global code ids
        vocab = [codes[1:, t].unique() for t in range(codes.shape[1])]
        local = torch.stack([torch.searchsorted(v, codes[:, t].contiguous()) for t, v in enumerate(vocab)], 1)  # (N+1, T)
        self.codes, self.local, self.text = codes.to(device), local.to(device), embeddings.float().to(device)
        self.slot_vocab = [v.to(device) for v in vocab]
        self.trie = CodeTrie(local[1:]).to(device)
        self.domain_tries = {}
        self.domains = sorted(domains) if domains else []
        self.key, self.collision_rate, self.collided = key, cat.collision_rate, cat.collided
        return cat

    def domain_trie(self, domain: tuple[int, int] | None) -> tuple[CodeTrie, int]:
        """The trie of one domain's items (the whole catalogue's for None) and its first item id."""
        if domain is None:
            return self.trie, 1
        if domain not in self.domain_tries:
            lo, hi = domain
            self.domain_tries[domain] = CodeTrie(self.local[lo : hi + 1].cpu(), torch.arange(lo, hi + 1)).to(self.text.device)
        return self.domain_tries[domain], domain[0]

    def batch_domain(self, target_ids: Tensor) -> tuple[int, int] | None:
        """The ``(first_id, last_id)`` of the one domain all targets belong to; None with one domain or several."""
        if len(self.domains) < 2 or not len(target_ids):
            return None
        lo, hi = int(target_ids.min()), int(target_ids.max())
        return next(((a, b) for a, b in self.domains if a <= lo and hi <= b), None)

    def collision_rates(self, ranges: dict[str, tuple[int, int]]) -> dict[str, float]:
        """Share of each domain's items (``name -> (first_id, last_id)``) changed by collision resolution."""
        if self.collided is None:
            raise RuntimeError("no catalogue: call set_catalogue(...) first")
        return {name: float(self.collided[lo : hi + 1].float().mean()) for name, (lo, hi) in ranges.items()}
