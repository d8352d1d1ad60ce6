"""evaluate.py compare on report folders written by the evaluation's own report writer."""
import json

import numpy as np
import pandas as pd
import pytest

import evaluate
from genrec.evaluation.compare import RunMismatchError, compare_runs
from genrec.evaluation.report import write_report
from genrec.evaluation.uncertainty import Bootstrap, per_user_metrics


def write_run(folder, ranks, users=None, targets=None, fingerprint="synthetic:50:abc", split="test", **protocol):
    users = np.arange(len(ranks)) if users is None else users
    targets = (users % 50) + 1 if targets is None else targets
    frame = pd.DataFrame({"scorer": "model", "user": users, "user_id": users, "target": targets, "target_id": targets,
                          "history": 5, "target_train_count": 3, "rank": ranks})
    values = per_user_metrics(ranks, (1, 10), (10,), True)
    frame = frame.assign(**values)
    protocol = {"split": split, "catalogue": fingerprint, "exclude": "history", "filters": {"dataset": "synthetic"},
                "k": {"hr": [1, 10], "ndcg": [10]}, **protocol}
    report = {"command": "test", "checkpoint": str(folder), "protocol": protocol, "split": split, "dataset": "synthetic",
              "fingerprint": fingerprint,
              "users": len(users), "items": 50, "exclude": "history",
              "metrics": {"model": {k: float(v.mean()) for k, v in values.items()}}}
    write_report(report, frame, folder, split, Bootstrap(200))
    return folder


def ranks(seed, n=1500):
    return np.random.default_rng(seed).geometric(0.08, n) - 1


def test_compare_detects_a_planted_difference(tmp_path, capsys):
    base = ranks(0)
    better = np.where(np.random.default_rng(1).random(len(base)) < 0.08, 0, base)  # 8% of users moved to rank 0
    out = evaluate.main(["compare", str(write_run(tmp_path / "a", better)), str(write_run(tmp_path / "b", base))])
    hr = out["scorers"]["model"]["metrics"]["hr@1"]
    assert hr["diff"] == pytest.approx((better == 0).mean() - (base == 0).mean())
    assert 0 < hr["low"] < hr["diff"] < hr["high"] and hr["p"] < 0.01
    assert out["scorers"]["model"]["metrics"]["mrr"]["p"] < 0.01
    assert "| hr@1 |" in capsys.readouterr().out


def test_compare_does_not_find_a_null_difference(tmp_path):
    # B is A with a random half of its users' ranks redrawn from the same distribution: no difference.
    a = ranks(0)
    b = np.where(np.random.default_rng(2).random(len(a)) < 0.5, a, ranks(3))
    out = compare_runs(write_run(tmp_path / "a", a), write_run(tmp_path / "b", b))["scorers"]["model"]["metrics"]
    for key, m in out.items():
        assert m["low"] < 0 < m["high"] and m["p"] > 0.05, key


def test_compare_of_a_run_with_itself_is_exactly_zero(tmp_path):
    run = write_run(tmp_path / "a", ranks(0))
    out = compare_runs(run, run / "test_metrics.json")["scorers"]["model"]["metrics"]
    assert all(m["diff"] == 0 and m["p"] == 1 for m in out.values())


def test_compare_refuses_runs_on_other_users_catalogues_targets_or_splits(tmp_path):
    r = ranks(0, 100)
    a = write_run(tmp_path / "a", r)
    with pytest.raises(RunMismatchError, match="different catalogue"):
        compare_runs(a, write_run(tmp_path / "cat", r, fingerprint="synthetic:50:other"))
    with pytest.raises(RunMismatchError, match=r"different users for 'model' \(100 vs 99; 1 only in the first"):
        compare_runs(a, write_run(tmp_path / "users", r[1:], users=np.arange(1, 100)))
    with pytest.raises(RunMismatchError, match="different targets"):
        compare_runs(a, write_run(tmp_path / "targets", r, targets=np.full(100, 7)))
    with pytest.raises(RunMismatchError, match="different split"):
        compare_runs(a, write_run(tmp_path / "val", r, split="val") / "val_metrics.json")
    with pytest.raises(FileNotFoundError, match="evaluate.py wrote its report"):
        compare_runs(a, tmp_path / "nothing")


def test_compare_pairs_named_scorers_across_and_within_runs(tmp_path):
    """--scorers A=B: a model against another report's scorer of another name (a text baseline's),
    or a run's model against its own popularity baseline."""
    base = ranks(0)
    better = np.where(np.random.default_rng(1).random(len(base)) < 0.08, 0, base)
    model = write_run(tmp_path / "model", better)
    text = write_run(tmp_path / "text", base)
    report = tmp_path / "text" / "test_metrics.json"
    data = json.loads(report.read_text())
    data["metrics"] = {"text": data["metrics"]["model"]}
    report.write_text(json.dumps(data))
    per_user = tmp_path / "text" / data["per_user"]
    pd.read_parquet(per_user).assign(scorer="text").to_parquet(per_user)
    out = evaluate.main(["compare", str(model), str(text), "--scorers", "model=text"])
    hr = out["scorers"]["model (A) vs text (B)"]["metrics"]["hr@1"]
    assert hr["diff"] == pytest.approx((better == 0).mean() - (base == 0).mean()) and hr["p"] < 0.01
    with pytest.raises(RunMismatchError, match="share no scorer but popularity"):
        compare_runs(model, text)
    # two baseline reports (e.g. a fine-tuned encoder's text against MiniLM's) pair their text scorers
    assert list(compare_runs(text, text)["scorers"]) == ["text"]
    with pytest.raises(RunMismatchError, match="no scorer 'popularity'"):
        compare_runs(model, text, pairs=[("model", "popularity")])


