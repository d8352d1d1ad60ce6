"""Recommendations out: predict_step + RecommendationWriter against ``recommend``, the CLI, and DDP shards."""
import os
import subprocess
import sys

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

import evaluate
from genrec.cli import main as train_main
from genrec.data import LoaderConfig, SequenceDataModule
from genrec.models import HSTU
from genrec.modules import RetrievalModule
from genrec.data.raw import DataError
from genrec.prediction import RecommendationWriter, read_user_ids, user_indices
from tests.helpers import REPO
from tests.modules.test_generative import module as generative_module
from tests.test_cli import tiny_args

N = 80


def datamodule(users=50, items=N, **options):
    options = {"num_users": users, "num_items": items, "num_interests": 5, "mean_length": 8, "seed": 0, **options}
    dm = SequenceDataModule(dataset="synthetic", dataset_options=options, max_seq_len=6, loader=LoaderConfig(eval_batch_size=16))
    dm.setup("predict")
    return dm


def retrieval(dm):
    torch.manual_seed(0)
    return RetrievalModule(HSTU(dim=8, max_seq_len=6, num_blocks=1, num_heads=2), num_items=dm.num_items).eval()


def predict(model, dm, path, fmt="parquet", k=5):
    model.predict_k = k
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[RecommendationWriter(str(path), fmt)])
    trainer.predict(model, datamodule=dm, return_predictions=False)
    return {"parquet": pd.read_parquet, "csv": pd.read_csv, "jsonl": lambda p: pd.read_json(p, lines=True)}[fmt](path)


def expected_lists(model, dm, k=5):
    """``recommend`` on every batch of the same loader, with the batch's exclusion."""
    out = {}
    for batch in dm.predict_dataloader():
        items, scores = model.recommend(batch, k, batch.get("exclude"))
        for u, i, s in zip(batch["user"].tolist(), items.tolist(), scores.tolist()):
            out[u] = ([x for x in i if x], [y for x, y in zip(i, s) if x])  # id 0: no candidate left
    return out


@pytest.mark.parametrize("on", ["test", "all"])
@pytest.mark.parametrize("family", ["retrieval", "generative"])
def test_written_lists_equal_recommend_on_the_same_batches(tmp_path, on, family):
    dm = datamodule(items=N if family == "retrieval" else 30)  # the small tokenizer has 20 codes, 30 items with its extra slot
    model = retrieval(dm) if family == "retrieval" else generative_module(N=dm.num_items).eval()
    if family == "generative":
        model.catalogue.key = dm.fingerprint  # its random catalogue vectors stand in for this data's item text
    dm.set_predict_request(on)
    table = predict(model, dm, tmp_path / "recs.parquet")
    expected = expected_lists(model, dm)
    users = dm.eval_users if on == "test" else np.arange(dm.data.num_users)
    assert sorted(expected) == users.tolist() and table["user"].is_monotonic_increasing
    for user, rows in table.groupby("user"):
        items, scores = expected[user]
        assert rows["position"].tolist() == list(range(1, len(items) + 1)) and len(items) >= 3
        assert rows["item"].tolist() == items
        assert rows["score"].to_numpy() == pytest.approx(np.array(scores, np.float32), abs=1e-6)
        assert rows["item_id"].tolist() == dm.data.item_ids[items].tolist()
        assert rows["user_id"].iloc[0] == dm.data.user_ids[user]
        data = dm.data
        end = data.offsets[user + 1] if on == "all" else dm.test_pos[np.searchsorted(dm.eval_users, user)]
        assert not set(items) & set(data.items[data.offsets[user]:end].tolist())  # the history is excluded


def test_full_histories_end_at_the_last_interaction():
    dm = datamodule()
    dm.set_predict_request("all", np.array([3, 1]))
    batch = next(iter(dm.predict_dataloader()))
    data = dm.data
    for row, user in enumerate(batch["user"].tolist()):
        seq = data.items[data.offsets[user]:data.offsets[user + 1]]
        n = int(batch["lengths"][row])
        assert batch["items"][row, :n].tolist() == seq[-n:].tolist() and "target" not in batch
        assert int(batch["query_time"][row]) == data.timestamps[data.offsets[user + 1] - 1]


