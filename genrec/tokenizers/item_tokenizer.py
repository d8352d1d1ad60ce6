"""Item tokenizer: a text embedding → T tokens from one shared FSQ codebook, as RecGPT builds them.

Each of T chunks of the embedding has its own MLP to FSQ and back (an autoencoder). Of items with the
same tokens, the first by id keeps them and each later one moves its last token to the nearest free code
(docs/generative.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from genrec.tokenizers.fsq import DEFAULT_LEVELS, FSQ
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


@dataclass
class TokenizedCatalogue:
    """Tokens of every item (row 0 = padding, all zeros) and what resolution changed."""

    codes: Tensor  # (N+1, T) long
    collisions: int  # items whose tokens were taken by an earlier item before resolution
    collided: Tensor | None = None  # (N+1,) bool: those items (row 0 False)

    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def collision_rate(self) -> float:
        return self.collisions / max(self.num_items, 1)


class ItemTokenizer(nn.Module):
    """Text embedding (…, E) → T FSQ codes per item; ``forward`` gives the reconstruction for training."""

    def __init__(self, embed_dim: int = 384, num_tokens: int = 4, levels: Sequence[int] = DEFAULT_LEVELS,
                 hidden_dim: int = 256, text_encoder: str = DEFAULT_ENCODER, text_template: str = DEFAULT_TEMPLATE):
        super().__init__()
        if num_tokens < 1 or embed_dim % num_tokens:
            raise ValueError(f"the text embedding ({embed_dim} dims) must split into num_tokens={num_tokens} equal chunks")
        self.init_args = {"embed_dim": embed_dim, "num_tokens": num_tokens, "levels": [int(v) for v in levels],
                          "hidden_dim": hidden_dim, "text_encoder": text_encoder, "text_template": text_template}
        self.embed_dim, self.num_tokens = embed_dim, num_tokens
        self.text_encoder, self.text_template = text_encoder, text_template
        self.fsq = FSQ(levels)
        chunk = embed_dim // num_tokens
        self.encoders = nn.ModuleList(_mlp(chunk, hidden_dim, self.fsq.dim) for _ in range(num_tokens))
        self.decoders = nn.ModuleList(_mlp(self.fsq.dim, hidden_dim, chunk) for _ in range(num_tokens))

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    def latents(self, x: Tensor) -> Tensor:
        """Unquantized per-token latents. (…, E) → (…, T, C)"""
        if x.shape[-1] != self.embed_dim:
            raise ValueError(f"the tokenizer expects {self.embed_dim}-d text embeddings, got {x.shape[-1]}-d: "
                             f"embed with the tokenizer's own encoder ({self.text_encoder!r})")
        chunks = x.float().chunk(self.num_tokens, dim=-1)
        return torch.stack([enc(c) for enc, c in zip(self.encoders, chunks)], dim=-2)

    def decode(self, values: Tensor) -> Tensor:
        """Quantized values (…, T, C) → reconstructed embedding (…, E)."""
        return torch.cat([dec(values[..., t, :]) for t, dec in enumerate(self.decoders)], dim=-1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction (…, E), quantized values (…, T, C)); gradients pass the rounding straight through."""
        values = self.fsq(self.latents(x))
        return self.decode(values), values

    @torch.no_grad()
    def tokenize(self, embeddings: Tensor, batch_size: int = 8192) -> TokenizedCatalogue:
        """Tokens of a catalogue's embeddings (N+1, E), row 0 = padding; collisions resolved."""
        bounded = torch.cat([self.fsq.bound(self.latents(embeddings[i:i + batch_size]))
                             for i in range(1, embeddings.shape[0], batch_size)])  # (N, T, C)
        scaled = bounded / self.fsq._half_width  # same scale as quantized code values
        codes = self.fsq.codes_to_indices(scaled)  # (N, T); rounding scaled values = rounding bounded ones
        resolved, collisions = resolve_collisions(codes.cpu().numpy(), scaled[:, -1].cpu().numpy(),
                                                  self.fsq.all_codes().cpu().numpy())
        full = torch.zeros(embeddings.shape[0], self.num_tokens, dtype=torch.long)
        full[1:] = torch.from_numpy(resolved)
        collided = torch.zeros(embeddings.shape[0], dtype=torch.bool)
        collided[1:] = torch.from_numpy((resolved != codes.cpu().numpy()).any(1))
        return TokenizedCatalogue(full, collisions, collided)


def resolve_collisions(codes: np.ndarray, last_latent: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, int]:
    """Make every row of ``codes`` (N, T) unique, a later duplicate taking as last token the free code of
    ``codebook`` (V, C) nearest its ``last_latent`` (N, C); also how many rows moved."""
    codes = codes.copy()
    _, first, counts = np.unique(codes, axis=0, return_index=True, return_counts=True)
    if (counts == 1).all():
        return codes, 0
    is_first = np.zeros(len(codes), bool)
    is_first[first] = True
    taken = {tuple(row) for row in codes[is_first]}
    movers = np.flatnonzero(~is_first)
    for i in movers:
        order = np.argsort(((codebook - last_latent[i]) ** 2).sum(1), kind="stable")
        prefix = tuple(codes[i, :-1])
        free = next((int(c) for c in order if prefix + (int(c),) not in taken), None)
        if free is None:
            raise ValueError(f"item row {i}: all {len(codebook)} completions of its token prefix are taken; "
                             "use more FSQ levels or more tokens per item")
        codes[i, -1] = free
        taken.add(prefix + (free,))
    return codes, len(movers)