@pytest.mark.parametrize("field, a, b", [
    ("exclude", "history", "none"),
    ("filters", {"dataset": "synthetic"}, {"dataset": "synthetic", "min_user_interactions": 5}),
    ("window", None, 50),
    ("template", "{title}", "{title}. {brand}"),
])
def test_compare_refuses_reports_of_another_protocol_naming_the_field(tmp_path, field, a, b):
    """Same users, same targets, same catalogue: only the protocol differs, and the comparison is refused."""
    r = ranks(0, 100)
    first = write_run(tmp_path / "a", r, **({field: a} if a is not None else {}))
    second = write_run(tmp_path / "b", r, **{field: b})
    with pytest.raises(RunMismatchError, match=f"different {field} "):
        compare_runs(first, second)


def test_reports_with_other_cutoffs_pair_on_the_metrics_both_hold(tmp_path):
    """A model report at k 1, 5, 10, 50 and a baseline's at 1, 5, 10: hr@10 is the same number in both."""
    r = ranks(0, 300)
    wide = write_run(tmp_path / "a", r, k={"hr": [1, 10, 50], "ndcg": [10]})
    frame = pd.read_parquet(wide / "test_per_user.parquet").assign(**{"hr@50": (r < 50).astype(float)})
    frame.to_parquet(wide / "test_per_user.parquet")
    out = compare_runs(wide, write_run(tmp_path / "b", np.maximum(r - 3, 0)))["scorers"]["model"]["metrics"]
    assert set(out) == {"hr@1", "hr@10", "ndcg@10", "mrr"}  # hr@50 is only in A
    assert out["hr@10"]["diff"] < 0 and out["hr@10"]["low"] <= out["hr@10"]["diff"] <= out["hr@10"]["high"]
    other = write_run(tmp_path / "c", r)
    narrow = pd.read_parquet(other / "test_per_user.parquet")
    narrow.drop(columns=["hr@1", "hr@10", "ndcg@10", "mrr"]).assign(**{"hr@5": (r < 5).astype(float)}).to_parquet(
        other / "test_per_user.parquet")
    with pytest.raises(RunMismatchError, match="share no metric"):
        compare_runs(wide, other)


def test_a_template_only_one_report_records_is_not_a_mismatch(tmp_path):
    # a retrieval model reads no text: its report has no template to compare with the text baseline's
    r = ranks(0, 100)
    out = compare_runs(write_run(tmp_path / "a", r), write_run(tmp_path / "b", r, template="{title}"))
    assert out["scorers"]["model"]["users"] == 100


def test_a_report_without_its_protocol_is_refused(tmp_path):
    run = write_run(tmp_path / "a", ranks(0, 100))
    report = json.loads((run / "test_metrics.json").read_text())
    del report["protocol"]
    (run / "test_metrics.json").write_text(json.dumps(report))
    with pytest.raises(RunMismatchError, match="does not record its protocol"):
        compare_runs(run, run)


def test_compare_out_follows_its_suffix_and_keeps_other_files(tmp_path):
    a, b = write_run(tmp_path / "a", ranks(0, 100)), write_run(tmp_path / "b", ranks(1, 100))
    evaluate.main(["compare", str(a), str(b), "--bootstrap", "50", "--out", str(tmp_path / "c.md")])
    assert (tmp_path / "c.md").read_text().startswith("# test comparison")
    evaluate.main(["compare", str(a), str(b), "--bootstrap", "50", "--out", str(tmp_path / "c.json")])
    assert json.loads((tmp_path / "c.json").read_text())["split"] == "test"
    evaluate.main(["compare", str(a), str(b), "--bootstrap", "50", "--seed", "3", "--out", str(tmp_path / "c.json")])  # its own
    with pytest.raises(ValueError, match="cannot tell the format from the suffix '.csv'"):
        evaluate.main(["compare", str(a), str(b), "--out", str(tmp_path / "c.csv")])
    with pytest.raises(FileExistsError, match="differ in b"):
        evaluate.main(["compare", str(a), str(a), "--bootstrap", "50", "--out", str(tmp_path / "c.json")])
    (tmp_path / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by genrec"):
        evaluate.main(["compare", str(a), str(b), "--out", str(tmp_path / "notes.md")])
    assert (tmp_path / "notes.md").read_text() == "mine"
