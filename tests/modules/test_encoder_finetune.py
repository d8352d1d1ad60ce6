"""EncoderFinetune: a sentence-transformers encoder fine-tuned on training pairs, through train.py."""
import json

import numpy as np
import pytest
import torch

from genrec.cli import main as train_main
from genrec.data import LoaderConfig
from genrec.data.pairs import PairConfig, PairDataModule
from genrec.models.text_prior import TextScorer
from genrec.modules.encoder_finetune import EncoderFinetune, freeze_below, transformer_layers
from genrec.tokenizers.text import embed_texts
from tests.helpers import last_metrics, text_domain, tiny_encoder

WORDS = "apple hammer ocean notebook pear wire violin hose tulip kettle lamp saddle".split()
ONE = {f"u{i}": "abcdefgh"[i % 4:][:4] + "gh"[i % 2] + "ef"[i % 2] for i in range(16)}
TWO = {f"v{i}": "ijkl"[i % 3:] + "ijkl"[: i % 3] + "lk"[i % 2] for i in range(9)}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return tiny_encoder(tmp_path_factory.mktemp("encoder"))


def domains(tmp_path):
    one = text_domain(tmp_path / "one", ONE, {c: f"{w} {c}" for c, w in zip("abcdefgh", WORDS)})
    two = text_domain(tmp_path / "two", TWO, {c: f"{w} {c}" for c, w in zip("ijkl", WORDS[8:])})
    return [{"name": "one", "dataset": "plain", "root": str(one)}, {"name": "two", "dataset": "plain", "root": str(two)}]


def test_a_user_query_is_the_text_formulas_user_vector(tmp_path, encoder):
    dm = PairDataModule(domains(tmp_path), PairConfig(query="user", history=3), loader=LoaderConfig(batch_size=8))
    dm.setup("fit")
    model = EncoderFinetune(str(encoder), max_seq_length=32).eval()  # dropout off: as the formula encodes
    model.texts = dm.item_texts
    batch = next(iter(dm.train_dataloader()))
    assert (batch["lengths"] > 1).any()
    with torch.no_grad():
        users, positives, _ = model.queries_and_positives(batch)
    catalogue = torch.from_numpy(embed_texts(dm.item_texts, str(encoder), use_cache=False, progress=False))
    formula = TextScorer(catalogue, decay=0.3).user_vectors({"items": batch["query"], "lengths": batch["lengths"]})
    torch.testing.assert_close(users, formula, atol=1e-5, rtol=0)
    torch.testing.assert_close(positives, catalogue[batch["positive"]], atol=1e-5, rtol=0)


def test_train_layers_freezes_all_but_the_top_layers(encoder):
    model = EncoderFinetune(str(encoder), train_layers=1)
    layers = transformer_layers(model.encoder)
    assert [any(p.requires_grad for p in layer.parameters()) for layer in layers] == [False, False, True]
    with pytest.raises(ValueError, match=r"train_layers must be 'all' or a number of top layers in 0\.\.3"):
        freeze_below(model.encoder, 4)


def config(tmp_path, encoder, steps, **model):
    # validation every 4 steps; last.ckpt every 2, so a run stopped anywhere resumes close by
    text = {
        "seed_everything": 0,
        "trainer": {"max_steps": steps, "val_check_interval": 4, "num_sanity_val_steps": 0, "enable_progress_bar": False,
                    "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs", "name": "enc"}}],
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"monitor": "val/ndcg@10", "mode": "max", "save_last": True, "filename": "best"}},
                        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                         "init_args": {"save_top_k": 0, "save_last": True, "every_n_train_steps": 2}}]},
        "data": {"class_path": "genrec.data.pairs.PairDataModule",
                 "init_args": {"domains": domains(tmp_path), "pairing": {"query": "user", "history": 2},
                               "loader": {"batch_size": 6, "eval_batch_size": 8}}},
        "model": {"class_path": "genrec.modules.encoder_finetune.EncoderFinetune",
                  "init_args": {"encoder": str(encoder), "train_layers": 2, "optim": {"lr": 3e-3}, "max_seq_length": 32, **model}},
    }
    path = tmp_path / "encoder.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    return ["fit", "--config", str(path)]


def fixed_loss(model, dm, batches=4):
    model.eval()
    with torch.no_grad():
        out = []
        for batch, _ in zip(dm.train_dataloader(), range(batches)):
            users, positives, _ = model.queries_and_positives(batch)
            out.append(float(model.loss_fn.compute_loss_from_embeddings([users, positives], None)))
    return float(np.mean(out))


