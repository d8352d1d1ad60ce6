"""The one evaluation path: a baseline, a retrieval model and a generative model through the same runner."""
import json

import pandas as pd
import pytest
import torch

from genrec.data import SequenceDataModule
from genrec.evaluation.baselines import PopularityScorer, TextScorer
from genrec.evaluation.compare import compare_runs
from genrec.evaluation.runner import evaluate_recommender, report_header, run_report
from genrec.evaluation.uncertainty import Bootstrap
from genrec.metrics import RankingMetrics, target_ranks
from genrec.models import SASRec
from genrec.models.generative import DecoderConfig
from genrec.modules import GenerativeModule, RetrievalModule
from genrec.recommender import Recommender

TOKENIZER = {"embed_dim": 8, "num_tokens": 2, "levels": [5, 4], "hidden_dim": 8}


@pytest.fixture(scope="module")
def dm():
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 40, "num_items": 30, "num_interests": 5, "seed": 0},
                            max_seq_len=6)
    dm.setup("test")
    return dm


def recommenders(dm):
    torch.manual_seed(0)
    generative = GenerativeModule(tokenizer=TOKENIZER, beam_width=10,
                                  decoder=DecoderConfig(dim=16, num_heads=2, dropout=0.0, max_seq_len=6)).eval()
    text = torch.randn(dm.num_items + 1, 8)
    text[0] = 0
    generative.set_catalogue_embeddings(text, key="test")
    retrieval = RetrievalModule(SASRec(dim=8, num_heads=1, max_seq_len=6), num_items=dm.num_items).eval()
    return {"baseline": TextScorer(text), "retrieval": retrieval, "generative": generative}


def test_a_baseline_a_retrieval_and_a_generative_model_write_one_report_schema(dm, tmp_path):
    reports, frames = {}, {}
    for kind, recommender in recommenders(dm).items():
        assert isinstance(recommender, Recommender)
        report = report_header("test", kind, dm, "test", (1, 5, 10), (5, 10))
        pop = PopularityScorer(dm.train_item_counts())
        reports[kind] = run_report(report, {"model": recommender, "popularity": pop}, dm, tmp_path / kind, "test",
                                   mrr=False, boot=Bootstrap(50))
        frames[kind] = pd.read_parquet(tmp_path / kind / reports[kind]["per_user"])
    schema = {kind: (sorted(r), sorted(r["protocol"]), {s: sorted(m) for s, m in r["metrics"].items()},
                     {s: sorted(c) for s, c in r["ci"].items()}, sorted(r["breakdown"]), list(frames[kind].columns))
              for kind, r in reports.items()}
    assert schema["baseline"] == schema["retrieval"] == schema["generative"]
    # the same popularity numbers whichever recommender it stands beside
    assert reports["baseline"]["metrics"]["popularity"] == reports["generative"]["metrics"]["popularity"]
    for kind, report in reports.items():
        saved = json.loads((tmp_path / kind / "test_metrics.json").read_text())
        assert saved["metrics"] == report["metrics"] and len(frames[kind]) == 2 * report["users"]
    # compare reads every one of them user by user
    paired = compare_runs(tmp_path / "retrieval", tmp_path / "generative", boot=Bootstrap(50))
    assert paired["scorers"]["model"]["users"] == reports["retrieval"]["users"]


def test_a_generative_models_ranks_are_read_from_its_decoded_list(dm):
    generative = recommenders(dm)["generative"]
    metrics = RankingMetrics((1, 5, 10), (5, 10), mrr=False, max_rank=generative.max_rank)
    batch = next(iter(dm.test_dataloader()))
    ranks = generative.rank_targets(batch, metrics)
    exclude = batch["exclude"].masked_fill(batch["exclude"] == batch["target"][:, None], 0)
    items, _ = generative.recommend(batch, generative.max_rank, exclude)
    for rank, listed, target in zip(ranks.tolist(), items.tolist(), batch["target"].tolist()):
        assert rank == (listed.index(target) if target in listed else generative.max_rank)


def test_a_retrieval_models_cached_item_vectors_follow_its_weights(dm):
    model = recommenders(dm)["retrieval"]
    batch = next(iter(dm.test_dataloader()))

    @torch.no_grad()
    def fresh():
        return target_ranks(model.user_vectors(batch), model.item_vectors().detach(), batch["target"], batch["exclude"])

    assert evaluate_recommender(model, [batch], RankingMetrics((10,), (10,)))["hr@10"] >= 0
    assert torch.equal(model.rank_targets(batch, RankingMetrics((10,), (10,))), fresh())
    with torch.no_grad():  # a training step changes the embeddings in place
        model.item_emb.weight[1:] = torch.randn_like(model.item_emb.weight[1:])
    assert torch.equal(model.rank_targets(batch, RankingMetrics((10,), (10,))), fresh())
    model.load_state_dict({k: v.flip(0) if k == "item_emb.weight" else v for k, v in model.state_dict().items()})
    assert torch.equal(model.rank_targets(batch, RankingMetrics((10,), (10,))), fresh())


def test_every_command_refuses_a_retrieval_model_on_another_catalogue_but_not_a_generative_one(dm):
    from pathlib import Path

    from genrec.evaluation.runs import Run
    from genrec.modules.checkpoints import CheckpointMismatchError

    models = recommenders(dm)
    for kind in ("retrieval", "generative"):
        models[kind].hparams.dataset_fingerprint = "another:30:abc"
    with pytest.raises(CheckpointMismatchError, match=r"x.ckpt was trained on catalogue 'another:30:abc'"):
        Run(Path("x.ckpt"), {}, models["retrieval"]).check_catalogue(dm)  # evaluate.py model, robust and recommend
    Run(Path("x.ckpt"), {}, models["generative"]).check_catalogue(dm)  # zero-shot
    models["retrieval"].hparams.dataset_fingerprint = dm.fingerprint
    Run(Path("x.ckpt"), {}, models["retrieval"]).check_catalogue(dm)


def test_the_protocol_records_the_k_core_thresholds_of_the_preprocess_group():
    from genrec.data import PreprocessConfig
    from genrec.evaluation.runner import protocol

    options = {"num_users": 40, "num_items": 30, "num_interests": 5, "seed": 0}
    filtered = SequenceDataModule(dataset="synthetic", dataset_options=options, max_seq_len=6,
                                  preprocess=PreprocessConfig(min_user_interactions=3, use_cache=False))
    assert protocol(filtered, "test", [10], [10])["filters"] == {"dataset": "synthetic", "dataset_options": options,
                                                                  "min_user_interactions": 3}