def test_a_user_with_fewer_candidates_than_k_gets_a_shorter_list(tmp_path):
    dm = datamodule(mean_length=30, items=40)
    model = retrieval(dm)
    data = dm.data
    seen = np.array([len(set(data.sequence(u).tolist())) for u in range(data.num_users)])
    user = int(seen.argmax())
    assert seen[user] > dm.num_items - 5  # fewer than 5 candidates are left to this user
    dm.set_predict_request("all", np.array([user, 0]))
    table = predict(model, dm, tmp_path / "recs.parquet")
    assert (table["user"] == user).sum() == dm.num_items - seen[user] and (table["item"] > 0).all()
    assert (table["user"] == 0).sum() == min(5, dm.num_items - seen[0])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_other_formats_hold_the_same_table(tmp_path, fmt):
    dm = datamodule()
    model = retrieval(dm)
    parquet = predict(model, dm, tmp_path / "recs.parquet")
    other = predict(model, dm, tmp_path / f"recs.{fmt}", fmt)
    assert other[["user", "position", "item"]].equals(parquet[["user", "position", "item"]])
    assert other["score"].to_numpy() == pytest.approx(parquet["score"].to_numpy(), abs=1e-6)


def test_users_without_a_split_target_are_refused_on_that_split():
    dm = datamodule(min_length=1, mean_length=3)
    short = np.flatnonzero(dm.data.lengths < 3)
    assert len(short)
    dm.set_predict_request("test", short[:1])
    with pytest.raises(Exception, match="predict on 'all'"):
        dm.predict_dataloader()


def test_recommend_cli_with_a_users_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = train_main(tiny_args(tmp_path, net="genrec.models.SASRec"))
    ckpt = tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt"
    data = cli.datamodule.data
    b, a = sorted(np.argsort(data.lengths, kind="stable")[:2].tolist())  # short histories leave >= 4 candidates
    (tmp_path / "users.txt").write_text("\n".join(str(data.user_ids[u]) for u in (b, a, b)) + "\n")
    out = evaluate.main(["recommend", "--ckpt", str(ckpt), "--k", "4", "--on", "all", "--users", str(tmp_path / "users.txt"),
                         "--accelerator", "cpu", "--out", str(tmp_path / "recs.csv"), "--format", "csv"])
    table = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert table["user"].tolist() == [b] * 4 + [a] * 4 and table["position"].tolist() == [1, 2, 3, 4] * 2
    if data.item_text is not None and "title" in data.item_text:
        assert table["title"].tolist() == data.item_text["title"].to_numpy()[table["item"]].tolist()
    (tmp_path / "bad.txt").write_text("no-such-user\n")
    with pytest.raises(ValueError, match="1 user id\\(s\\) not in dataset"):
        evaluate.main(["recommend", "--ckpt", str(ckpt), "--users", str(tmp_path / "bad.txt"), "--accelerator", "cpu"])


def test_train_py_predict_writes_the_test_users_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = tiny_args(tmp_path, net="genrec.models.SASRec")
    cli = train_main(args)
    ckpt = str(tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt")
    args[0] = "predict"
    del args[args.index("--trainer.max_epochs"):args.index("--trainer.max_epochs") + 2]
    train_main(args + ["--ckpt_path", ckpt, "--trainer.callbacks+=genrec.prediction.RecommendationWriter",
                       "--trainer.callbacks.path", str(tmp_path / "recs.parquet"), "--trainer.callbacks.k", "3"])
    table = pd.read_parquet(tmp_path / "recs.parquet")
    assert table["user"].unique().tolist() == cli.datamodule.eval_users.tolist() and set(table["position"]) == {1, 2, 3}


@pytest.mark.slow
def test_two_process_recommendations_equal_one_process(tmp_path, monkeypatch):
    # 121 users over 2 ranks in batches of 20: shards of 61 and 60 users, merged by rank 0.
    monkeypatch.chdir(tmp_path)
    train_main(tiny_args(tmp_path, users=121) + ["--data.loader.eval_batch_size", "20"])
    ckpt = str(tmp_path / "runs" / "genrec" / "version_0" / "checkpoints" / "last.ckpt")
    tables = {}
    for devices in (1, 2):
        out = tmp_path / f"recs{devices}.parquet"
        proc = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "recommend", "--ckpt", ckpt, "--k", "10",
                               "--accelerator", "cpu", "--devices", str(devices), "--out", str(out)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        assert devices == 1 or "MEMBER: 2/2" in proc.stdout + proc.stderr  # two processes really ran
        tables[devices] = pd.read_parquet(out)
    assert tables[1]["user"].nunique() == 121 and not list(tmp_path.glob("*.npz"))
    pd.testing.assert_frame_equal(tables[1], tables[2])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("users.csv", "userId\nu1\n", "users.csv: no column 'user_id'; columns found: ['userId']"),
        ("users.csv", "", "users.csv is empty"),
        ("users.csv", "user_id\n", "users.csv holds no user ids"),
        ("users.txt", "", "users.txt holds no user ids"),
        ("users.txt", "\n  \n", "users.txt holds no user ids"),
        ("users.txt", b"u1\ncaf\xe9\n", "users.txt: line 2, byte 4 (0xe9) is not valid utf-8"),
        ("users.csv", "user_id,name\nu1,a\n,b\n", "users.csv: line 3: no user id"),
    ],
)
def test_a_bad_users_file_is_refused_naming_it_before_anything_loads(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as info:  # the checkpoint does not exist: the users file is read first
        evaluate.main(["recommend", "--ckpt", str(tmp_path / "missing.ckpt"), "--users", str(path)])
    assert str(info.value).startswith("--users ") and message in str(info.value)


def test_a_parquet_users_file_without_user_id_is_refused(tmp_path):
    pd.DataFrame({"user": ["u1"]}).to_parquet(tmp_path / "users.parquet")
    with pytest.raises(DataError, match=r"users.parquet: no column 'user_id'; columns found: \['user'\]"):
        read_user_ids(str(tmp_path / "users.parquet"))


def test_users_file_ids_take_the_datasets_canonical_form(tmp_path, capsys):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in ("NA", "7") for i in "abc"))
    data = SequenceDataModule(dataset="plain", root=str(tmp_path)).data
    (tmp_path / "users.txt").write_text("\ufeff 7\nNA\n7\n")  # with the byte-order mark an editor may write
    pd.DataFrame({"user_id": [7.0, 7.0]}).to_parquet(tmp_path / "users.parquet")
    (tmp_path / "users.csv").write_text("user_id\nNA\n")
    index = {u: i for i, u in enumerate(data.user_ids)}
    for name, expected in [("users.txt", ["7", "NA"]), ("users.parquet", ["7"]), ("users.csv", ["NA"])]:
        ids = read_user_ids(str(tmp_path / name))
        assert ids == expected and user_indices(ids, name, data).tolist() == [index[u] for u in expected]
    out = capsys.readouterr().out
    assert "users.txt: user_ids_stripped=1, listed_again=1" in out
    assert "users.parquet: user_ids_float_to_int=2, listed_again=1" in out