def test_fine_tuning_lowers_the_loss_and_saves_an_encoder_that_embed_texts_loads(tmp_path, encoder, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = train_main(config(tmp_path, encoder, steps=16, objective={"learn_temperature": True, "uniformity": 0.1}))
    model, dm = cli.model, cli.datamodule
    run = tmp_path / "runs" / "enc" / "version_0"
    metrics = last_metrics(run, "val/")
    assert {"val/ndcg@10", "val/one/ndcg@10", "val/two/hr@10", "val/one/mean_cosine", "val/mean_cosine"} <= set(metrics)
    before = EncoderFinetune(str(encoder), max_seq_length=32)
    before.texts = dm.item_texts
    model.texts = dm.item_texts
    assert fixed_loss(model, dm) < fixed_loss(before, dm) - 0.05
    assert float(model.log_scale.exp()) != pytest.approx(20.0)  # the temperature was learned

    texts = dm.item_texts
    for name in ("encoder", "encoder-last"):
        assert json.loads((run / name / "genrec_finetune.json").read_text())["val"]["val/ndcg@10"] >= 0
    saved = embed_texts(texts, str(run / "encoder-last"), progress=False)
    original = embed_texts(texts, str(encoder), progress=False)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(saved[1:], model.embed(texts[1:]).numpy(), atol=1e-5)  # the fine-tuned vectors
    assert np.abs(saved - original).max() > 1e-2
    best = json.loads((run / "encoder" / "genrec_finetune.json").read_text())
    assert best["val"]["val/ndcg@10"] == pytest.approx(max(
        float(v) for v in __import__("pandas").read_csv(run / "metrics.csv")["val/ndcg@10"].dropna()), abs=1e-6)


def test_a_stopped_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tmp_path, encoder, monkeypatch):
    (tmp_path / "whole").mkdir()
    monkeypatch.chdir(tmp_path / "whole")
    whole = train_main(config(tmp_path / "whole", encoder, steps=8))
    (tmp_path / "parts").mkdir()
    monkeypatch.chdir(tmp_path / "parts")
    first = train_main(config(tmp_path / "parts", encoder, steps=6))
    assert first.trainer.global_step == 6
    resumed = train_main(config(tmp_path / "parts", encoder, steps=8) + ["--ckpt_path", "last"])
    assert resumed.trainer.global_step == 8
    theirs = resumed.model.state_dict()
    for name, tensor in whole.model.state_dict().items():
        torch.testing.assert_close(theirs[name], tensor, msg=name)
    assert resumed.model.best == whole.model.best
    # the continuation logs to a new run folder; the best encoder (step 4, before the stop) is copied there
    best = json.loads((tmp_path / "parts" / "runs" / "enc" / "version_1" / "encoder" / "genrec_finetune.json").read_text())
    assert best["step"] == 4  # so the copy, not a new save, put it there
    assert best == json.loads((tmp_path / "whole" / "runs" / "enc" / "version_0" / "encoder" / "genrec_finetune.json").read_text()) | {"data": best["data"]}


def test_validation_scores_in_the_space_the_scorer_config_names(tmp_path, encoder):
    from types import SimpleNamespace

    from genrec.modules.encoder_finetune import FormulaConfig

    dm = PairDataModule(domains(tmp_path), PairConfig(), loader=LoaderConfig(batch_size=8))
    dm.setup("fit")
    catalogue = torch.from_numpy(embed_texts(dm.item_texts, str(encoder), use_cache=False, progress=False))
    spans = [(lo, hi) for _, lo, hi in dm.eval_domains]
    for space in ({"center": True}, {"whiten": 0.5}):
        model = EncoderFinetune(str(encoder), max_seq_length=32, scorer=FormulaConfig(hubness=0.0, **space)).eval()
        model.texts = dm.item_texts
        model._trainer = SimpleNamespace(datamodule=dm)
        scorer, cosines = model.catalogue_scorer()
        expected = TextScorer(catalogue, hubness=0.0, domains=spans, **space)
        torch.testing.assert_close(scorer.item_vectors(), expected.item_vectors(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"model.scorer.whiten must be >= 0 and <= 1, got 1.5"):
        FormulaConfig(whiten=1.5)
