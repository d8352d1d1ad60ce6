import json

import numpy as np
import pandas as pd
import pytest
import torch

from genrec.cli import main as train_main
from genrec.robust.callback import FraudsterReweighting, WeightUpdate
from genrec.robust.signals import AnomalySignal, DenseBlockSignal
from genrec.robust.detector import max_percentiles, percentiles, roc_auc
from genrec.robust.report import detection
from tests.conftest import shared_data

HASHING = {"kind": "tests.robust.helpers.HashingEncoder"}
ANOMALY = json.dumps([{"kind": "anomaly", "windows": [10, 50]}])


def test_weight_updates_keep_the_total_and_punish_high_scores():
    cb = FraudsterReweighting(update=WeightUpdate(lr=3.0))
    cb.w = torch.zeros(500)
    rng = np.random.default_rng(0)
    for _ in range(5):
        scores = rng.random(500) * 0.2
        scores[:10] = 0.95  # ten clear fraudsters
        weights = cb.update_weights(scores)
        assert weights.sum().item() == pytest.approx(500, rel=1e-4)
    assert weights[:10].max() < 0.2 < weights[10:].min()
    assert weights.max() <= 1 / torch.sigmoid(torch.tensor(0.0)) + 1e-6  # σ(w)/σ(w0) is bounded by 2