def test_an_empty_user_request_is_refused_as_empty():
    dm = datamodule()
    with pytest.raises(DataError, match="no users to predict for"):
        dm.set_predict_request("all", np.zeros(0, np.int64))


def test_a_baseline_recommends_the_lists_its_evaluation_ranks(tmp_path):
    """``recommend --baseline text`` lists what ``evaluate.py baseline`` scores: a test target is in a
    user's top 10 exactly as often as the report's HR@10 says; ``--ckpt`` and ``--baseline`` exclude each other."""
    rng = np.random.default_rng(0)
    words = ["red", "blue", "green", "lamp", "desk", "chair", "pen", "paper", "tape", "stapler", "ink", "folder"]
    root = tmp_path / "shop"
    root.mkdir()
    pd.DataFrame({"item_id": [f"i{i}" for i in range(40)],
                  "title": [" ".join(rng.choice(words, 3)) for _ in range(40)]}).to_json(root / "items.jsonl", orient="records", lines=True)
    # no repeats: a seen item is never recommended, while evaluation may rank a target seen before
    rows = [(f"u{u}", f"i{i}", t) for u in range(60) for t, i in enumerate(rng.choice(40, int(rng.integers(4, 9)), replace=False))]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(root / "interactions.csv", index=False)
    data = ["--data.dataset", "plain", "--data.root", str(root), "--data.cache_dir", str(tmp_path / "cache")]
    dm = SequenceDataModule(dataset="plain", root=str(root), cache_dir=str(tmp_path / "cache"))
    dm.setup("test")
    targets = {str(dm.data.user_ids[u]): str(dm.data.item_ids[dm.data.items[p]]) for u, p in zip(dm.eval_users, dm.test_pos)}
    for space in ([], ["--whiten", "0.5"]):  # the scorer's options reach recommend as they reach the report
        report = evaluate.main(["baseline", "--out", str(tmp_path / f"report{len(space)}"), "--bootstrap", "0",
                                "--template", "{title}", *space] + data)
        out = evaluate.main(["recommend", "--baseline", "text", "--template", "{title}", "--k", "10", "--on", "test",
                             *space, "--out", str(tmp_path / f"recs{len(space)}.csv")] + data)
        recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
        hits = [targets[user] in set(group["item_id"]) for user, group in recs.groupby("user_id")]
        assert len(hits) == len(targets) and recs.groupby("user_id").size().eq(10).all()
        assert np.mean(hits) == pytest.approx(report["metrics"]["text"]["hr@10"], abs=1e-4)
    popular = evaluate.main(["recommend", "--baseline", "popularity", "--k", "3", "--out", str(tmp_path / "pop.csv")] + data)
    assert len(pd.read_csv(popular)) == 3 * len(targets)
    with pytest.raises(ValueError, match="one of --ckpt"):
        evaluate.main(["recommend", "--baseline", "text", "--ckpt", "x.ckpt"] + data)
