"""Item tokenizers: text embeddings (sentence-transformers, cached), FSQ, the T-token item tokenizer."""
from genrec.tokenizers.fsq import FSQ
from genrec.tokenizers.item_tokenizer import ItemTokenizer, TokenizedCatalogue, resolve_collisions
from genrec.tokenizers.text import DEFAULT_ENCODER, DEFAULT_TEMPLATE, embed_texts, render_texts

__all__ = ["FSQ", "ItemTokenizer", "TokenizedCatalogue", "resolve_collisions", "DEFAULT_ENCODER",
           "DEFAULT_TEMPLATE", "embed_texts", "render_texts"]
