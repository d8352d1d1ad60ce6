"""Checkpoints of every older format (``checkpoints.STEPS``: the modules' old file paths, HSTU's
``compile_attention``, flat hyper-parameters) load through ``migrate`` into today's configs and
evaluate as checkpoints written today do."""
import pytest
import torch

from genrec.data import LoaderConfig, PreprocessConfig, SequenceDataModule
from genrec.data.datamodule import data_protocol, rebuild_options
from genrec.evaluation.model_eval import run_evaluation
from genrec.evaluation.runs import load_run
from genrec.models import HSTU, SASRec, TimeBias
from genrec.modules import RetrievalModule
from genrec.modules.checkpoints import VERSION, VERSION_KEY, CheckpointMismatchError, build_net, class_path, migrate, module_class_path
from genrec.modules.negatives import LossConfig
from genrec.modules.optim import OptimConfig

FLAT_MODEL = {"_class_path": "genrec.modules.RetrievalModule", "loss": "sampled_softmax", "num_negatives": 16,
              "negatives": "interleaved", "negative_groups": 4, "temperature": 0.1, "similarity": "cosine",
              "lr": 0.002, "weight_decay": 0.0, "betas": [0.9, 0.98], "lr_schedule": "cosine", "warmup_steps": 20,
              "min_lr_ratio": 0.0, "hr_ks": [1, 10], "ndcg_ks": [10], "eval_chunk_size": 65536,
              "_instantiator": "lightning.pytorch.cli.instantiate_module"}
FLAT_DATA = {"_class_path": "genrec.data.SequenceDataModule", "dataset": "synthetic", "root": None,
             "dataset_options": {"num_users": 60, "num_items": 80, "seed": 0}, "cache_dir": None, "download": True,
             "use_cache": False, "max_seq_len": 8, "min_user_interactions": 0, "min_item_interactions": 0,
             "exclude": "history", "train_windows": "all", "bucket_by_length": False, "fit_on_validation": False,
             "stochastic_length": 0.0, "batch_size": 16, "eval_batch_size": 32, "num_workers": 0,
             "_instantiator": "lightning.pytorch.cli.instantiate_module"}


def old_checkpoint(tmp_path):
    """A checkpoint as genrec wrote it before the grouping, and the module it holds."""
    dm = SequenceDataModule(dataset="synthetic", dataset_options=FLAT_DATA["dataset_options"], preprocess=PreprocessConfig(use_cache=False), max_seq_len=8,
                            loader=LoaderConfig(train_windows="all", bucket_by_length=False, batch_size=16, eval_batch_size=32))
    torch.manual_seed(0)
    net = SASRec(dim=8, num_blocks=1, num_heads=1, max_seq_len=8)
    model = RetrievalModule(net, num_items=dm.num_items, loss=LossConfig(num_negatives=16, negatives="interleaved",
                                                                         negative_groups=4, temperature=0.1),
                            optim=OptimConfig(lr=0.002, weight_decay=0.0, betas=(0.9, 0.98), lr_schedule="cosine",
                                              warmup_steps=20), hr_ks=[1, 10], ndcg_ks=[10],
                            dataset_fingerprint=dm.fingerprint)
    ckpt = {"state_dict": model.state_dict(),
            "hyper_parameters": {**FLAT_MODEL, "num_items": dm.num_items, "dataset_fingerprint": dm.fingerprint},
            "datamodule_hyper_parameters": dict(FLAT_DATA),
            "genrec": {"module": "genrec.modules.retrieval.RetrievalModule",
                       "datamodule": "genrec.data.datamodule.SequenceDataModule",
                       "net": {"class_path": class_path(net), "init_args": dict(net.init_args)}}}
    path = tmp_path / "old.ckpt"
    torch.save(ckpt, path)
    return path, model, dm


def test_flat_hyper_parameters_map_into_the_configs(tmp_path):
    path, model, _ = old_checkpoint(tmp_path)
    ckpt = migrate(torch.load(path, weights_only=False))
    assert module_class_path(ckpt) == "genrec.modules.retrieval_module.RetrievalModule"
    back = RetrievalModule.from_checkpoint(str(path))
    assert back.loss_config == model.loss_config and back.optim_config == model.optim_config
    assert dict(back.hparams) == dict(model.hparams)
    run = load_run(path)
    dm = run.datamodule({"loader.eval_batch_size": 8, "max_seq_len": 6})
    assert dm.loader_config == LoaderConfig(train_windows="all", bucket_by_length=False, batch_size=16, eval_batch_size=8)
    assert dm.hparams.max_seq_len == 6
    for moved in ("batch_size", "loader.batch"):  # the old flat name of a moved key is refused by name too
        with pytest.raises(ValueError, match=rf"bad data option.*'{moved}'.*'loader.batch_size'"):
            run.datamodule({moved: 8})