def test_rank_scores_lower_fakes_that_raw_scores_barely_move():
    """A calibrator with tiny probabilities for most users and near 1 for a few false positives: the
    fakes outrank every other real user but sit below the mean, so raw updates barely move them."""
    scores = np.full(1000, 0.001)
    scores[:20] = 0.99  # false positives
    scores[20:40] = 0.01  # fakes: above 980 real users, below the mean (0.0208)
    fake = np.zeros(1000, bool)
    fake[20:40] = True
    raw, rank = FraudsterReweighting(update=WeightUpdate(lr=2.0)), FraudsterReweighting(update=WeightUpdate(lr=2.0, scores="rank"))
    for cb in (raw, rank):
        cb.w = torch.zeros(1000)
        for _ in range(5):
            weights = cb.update_weights(scores)
        assert weights.sum().item() == pytest.approx(1000, rel=1e-4)
    assert raw.weights[fake].mean() > 0.9 * raw.weights[40:].mean()  # the false positives took the loss
    assert rank.weights[fake].mean() < 0.6 * rank.weights[40:].mean()
    # percentiles with ties: the 960 tied real users share the mean rank
    cb = FraudsterReweighting(update=WeightUpdate(lr=1.0, scores="rank"))
    cb.w = torch.zeros(4)
    cb.update_weights(np.array([0.0, 0.0, 0.5, 1.0]))
    assert torch.allclose(cb.w - cb.w[0], torch.tensor([0.0, 0.0, -0.5, -5 / 6]), atol=1e-5)
    with pytest.raises(ValueError, match="scores"):
        WeightUpdate(scores="softmax")
    with pytest.raises(ValueError, match="flag_fraction"):
        WeightUpdate(scores="rank", flag_fraction=0.0)
    for bad in ({"lr": 0.0}, {"every": 0}, {"start_epoch": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            WeightUpdate(**bad)


def test_a_small_flag_fraction_moves_only_the_top_ranked_users_down():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    top = scores >= np.quantile(scores, 0.98)
    cb = FraudsterReweighting(update=WeightUpdate(lr=2.0, scores="rank", flag_fraction=0.02))
    cb.w = torch.zeros(1000)
    for _ in range(5):
        weights = cb.update_weights(scores)
    assert weights.sum().item() == pytest.approx(1000, rel=1e-4)
    assert weights[top].max() < 1 and weights[~top].min() >= 1.0  # the 98% below were never flagged
    assert weights[~top].max() - weights[~top].min() < 1e-5  # and all moved alike
    # the highest-ranked users lose the most
    order = np.argsort(scores[top])
    assert (weights[top][order[1:]] <= weights[top][order[:-1]] + 1e-6).all()


def tiny_args(run_dir, epochs, extra=(), attack="random", defended=True, update=None):
    defence = [
        "--trainer.callbacks+", "genrec.robust.FraudsterReweighting",
        "--trainer.callbacks.update", json.dumps({"start_epoch": 1, **(update or {})}),
        "--trainer.callbacks.encoder", json.dumps(HASHING),
        "--trainer.callbacks.known_attack", json.dumps({"budget": 0.05}),
        "--trainer.callbacks.calibrator", json.dumps({"epochs": 2, "dim": 16}),
        "--trainer.callbacks.detector", json.dumps({"epochs": 20}),
    ]
    return [
        "fit", "--seed_everything", "0",
        "--trainer.max_epochs", str(epochs), "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run_dir),
        "--trainer.check_val_every_n_epoch", "10",
        "--data", "genrec.robust.AttackedDataModule", "--data.dataset", "synthetic",
        "--data.dataset_options", json.dumps({"num_users": 200, "num_items": 80, "seed": 0}),
        "--data.max_seq_len", "12", "--data.loader.batch_size", "64",
        "--data.attack", json.dumps({"kind": attack, "budget": 0.05, "seed": 1} if attack else None),
        "--model", "genrec.modules.RetrievalModule", "--model.net", "genrec.models.SASRec",
        "--model.net.dim", "16", "--model.net.max_seq_len", "12", "--model.loss.num_negatives", "16",
        "--model.loss.negatives", "sequence",
        *(defence if defended else []),
        *extra,
    ]


def reweighting(cli):
    return next(c for c in cli.trainer.callbacks if isinstance(c, FraudsterReweighting))


def test_state_survives_a_checkpoint_round_trip(tmp_path):
    first = train_main(tiny_args(tmp_path, epochs=3))
    cb = reweighting(first)
    assert cb.updates == 2 and len(cb.history) == 2
    assert cb.weights.sum().item() == pytest.approx(len(cb.w), rel=1e-4)
    assert not torch.allclose(cb.weights, torch.ones_like(cb.weights))
    torch.testing.assert_close(first.model.user_weights, cb.weights)
    ckpt = next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    saved = torch.load(ckpt, weights_only=False)
    assert any("FraudsterReweighting" in k for k in saved["callbacks"])
    assert any(k.endswith("AttackedDataModule") for k in saved)  # the fake profiles travel with the run

    # Resuming at the end trains nothing more: the restored weights must be exactly the saved ones.
    resumed = train_main(tiny_args(tmp_path / "b", epochs=3, extra=("--ckpt_path", str(ckpt))))
    rcb = reweighting(resumed)
    torch.testing.assert_close(rcb.w, cb.w)
    torch.testing.assert_close(resumed.model.user_weights, cb.weights)
    assert rcb.updates == 2 and rcb.history == cb.history
    # Going on one epoch continues from them (one more update), instead of starting over.
    more = train_main(tiny_args(tmp_path / "c", epochs=4, extra=("--ckpt_path", str(ckpt))))
    assert reweighting(more).updates == 3 and reweighting(more).history[:2] == cb.history


def test_train_known_trains_on_labelled_decoys_and_weighs_them_down(tmp_path):
    cli = train_main(tiny_args(tmp_path, epochs=4, update={"scores": "rank", "flag_fraction": 0.2}, extra=(
        "--trainer.callbacks.train_known", "true", "--trainer.callbacks.calibrator", json.dumps({"epochs": 10, "dim": 16}),
        "--trainer.callbacks.signals", ANOMALY)))
    cb, dm = reweighting(cli), cli.datamodule
    own = len(dm.is_fake)  # 200 real users + 10 injected fakes
    decoys = cb._known_profiles.sequences
    assert own == 210 and cb.num_own_users == own and dm.data.num_users == own + len(decoys) == 220
    # the decoys are whole training sequences, in the training windows, with their own targets
    for i, seq in enumerate(decoys):
        u = own + i
        assert np.array_equal(dm.data.items[dm.data.offsets[u]:dm.train_end[u]], seq)
    assert set(range(own, own + len(decoys))) <= set(dm.train_set.users.tolist())
    assert not set(cb._known_profiles.targets.tolist()) & set(dm.targets.tolist())
    # evaluation and the saved scores cover the data module's own users only
    assert len(dm.val_set) == len(dm.eval_users) and dm.eval_users.max() < own
    assert len(cb.scores) == own and len(cb.lm_scores) == own and len(cb.signal_scores["anomaly"]) == own
    # one weight per training user; the decoys (the calibrator's own positives) lose weight
    assert len(cb.weights) == 220 and cb.weights.sum().item() == pytest.approx(220, rel=1e-4)
    assert cb.weights[own:].mean().item() == pytest.approx(cb.history[-1]["weight_decoy"])
    assert cb.history[-1]["weight_decoy"] < 1 < cb.history[-1]["weight_real"]
    torch.testing.assert_close(cli.model.user_weights, cb.weights)


def test_anomaly_ranks_users_by_the_larger_percentile(tmp_path):
    with pytest.raises(ValueError, match="scores: rank"):
        FraudsterReweighting(signals=[AnomalySignal()])
    with pytest.raises(ValueError, match="windows"):
        AnomalySignal(windows=[10, 0])
    with pytest.raises(ValueError, match="share a name"):
        FraudsterReweighting(update=WeightUpdate(scores="rank"), signals=[AnomalySignal(), AnomalySignal(windows=(5,))])
    cli = train_main(tiny_args(tmp_path, epochs=3, attack="bandwagon", update={"scores": "rank", "flag_fraction": 0.1},
                               extra=("--trainer.callbacks.signals", ANOMALY)))
    cb, dm = reweighting(cli), cli.datamodule
    assert [type(sig) for sig in cb.signals] == [AnomalySignal] and cb.signals[0].windows == (10, 50)
    anomaly = cb.signal_scores["anomaly"]
    assert len(anomaly) == len(cb.scores) == len(dm.is_fake)
    last = cb.history[-1]
    assert {"anomaly_auc", "update_auc", "auc"} <= set(last)
    # the last update subtracted the flagged part of max(percentile(calibrated), percentile(anomaly))
    both = percentiles(torch.maximum(percentiles(torch.as_tensor(cb.scores)), percentiles(torch.as_tensor(anomaly))))
    torch.testing.assert_close(torch.as_tensor(max_percentiles(cb.scores, anomaly)), both)
    assert last["update_auc"] == pytest.approx(roc_auc(both.numpy(), dm.is_fake))
    for key in ("update_flagged", "anomaly_flagged"):  # the top 10% (give or take ties)
        assert abs(last[key] - 0.1 * len(both)) <= 2
    # the saved state carries the anomaly scores into the report's detection rows
    ckpt = next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    state = next(v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if "FraudsterReweighting" in k)
    rows = detection({"defence": state, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum()))
    assert set(rows) == {"lm", "calibrated", "anomaly", "update"}
    assert rows["update"]["auc"] == pytest.approx(last["update_auc"])
    # checkpoints written before signals were a list held the anomaly scores under their own key
    legacy = {k: v for k, v in state.items() if k != "signal_scores"} | {"anomaly_scores": state["signal_scores"]["anomaly"]}
    assert detection({"defence": legacy, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum())) == rows
    # checkpoints written before update.combine saved no ranking: the largest percentile, this run's own
    unranked = {k: v for k, v in state.items() if k != "update_scores"}
    assert detection({"defence": unranked, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum())) == rows
    with pytest.raises(ValueError, match="w0"):  # a resume must continue the same update
        FraudsterReweighting(update=WeightUpdate(w0=1.0)).load_state_dict(state)


@pytest.mark.slow
@pytest.mark.parametrize("update", ["defaults", "config"])
def test_ml100k_injected_users_end_with_lower_weights(tmp_path, update):
    """Real data and MiniLM: fakes of a random attack (other targets than the known one) lose weight,
    with the callback's defaults and with the update of configs/robust/defence.yaml (percentiles, top
    5%, anomaly scores)."""
    root = shared_data("ml-100k")
    args = tiny_args(tmp_path, epochs=4)
    args[args.index("--data.dataset") + 1] = "ml-100k"
    args[args.index("--data.dataset_options") + 1] = "{}"
    args[args.index("--data.attack") + 1] = json.dumps({"kind": "random", "seed": 3})
    args[args.index("--trainer.callbacks.encoder") + 1] = json.dumps({"kind": "sentence-transformers"})
    args[args.index("--trainer.callbacks.known_attack") + 1] = "{}"
    args[args.index("--trainer.callbacks.calibrator") + 1] = json.dumps({"epochs": 5})
    args[args.index("--trainer.callbacks.detector") + 1] = "{}"
    args[args.index("--data.max_seq_len") + 1] = "50"
    args[args.index("--model.net.max_seq_len") + 1] = "50"
    if update == "config":
        args[args.index("--trainer.callbacks.update") + 1] = json.dumps({"start_epoch": 1, "scores": "rank", "flag_fraction": 0.05})
        args += ["--trainer.callbacks.signals", ANOMALY]
    cli = train_main([*args, "--data.root", str(root)])
    cb, dm = reweighting(cli), cli.datamodule
    fake = torch.as_tensor(dm.is_fake)
    assert fake.sum() == 9  # 1% of 943 real users
    if update == "config":
        assert cb.history[-1]["update_auc"] > 0.9
    weights = cb.weights
    assert weights[fake].mean() < 0.8 * weights[~fake].mean()
    assert weights.sum().item() == pytest.approx(len(weights), rel=1e-4)
    assert cb.history[-1]["auc"] > 0.8


COORDINATION = json.dumps([*json.loads(ANOMALY), {"kind": "coordination", "windows": [5], "threshold": 2.0}])


def test_coordination_signal_logs_and_reports_beside_the_anomaly_one(tmp_path):
    """As configs/robust/defence.yaml: both signals; each logs as robust/<name>_* and has its own
    detection row in evaluate.py robust. Warm-started updates train the calibrator warm_epochs."""
    with pytest.raises(ValueError, match="warm_epochs"):
        FraudsterReweighting(calibrator={"warm_epochs": 0})
    cli = train_main(tiny_args(tmp_path, epochs=3, attack="copy", update={"scores": "rank", "flag_fraction": 0.1}, extra=(
        "--trainer.callbacks.signals", COORDINATION,
        "--trainer.callbacks.calibrator", json.dumps({"epochs": 3, "warm_epochs": 1, "dim": 16}))))
    cb, dm = reweighting(cli), cli.datamodule
    assert [s.name for s in cb.signals] == ["anomaly", "coordination"]
    assert [h["calibrator_epochs"] for h in cb.history] == [3, 1]
    assert all(h["update_seconds"] > 0 for h in cb.history)
    assert len(cb.timings["update: coordination signal"]) == len(cb.timings["update: calibrator training"]) == 2
    coordination = cb.signal_scores["coordination"]
    assert len(coordination) == len(dm.is_fake) and coordination.max() > 0
    last = cb.history[-1]
    assert last["coordination_auc"] == pytest.approx(roc_auc(coordination, dm.is_fake))
    # the update ranks by the largest of the three percentiles
    assert last["update_auc"] == pytest.approx(roc_auc(max_percentiles(cb.scores, cb.signal_scores["anomaly"], coordination), dm.is_fake))
    logged = (tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert {"robust/coordination_auc", "robust/coordination_precision", "robust/anomaly_auc",
            "robust/calibrator_epochs", "robust/update_seconds"} <= set(logged)
    ckpt = next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    state = next(v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if "FraudsterReweighting" in k)
    rows = detection({"defence": state, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum()))
    assert list(rows) == ["lm", "calibrated", "anomaly", "coordination", "update"]
    assert rows["coordination"]["auc"] == pytest.approx(last["coordination_auc"])
    assert rows["update"]["auc"] == pytest.approx(last["update_auc"])


DENSE_BLOCK = json.dumps([*json.loads(COORDINATION), {"kind": "dense_block", "min_lift": 1.5, "min_support": 0.02}])


def test_dense_block_signal_joins_the_defence_from_the_config(tmp_path):
    """A ``signals:`` entry naming genrec.robust.DenseBlockSignal: a defended run scores, logs and
    reports it beside the other signals; with ``update.combine: fisher`` the update ranks by Fisher's
    sum, and the report reads the update's own ranking back from the checkpoint."""
    update = {"scores": "rank", "flag_fraction": 0.1, "combine": "fisher"}
    cli = train_main(tiny_args(tmp_path, epochs=3, attack="copy", update=update, extra=(
        "--data.attack", json.dumps({"kind": "copy", "budget": 0.05, "seed": 1, "splice": "anywhere"}),
        "--trainer.callbacks.signals", DENSE_BLOCK)))
    cb, dm = reweighting(cli), cli.datamodule
    assert [s.name for s in cb.signals] == ["anomaly", "coordination", "dense_block"]
    assert cb.signals[2].min_lift == 1.5 and dm.fakes.config.splice == "anywhere"
    dense = cb.signal_scores["dense_block"]
    assert len(dense) == len(dm.is_fake) and dense.max() > 0  # 80 items: no pair is rare, a low bar passes some
    last = cb.history[-1]
    assert last["dense_block_auc"] == pytest.approx(roc_auc(dense, dm.is_fake))
    assert last["update_auc"] == pytest.approx(roc_auc(cb.combined(cb.scores, cb.signal_scores), dm.is_fake))
    assert last["update_auc"] != pytest.approx(roc_auc(max_percentiles(cb.scores, *cb.signal_scores.values()), dm.is_fake))
    assert len(cb.timings["update: dense_block signal"]) == 2
    logged = (tmp_path / "lightning_logs/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert "robust/dense_block_auc" in logged
    ckpt = next(tmp_path.glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    state = next(v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if "FraudsterReweighting" in k)
    rows = detection({"defence": state, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum()))
    assert list(rows) == ["lm", "calibrated", "anomaly", "coordination", "dense_block", "update"]
    assert rows["dense_block"]["auc"] == pytest.approx(last["dense_block_auc"])
    assert rows["update"]["auc"] == pytest.approx(last["update_auc"])


def test_confident_flags_hold_weights_near_zero_whatever_the_ranking_says():
    """A flagged user is held at flagged_weight from the update that flags it, even when later
    rankings put it among the least suspect; a ranked-only top user keeps far more after one update."""
    cb = FraudsterReweighting(update=WeightUpdate(scores="rank", flag_fraction=0.05, flagged_weight=0.01))
    cb.w = torch.zeros(1000)
    flagged = torch.zeros(1000, dtype=torch.bool)
    flagged[:10] = True
    weights = cb.update_weights(None, flagged)
    assert weights[:10].max() <= 0.01 + 1e-6 and weights.sum().item() == pytest.approx(1000, rel=1e-4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        scores = rng.random(1000)
        scores[:10] = 0.0  # detection lost them
        weights = cb.update_weights(scores, flagged)
        assert weights[:10].max() < 0.05 and weights.sum().item() == pytest.approx(1000, rel=1e-4)
    soft = FraudsterReweighting(update=WeightUpdate(scores="rank", flag_fraction=0.05))
    soft.w = torch.zeros(1000)
    assert soft.update_weights(np.r_[np.ones(10), np.zeros(990)])[:10].min() > 0.2
    with pytest.raises(ValueError, match="every one"):
        cb.update_weights(None, torch.ones(1000, dtype=torch.bool))
    cb.flagged = flagged
    resumed = FraudsterReweighting(update=WeightUpdate(scores="rank"))
    resumed.load_state_dict(cb.state_dict())
    assert torch.equal(resumed.flagged, flagged)
    legacy = {k: v for k, v in cb.state_dict().items() if k != "flagged"}  # a checkpoint from before the flags
    resumed.load_state_dict(legacy)
    assert resumed.flagged is None and torch.equal(resumed.w, cb.w)  # fit start runs a fresh flag pass
    with pytest.raises(ValueError, match="flagged_weight"):
        WeightUpdate(flagged_weight=0.0)


LOCKSTEP = json.dumps([{"kind": "dense_block", "min_lift": 10.0, "min_support": 0.03, "max_coherence": 0.1, "flag_above": 2.0}])


@pytest.mark.parametrize("backbone", ["SASRec", "HSTU"])
@pytest.mark.parametrize("attack", ["copy", None])
def test_flags_before_training_drive_planted_fakes_to_near_zero(tmp_path, backbone, attack):
    """A signal that reads histories only flags the copy fakes' planted block before the first epoch;
    they train at flagged_weight from then on, on either backbone. With nobody attacking, no real
    user is flagged (the ranked update starts after training here, so flags alone act)."""
    extra = ["--data.dataset_options", json.dumps({"num_users": 200, "num_items": 400, "seed": 0}),  # rare targets
             "--model.net", f"genrec.models.{backbone}", "--model.net.dim", "16", "--model.net.max_seq_len", "12",
             "--data.attack", json.dumps({"kind": "copy", "budget": 0.05, "seed": 1, "splice": "anywhere"} if attack else None),
             "--trainer.callbacks.signals", LOCKSTEP]
    cli = train_main(tiny_args(tmp_path, epochs=2, attack=attack, update={"start_epoch": 5, "scores": "rank", "flag_fraction": 0.05},
                               extra=extra))
    cb, dm = reweighting(cli), cli.datamodule
    weights = cli.model.user_weights
    assert cb.updates == 0 and len(cb.timings["setup: flags before training"]) == 1
    if attack:
        fake = torch.as_tensor(dm.is_fake)
        assert cb.flagged[fake].all() and cb.flagged[~fake].float().mean() < 0.01
        assert weights[fake].max() < 0.05
        logged = pd.read_csv(tmp_path / "lightning_logs/version_0/metrics.csv")
        assert logged["robust/confident_fakes"].dropna().tolist() == [float(fake.sum())]
    else:
        assert not cb.flagged.any() and (weights < 0.5).sum() == 0
    assert weights.sum().item() == pytest.approx(len(weights), rel=1e-4)


def test_signals_that_read_histories_only_are_scored_once_per_fit(tmp_path, monkeypatch):
    """The training histories do not change during a fit: the dense block scores them for the flags
    before training and every update reuses those scores (the same weights as scoring each time)."""
    calls = []
    score = DenseBlockSignal.score
    monkeypatch.setattr(DenseBlockSignal, "score", lambda self, view: calls.append(len(view.histories)) or score(self, view))
    extra = ["--data.dataset_options", json.dumps({"num_users": 200, "num_items": 400, "seed": 0}),
             "--data.attack", json.dumps({"kind": "copy", "budget": 0.05, "seed": 1, "splice": "anywhere"}),
             "--trainer.callbacks.signals", LOCKSTEP]
    cli = train_main(tiny_args(tmp_path, epochs=3, attack="copy", update={"scores": "rank", "every": 1}, extra=extra))
    cb = reweighting(cli)
    assert cb.updates == 2 and calls == [len(cli.datamodule.is_fake)]
    fresh = DenseBlockSignal(**{k: v for k, v in json.loads(LOCKSTEP)[0].items() if k != "kind"})
    view = cb._view(cli.datamodule, *cb._histories(cli.datamodule))
    np.testing.assert_array_equal(cb.signal_scores["dense_block"], np.asarray(score(fresh, view), np.float32))


def test_a_signals_weight_scales_its_percentile_in_the_ranking():
    rng = np.random.default_rng(0)
    calibrated, dense = rng.random(200), rng.random(200)
    ranked = lambda w: FraudsterReweighting(update=WeightUpdate(scores="rank"), signals=[DenseBlockSignal(weight=w)]).combined(
        calibrated, {"dense_block": dense})
    np.testing.assert_allclose(ranked(1.0), max_percentiles(calibrated, dense), atol=1e-6)
    np.testing.assert_allclose(ranked(0.0), percentiles(torch.as_tensor(calibrated)).numpy(), atol=1e-6)  # logged only
    half = percentiles(torch.maximum(percentiles(torch.as_tensor(calibrated)), 0.5 * percentiles(torch.as_tensor(dense))))
    np.testing.assert_allclose(ranked(0.5), half.numpy(), atol=1e-6)


def test_the_defence_leaves_the_recommenders_random_draws_alone(tmp_path, monkeypatch):
    """A defended run trains on the undefended run's random draws (dropout, negatives, batch order):
    with no update due, the two end with the same model; and each update (calibrator initialisation
    and training) leaves torch's global stream where it found it."""
    seed = ("--seed_everything", "3")  # not the detector's own seed (0)
    plain = train_main(tiny_args(tmp_path / "plain", epochs=2, defended=False, extra=seed))
    quiet = train_main(tiny_args(tmp_path / "quiet", epochs=2, update={"start_epoch": 5}, extra=seed))
    assert reweighting(quiet).updates == 0 and len(reweighting(quiet).timings["setup: LM detector training"]) == 1
    for (name, a), b in zip(plain.model.state_dict().items(), quiet.model.state_dict().values()):
        assert torch.equal(a, b), name
    update = FraudsterReweighting._update
    kept = []

    def spied(self, trainer, pl_module):
        before = torch.random.get_rng_state()
        out = update(self, trainer, pl_module)
        kept.append(torch.equal(before, torch.random.get_rng_state()))
        return out

    monkeypatch.setattr(FraudsterReweighting, "_update", spied)
    train_main(tiny_args(tmp_path / "updated", epochs=3))
    assert kept == [True, True]


def test_without_the_lm_detector_the_weights_are_the_same_and_its_rows_absent(tmp_path):
    """``detector: {enabled: false}`` skips the detector's training; its scores never entered the update."""
    with_lm = reweighting(train_main(tiny_args(tmp_path / "a", epochs=3)))
    cli = train_main(tiny_args(tmp_path / "b", epochs=3, extra=("--trainer.callbacks.detector", "{enabled: false}")))
    cb, dm = reweighting(cli), cli.datamodule
    assert with_lm.lm_scores is not None and cb.lm_scores is None
    assert "setup: LM detector training" not in cb.timings and cb.updates == with_lm.updates == 2
    torch.testing.assert_close(cb.weights, with_lm.weights)
    logged = (tmp_path / "b/lightning_logs/version_0/metrics.csv").read_text().splitlines()[0].split(",")
    assert not [k for k in logged if k.startswith("robust/lm_")] and "robust/auc" in logged
    ckpt = next((tmp_path / "b").glob("lightning_logs/version_0/checkpoints/last.ckpt"))
    state = next(v for k, v in torch.load(ckpt, weights_only=False)["callbacks"].items() if "FraudsterReweighting" in k)
    assert list(detection({"defence": state, "num_fakes": int(dm.is_fake.sum())}, int((~dm.is_fake).sum()))) == ["calibrated"]


def test_lm_embeddings_are_cached_once_for_every_run(tmp_path, monkeypatch):
    """By default the embeddings go to $GENREC_CACHE/lm_embeddings, not the run's folder, so a second
    run (another folder) encodes nothing."""
    from tests.robust.helpers import HashingEncoder

    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "cache"))
    calls = []
    encode = HashingEncoder.encode
    monkeypatch.setattr(HashingEncoder, "encode", lambda self, texts: (calls.append(len(texts)), encode(self, texts))[1])
    first = reweighting(train_main(tiny_args(tmp_path / "first", epochs=2)))
    assert calls and list((tmp_path / "cache" / "lm_embeddings").glob("*.npy"))
    assert not list((tmp_path / "first").rglob("*.npy"))
    calls.clear()
    second = reweighting(train_main(tiny_args(tmp_path / "second", epochs=2)))
    assert calls == []
    np.testing.assert_array_equal(second._known["lm_users"], first._known["lm_users"])


def test_fisher_combination_adds_agreeing_signals_where_the_largest_percentile_does_not():
    """Bandwagon fakes sit in the top few percent of the calibrator and the anomaly score at once but
    at the very top of neither; under "max" the very top of each signal (real users) outranks them."""
    rng = np.random.default_rng(1)
    n = 1000
    calibrated, anomaly = rng.random(n), rng.random(n)
    calibrated[0], anomaly[0] = 0.985 * calibrated.max(), 0.985 * anomaly.max()  # agreeing, top 1-2% of both
    calibrated[1] = 2 * calibrated.max()  # the very top of one signal only
    anomaly[1] = np.median(anomaly)
    make = lambda combine: FraudsterReweighting(update=WeightUpdate(scores="rank", combine=combine),
                                                signals=[AnomalySignal()])
    by_max = make("max").combined(calibrated, {"anomaly": anomaly})
    by_fisher = make("fisher").combined(calibrated, {"anomaly": anomaly})
    assert by_max[1] > by_max[0] and by_fisher[0] > by_fisher[1]
    tails = [(1 - percentiles(torch.as_tensor(s)).numpy()) * (n - 1) / n + 1 / n for s in (calibrated, anomaly)]
    np.testing.assert_allclose(by_fisher, percentiles(torch.as_tensor(-np.log(tails[0]) - np.log(tails[1]))).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="combine"):
        WeightUpdate(combine="mean")
