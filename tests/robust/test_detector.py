import numpy as np
import pytest
import torch

from genrec.models import SASRec
from genrec.modules import RetrievalModule
from genrec.robust.calibrator import Calibrator, CalibratorConfig, SequenceFeatures, sequence_features
from genrec.robust.detector import Detector, DetectorConfig, detection_metrics, roc_auc


def test_roc_auc_matches_pair_counting():
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 200).astype(float), rng.random(200) < 0.3
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairs)
    assert roc_auc(np.ones(10), np.arange(10) < 3) == pytest.approx(0.5)


def test_detection_metrics():
    m = detection_metrics(np.array([0.9, 0.8, 0.2, 0.6]), np.array([1, 0, 1, 0]), threshold=0.5)
    assert m["precision"] == pytest.approx(1 / 3) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.4) and m["flagged"] == 3


def test_detector_generalises_on_a_separable_shift():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(0, 1, (500, 8)), rng.normal(0, 1, (10, 8)) + 3
    det = Detector(8, DetectorConfig(epochs=100)).fit(np.concatenate([real, fake]), np.r_[np.zeros(500), np.ones(10)])
    test_real, test_fake = rng.normal(0, 1, (200, 8)), rng.normal(0, 1, (20, 8)) + 3
    scores = det.predict(np.concatenate([test_real, test_fake]))
    assert roc_auc(scores, np.r_[np.zeros(200), np.ones(20)]) > 0.95
    with pytest.raises(ValueError, match="both fake"):
        Detector(8).fit(real, np.zeros(500))


def module(num_items=30, dim=8):
    torch.manual_seed(0)
    return RetrievalModule(SASRec(dim=dim, num_blocks=1, max_seq_len=6), num_items=num_items)


def test_sequence_features_read_the_last_window():
    m = module()
    hist = [np.arange(1, 11), np.array([4, 5])]
    f = sequence_features(m, hist, [np.arange(10), np.arange(2)], np.ones((2, 3)), max_len=6)
    assert f.states.shape == (2, 6, 8) and f.lengths.tolist() == [6, 1]
    batch = {"items": torch.tensor([[4, 5, 6, 7, 8, 9]]), "timestamps": torch.tensor([[3, 4, 5, 6, 7, 8]]),
             "lengths": torch.tensor([6])}
    m.eval()
    states = m.encode(batch)[0]
    torch.testing.assert_close(f.states[0], states)
    torch.testing.assert_close(f.fit[0], (states * m.item_vectors()[torch.arange(5, 11)]).sum(-1))
    assert f.fit[1, 1:].abs().sum() == 0 and f.states[1, 1:].abs().sum() == 0


def test_calibrator_learns_sequences_the_recommender_finds_unusual():
    m = module()
    rng = np.random.default_rng(0)
    # Real users walk through neighbouring ids; fakes jump at random: their next-item fit differs.
    real = [np.clip(rng.integers(1, 25) + np.arange(8), 1, 30) for _ in range(120)]
    fake = [rng.integers(1, 31, 8) for _ in range(30)]
    with torch.no_grad():  # make neighbouring items similar, as a trained model would
        m.item_emb.weight[1:] = torch.sin(torch.arange(1, 31)[:, None] * 0.2 + torch.arange(8)[None] * 0.7)
    hist = real + fake
    f = sequence_features(m, hist, [np.arange(8)] * len(hist), np.ones((len(hist), 4)), max_len=6)
    labels = torch.cat([torch.zeros(120), torch.ones(30)])
    cal = Calibrator(8, 4, 6, CalibratorConfig(dim=16, epochs=25, batch_size=32, align_weight=0.0))
    train = torch.arange(len(hist)) % 2 == 0
    cal.fit(f.select(train.nonzero().squeeze(1)), labels[train])
    test = (~train).nonzero().squeeze(1)
    assert roc_auc(cal.predict(f.select(test)), labels[test].numpy()) > 0.9


def test_calibrator_inputs_can_leave_out_the_states_and_the_lm_head():
    torch.manual_seed(0)
    f = sequence_features(module(), [np.arange(1, 9)] * 4, [np.arange(8)] * 4, np.ones((4, 4)), max_len=6)
    new_states = type(f)(torch.randn_like(f.states), f.fit, f.lengths, f.lm)
    new_lm = type(f)(f.states, f.fit, f.lengths, torch.randn_like(f.lm))
    for opts, reads_states, reads_lm in (({}, True, True), ({"states": False}, False, True),
                                         ({"states": False, "lm_in_head": False}, False, False)):
        torch.manual_seed(1)
        cal = Calibrator(8, 4, 6, CalibratorConfig(dim=16, **opts)).eval()
        with torch.no_grad():  # only what the calibrator reads can change its logits
            assert torch.allclose(cal(f)[0], cal(new_states)[0]) != reads_states
            assert torch.allclose(cal(f)[0], cal(new_lm)[0]) != reads_lm


def test_calibrator_epochs_read_every_positive_and_a_fresh_draw_of_negatives(monkeypatch):
    f = sequence_features(module(), [np.arange(1, 9)] * 100, [np.arange(8)] * 100, np.ones((100, 4)), max_len=6)
    labels = torch.cat([torch.zeros(90), torch.ones(10)])
    cal = Calibrator(8, 4, 6, CalibratorConfig(dim=16, epochs=3, batch_size=1000, negatives_per_epoch=20))
    read = []
    select = SequenceFeatures.select
    monkeypatch.setattr(SequenceFeatures, "select", lambda self, idx: (read.append(idx.clone()), select(self, idx))[1])
    cal.fit(f, labels)
    assert [len(r) for r in read] == [30, 30, 30]
    for rows in read:
        assert set(range(90, 100)) <= set(rows.tolist()) and len(set(rows.tolist())) == 30
    assert len({tuple(sorted(r.tolist())) for r in read}) == 3  # each epoch its own negatives
    with pytest.raises(ValueError, match="negatives_per_epoch"):
        CalibratorConfig(negatives_per_epoch=0)
