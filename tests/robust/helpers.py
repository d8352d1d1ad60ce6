"""A tiny deterministic text encoder, so callback tests need no language model."""
import hashlib

import numpy as np

from genrec.robust.encoders import UserEncoder


class HashingEncoder(UserEncoder):
    """Bag of hashed words, L2-normalised; similar texts get similar vectors."""

    dim = 32

    @property
    def name(self) -> str:
        return "hashing"

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, text in enumerate(texts):
            for word in text.lower().split():
                out[r, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)

    def num_tokens(self, texts):
        return [len(t.split()) for t in texts]