def test_an_old_checkpoint_evaluates_as_the_same_one_written_today(tmp_path):
    path, model, dm = old_checkpoint(tmp_path)
    today = tmp_path / "today.ckpt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["hyper_parameters"] = dict(model.hparams)
    ckpt["datamodule_hyper_parameters"] = dict(dm.hparams)
    ckpt["genrec"]["module"] = class_path(model)
    torch.save(ckpt, today)
    old = run_evaluation(load_run(path), out=str(tmp_path / "old"), baseline=False, boot=None)
    new = run_evaluation(load_run(today), out=str(tmp_path / "new"), baseline=False, boot=None)
    assert old["metrics"] == new["metrics"] and old["metrics"]["model"]["hr@10"] > 0


def test_an_old_hstu_nets_compile_attention_maps_to_attention():
    def net(**old):
        args = {"dim": 8, "num_blocks": 1, "max_seq_len": 6, "attention": "dense", **old}
        ckpt = migrate({"hyper_parameters": {}, "genrec": {"net": {"class_path": "genrec.models.hstu.HSTU", "init_args": args}}})
        return build_net(ckpt["genrec"]["net"])

    assert net(compile_attention=False).attention == "dense" and net(compile_attention=True).attention == "compiled"


def test_an_old_hstu_nets_flat_time_options_map_into_time_bias():
    """A net saved with ``use_time_bias``/``num_time_buckets``/``query_time`` rebuilds with the same
    options and weights, and its init_args round-trip through today's format."""
    old = {"dim": 8, "num_blocks": 1, "max_seq_len": 6, "attention": "dense", "use_time_bias": False,
           "num_time_buckets": 64, "query_time": "last"}
    ckpt = migrate({"hyper_parameters": {}, "genrec": {"net": {"class_path": "genrec.models.hstu.HSTU", "init_args": old}}})
    net = build_net(ckpt["genrec"]["net"])
    assert not net.use_time_bias and net.num_time_buckets == 64 and net.query_time == "last"
    today = HSTU(dim=8, num_blocks=1, max_seq_len=6, time_bias=TimeBias(enabled=False, num_buckets=64, query_time="last"))
    assert net.init_args == today.init_args
    assert build_net({"class_path": class_path(today), "init_args": today.init_args}).init_args == today.init_args


def test_old_flat_kcore_and_use_cache_move_into_preprocess():
    flat = {"dataset": "synthetic", "min_user_interactions": 3, "min_item_interactions": 2, "use_cache": False}
    data = migrate({"hyper_parameters": {}, "datamodule_hyper_parameters": dict(flat)})["datamodule_hyper_parameters"]
    assert data == {"dataset": "synthetic", "preprocess": {"min_user_interactions": 3, "min_item_interactions": 2, "use_cache": False}}
    assert rebuild_options(SequenceDataModule, data)["preprocess"] == PreprocessConfig(3, 2, use_cache=False)
    assert data_protocol(data) == data_protocol(flat) == {"dataset": "synthetic", "min_user_interactions": 3, "min_item_interactions": 2}
    multi = {"domains": [{"dataset": "synthetic", "min_user_interactions": 3}], "use_cache": False}  # its own spelling
    assert migrate({"hyper_parameters": {}, "datamodule_hyper_parameters": dict(multi)})["datamodule_hyper_parameters"] == multi


@pytest.mark.parametrize("module, flat", [("genrec.modules.tokenizer_ae.TokenizerAutoencoder", {"lr": 0.002, "weight_decay": 0.0}),
                                          ("genrec.modules.encoder_finetune.EncoderFinetune", {"lr": 2e-5, "weight_decay": 0.01})])
def test_a_flat_lr_and_weight_decay_move_into_optim(module, flat):
    ckpt = migrate({"hyper_parameters": {"num_items": 5, **flat}, "genrec": {"module": module}})
    assert ckpt["hyper_parameters"] == {"num_items": 5, "optim": flat} and ckpt[VERSION_KEY] == VERSION
    assert OptimConfig(**ckpt["hyper_parameters"]["optim"]).lr == flat["lr"]


def test_a_checkpoint_written_today_records_its_version_and_migrates_unchanged(tmp_path):
    path, model, dm = old_checkpoint(tmp_path)
    saved = {"hyper_parameters": dict(model.hparams), "state_dict": {}}
    model.on_save_checkpoint(saved)
    assert saved[VERSION_KEY] == VERSION
    before = repr(saved)
    assert repr(migrate(saved)) == before
    with pytest.raises(CheckpointMismatchError, match=f"{VERSION_KEY}={VERSION + 1}.*newer genrec"):
        migrate({**saved, VERSION_KEY: VERSION + 1})


def test_load_run_reads_the_checkpoint_file_once(tmp_path, monkeypatch):
    import genrec.modules.checkpoints as checkpoints

    path, model, _ = old_checkpoint(tmp_path)
    reads = []
    real = checkpoints.torch.load
    monkeypatch.setattr(checkpoints.torch, "load", lambda *a, **k: reads.append(a[0]) or real(*a, **k))
    run = load_run(path)
    assert len(reads) == 1
    for (name, a), b in zip(model.state_dict().items(), run.model.state_dict().values()):
        torch.testing.assert_close(b, a, msg=name)
