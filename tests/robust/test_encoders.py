import numpy as np
import pandas as pd
import pytest
import torch

from genrec.robust.encoders import CausalLMEncoder, SentenceTransformerEncoder, build_encoder
from tests.robust.helpers import HashingEncoder

TEXT = pd.DataFrame({"title": ["", "Toy Story (1995)", "Heat (1995)", "Alien (1979)", "Fargo (1996)"],
                     "genres": ["", "Animation", "Action", "Horror", "Crime"]})


def test_items_mode_is_the_mean_of_item_embeddings():
    enc = HashingEncoder()
    users = enc.users([np.array([1, 2]), np.array([3])], TEXT)
    table = enc.encode(enc.item_texts(TEXT))
    np.testing.assert_allclose(users[0], table[[1, 2]].mean(0), atol=1e-6)
    np.testing.assert_allclose(users[1], table[3], atol=1e-6)


def test_prompt_mode_chunks_long_histories_within_the_token_limit():
    seen = []

    class Spy(HashingEncoder):
        def encode(self, texts):
            seen.extend(texts)
            return super().encode(texts)

    enc = Spy(mode="prompt", max_tokens=30, domain="movies")
    long = np.array([1, 2, 3, 4] * 5)
    users = enc.users([long, np.array([2])], TEXT)
    chunks = seen[:-1]
    assert len(chunks) > 2 and all(n <= 30 for n in enc.num_tokens(chunks))
    assert all(c.startswith("In movies, a user's interaction sequence is as follows:") for c in seen)
    assert sum(c.count("(Item title:") for c in chunks) == len(long)  # every item in exactly one chunk
    np.testing.assert_allclose(users[1], enc.encode([enc._prompt(enc.item_texts(TEXT), np.array([2]))])[0], atol=1e-6)


def test_cache_reuses_embeddings(tmp_path):
    calls = []

    class Counting(HashingEncoder):
        def encode(self, texts):
            calls.append(len(texts))
            return super().encode(texts)

    a = Counting(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT)
    b = Counting(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT)
    np.testing.assert_array_equal(a, b)
    assert len(calls) == 1
    Counting(cache_dir=str(tmp_path), item_template="{title} / {genres}").users([np.array([1])], TEXT)
    assert len(calls) == 2  # another template is another key


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="item_template uses \\['year'\\]"):
        HashingEncoder(item_template="{year}").users([np.array([1])], TEXT)
    with pytest.raises(ValueError, match="encoder kind"):
        build_encoder({"kind": "word2vec"})
    with pytest.raises(ValueError, match="prompt_template must contain"):
        HashingEncoder(prompt_template="no slot")


@pytest.fixture(scope="module")
def minilm():
    return SentenceTransformerEncoder(mode="prompt")


def test_minilm_prompts_respect_its_256_word_piece_limit(minilm):
    assert minilm.max_tokens == 256
    many = pd.DataFrame({"title": [""] + [f"A Rather Long Movie Title Number {i} (1990)" for i in range(60)]})
    seen = []
    original = minilm.encode
    minilm.encode = lambda texts: (seen.extend(texts), original(texts))[1]
    try:
        vec = minilm.users([np.arange(1, 61)], many)
    finally:
        minilm.encode = original
    assert vec.shape == (1, 384) and len(seen) >= 3
    assert max(minilm.num_tokens(seen)) + 2 <= 256  # + [CLS] and [SEP]


def tiny_causal_lm(folder, seed=0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = sorted({w for t in TEXT["title"] for w in t.split()} | {"(Item", "title:", "<unk>", "<pad>"})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=64, n_embd=16, n_layer=2, n_head=2)).save_pretrained(folder)
    return str(folder)


def test_causal_lm_mean_pooling_ignores_padding(tmp_path):
    enc = CausalLMEncoder(model=tiny_causal_lm(tmp_path / "lm"), batch_size=2)
    texts = enc.item_texts(TEXT)[1:]
    together = enc.encode(texts)
    alone = np.concatenate([enc.encode([t]) for t in texts])
    assert together.shape == (4, 16)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    users = enc.users([np.array([1, 3])], TEXT)
    np.testing.assert_allclose(users[0], alone[[0, 2]].mean(0), atol=1e-5)


def test_item_texts_render_missing_values_empty_and_refuse_a_catalogue_without_text():
    from genrec.errors import DataError

    enc = HashingEncoder()
    assert enc.item_texts(TEXT.assign(title=["", "Heat", None, "Alien", "Fargo"]))[2] == "(Item title: )"  # not "nan"
    with pytest.raises(DataError, match=r"\['title'\] are empty for every one of the 4 items"):
        enc.item_texts(TEXT.assign(title=["", "", None, " ", ""]))


def test_a_damaged_embedding_cache_is_encoded_again_with_a_warning_naming_the_file(tmp_path, caplog):
    calls = []

    class Counting(HashingEncoder):
        def encode(self, texts):
            calls.append(len(texts))
            return super().encode(texts)

    good = Counting(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT)
    (path,) = tmp_path.glob("*.npy")
    blob = bytearray(path.read_bytes())
    row = Counting().encode(Counting().item_texts(TEXT))[1].tobytes()
    at = bytes(blob).index(row)
    blob[at : at + len(row)] = bytes(len(row))  # item 1's vector zeroed in place: same size
    path.write_bytes(bytes(blob))
    calls.clear()
    with caplog.at_level("WARNING", logger="genrec.robust.encoders"):
        again = Counting(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT)
    np.testing.assert_array_equal(again, good)
    assert calls == [len(TEXT)] and str(path) in caplog.text
    path.write_bytes(path.read_bytes()[:50])  # cut short
    with caplog.at_level("WARNING", logger="genrec.robust.encoders"):
        np.testing.assert_array_equal(Counting(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT), good)
    assert len(calls) == 2 and caplog.text.count(str(path)) == 2


def test_two_models_saved_under_the_same_folder_name_do_not_share_cached_embeddings(tmp_path):
    first = CausalLMEncoder(model=tiny_causal_lm(tmp_path / "a" / "lm", seed=0), cache_dir=str(tmp_path / "cache"))
    other = CausalLMEncoder(model=tiny_causal_lm(tmp_path / "b" / "lm", seed=1), cache_dir=str(tmp_path / "cache"))
    first.users([np.array([1, 2])], TEXT)
    np.testing.assert_allclose(other.users([np.array([1, 2])], TEXT)[0],
                               other.encode(other.item_texts(TEXT))[[1, 2]].mean(0), atol=1e-6)


def test_a_cache_hit_never_loads_the_sentence_transformer(tmp_path, monkeypatch):
    """A run whose embeddings are cached neither imports nor loads the model; its token limit comes
    from the model folder's config."""
    import sentence_transformers

    want = SentenceTransformerEncoder(cache_dir=str(tmp_path)).users([np.array([1, 2])], TEXT)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although every embedding is cached")

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", refuse)
    again = SentenceTransformerEncoder(cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.users([np.array([1, 2])], TEXT), want)
    assert again.max_tokens == 256
    with pytest.raises(AssertionError, match="cached"):
        again.users([np.array([1, 2])], TEXT.assign(title=TEXT["title"] + " (director's cut)"))
