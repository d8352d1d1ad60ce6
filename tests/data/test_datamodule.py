import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec import digests
from genrec.data import DataError, LoaderConfig, PreprocessConfig, SequenceDataModule, get_source, preprocess
from genrec.data.datamodule import VERIFIED_RECORD
from tests.helpers import wait_until_past


def write_plain(folder, rows, header="user_id,item_id,timestamp"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return folder


@pytest.fixture
def tiny(tmp_path):
    # user a: 5 items; b: 3 items with a timestamp tie (file order must win); c: 2 items (not evaluated)
    rows = [("a", 10, 1), ("a", 11, 2), ("b", 12, 5), ("a", 12, 3), ("b", 10, 5), ("a", 13, 4),
            ("a", 14, 5), ("b", 13, 6), ("c", 10, 1), ("c", 11, 2)]
    return write_plain(tmp_path / "tiny", rows)


def make(root, **kw):
    dm = SequenceDataModule(dataset="plain", root=str(root), **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def raw(dm, ids):
    return [dm.data.item_ids[i] for i in ids]


def make_verified(root):
    """A cached load after which every input and cache file is recorded as verified (their stamps
    no longer racy), so that a later load trusts them until their stamps change."""
    dm = make(root)
    wait_until_past(*root.iterdir(), *dm.cache_folder.iterdir())
    dm = make(root)
    record = json.loads((dm.cache_folder.parent / VERIFIED_RECORD).read_text())["files"]
    paths = [root / "interactions.csv", *(dm.cache_folder / name for name in json.loads(
        (dm.cache_folder / "meta.json").read_text())["files"])]
    assert {str(p.absolute()) for p in paths} <= set(record)
    return dm


@pytest.fixture
def hashed(monkeypatch):
    """The names of the files ``digests.file_digest`` reads."""
    read = []
    real = digests.file_digest
    monkeypatch.setattr(digests, "file_digest", lambda path: read.append(path.name) or real(path))
    return read


def test_split_and_stable_sort(tiny):
    dm = make(tiny, max_seq_len=10, loader=LoaderConfig(batch_size=8))
    assert dm.num_items == 5 and dm.data.num_users == 3
    users = list(dm.data.user_ids)
    b = users.index("b")
    assert raw(dm, dm.data.sequence(b)) == ["12", "10", "13"]  # tie at t=5 keeps file order
    vb = next(iter(dm.val_dataloader()))
    tb = next(iter(dm.test_dataloader()))
    a = users.index("a")
    row = vb["user"].tolist().index(a)
    assert raw(dm, [vb["target"][row].item()]) == ["13"]
    assert raw(dm, vb["items"][row, : vb["lengths"][row]].tolist()) == ["10", "11", "12"]
    row = tb["user"].tolist().index(a)
    assert raw(dm, [tb["target"][row].item()]) == ["14"]
    assert raw(dm, tb["items"][row, : tb["lengths"][row]].tolist()) == ["10", "11", "12", "13"]
    assert users.index("c") not in vb["user"].tolist()  # fewer than 3 interactions: train only
    assert dm.data.counts["users_not_evaluated_lt3"] == 1


def test_batches_carry_the_time_of_the_predicted_interaction(tiny):
    # user a: 10@1 11@2 12@3 13@4 14@5; training predicts up to 12, validation 13, test 14
    dm = make(tiny, max_seq_len=10, loader=LoaderConfig(batch_size=8))
    a = list(dm.data.user_ids).index("a")
    for loader, expected in [(dm.train_dataloader(), 3), (dm.val_dataloader(), 4), (dm.test_dataloader(), 5)]:
        batch = next(iter(loader))
        assert batch["query_time"][batch["user"].tolist().index(a)].item() == expected
        assert batch["query_time"].shape == batch["lengths"].shape


def test_no_leakage_of_eval_targets_into_training(tmp_path):
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 200, "num_items": 150, "seed": 3},
                            max_seq_len=8, loader=LoaderConfig(train_windows="all", batch_size=16))
    dm.prepare_data()
    dm.setup("fit")
    data = dm.data
    val_pos = dict(zip(dm.eval_users.tolist(), dm.val_pos.tolist()))
    checked = 0
    for batch in dm.train_dataloader():
        for r, u in enumerate(batch["user"].tolist()):
            n = batch["lengths"][r].item()
            seen = set(batch["items"][r, :n].tolist() + batch["targets"][r, :n].tolist())
            # Synthetic users never repeat an item, so held-out ids must not occur in training at all.
            held_out = {int(data.items[val_pos[u]]), int(data.items[val_pos[u] + 1])}
            assert not (seen & held_out)
            assert seen <= set(data.items[data.offsets[u]: val_pos[u]].tolist())
            checked += 1
    assert checked >= 200


def test_fit_on_validation_trains_on_the_validation_target_but_never_the_test_target(tiny):
    dm = make(tiny, max_seq_len=10, loader=LoaderConfig(batch_size=8), fit_on_validation=True)
    a = list(dm.data.user_ids).index("a")
    batch = next(iter(dm.train_dataloader()))
    row = batch["user"].tolist().index(a)
    n = batch["lengths"][row].item()
    assert raw(dm, batch["targets"][row, :n].tolist()) == ["11", "12", "13"]  # 13 = a's validation target
    tb = next(iter(dm.test_dataloader()))
    assert raw(dm, [tb["target"][tb["user"].tolist().index(a)].item()]) == ["14"]  # test target held out
    plain = make(tiny, max_seq_len=10, loader=LoaderConfig(batch_size=8))
    batch = next(iter(plain.train_dataloader()))
    row = batch["user"].tolist().index(a)
    assert raw(plain, batch["targets"][row, : batch["lengths"][row].item()].tolist()) == ["11", "12"]


def test_all_windows_cover_every_training_target_once(tmp_path):
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 50, "num_items": 100, "seed": 1},
                            max_seq_len=7, loader=LoaderConfig(train_windows="all", batch_size=1000))
    dm.prepare_data()
    dm.setup("fit")
    data = dm.data
    covered = {}
    for batch in dm.train_dataloader():
        for r, u in enumerate(batch["user"].tolist()):
            n = batch["lengths"][r].item()
            assert n <= 7
            covered.setdefault(u, []).extend(batch["targets"][r, :n].tolist())
    for u in range(data.num_users):
        expected = data.items[data.offsets[u] + 1: dm.train_end[u]].tolist()
        assert sorted(covered.get(u, [])) == sorted(expected)


def test_the_last_window_of_each_user_is_the_most_recent_window_that_all_windows_tile(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", int(i), t) for u in range(40) for t, i in enumerate(rng.integers(1, 30, rng.integers(1, 25)))]
    dm = make(write_plain(tmp_path / "p", rows), max_seq_len=6, loader=LoaderConfig(train_windows="all"))
    from genrec.data.datamodule import TrainWindows

    last = TrainWindows(dm.data, dm.train_end, 6, "last")
    tiled = dm.train_set
    most_recent = {}
    for u, s, e in zip(tiled.users, tiled.starts, tiled.ends):
        most_recent.setdefault(int(u), (int(s), int(e)))  # tiling starts from the end
    assert list(map(int, last.users)) == sorted(most_recent) and len(last) == len(most_recent) > 10
    assert [(int(s), int(e)) for s, e in zip(last.starts, last.ends)] == [most_recent[u] for u in sorted(most_recent)]


def test_stochastic_length_cuts_long_windows_to_ordered_subsets_at_the_papers_rate():
    N, alpha = 16, 1.5
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 400, "num_items": 300, "seed": 2},
                            max_seq_len=N, loader=LoaderConfig(batch_size=1000, stochastic_length=alpha))
    dm.prepare_data()
    dm.setup("fit")
    data, m = dm.data, int(N ** (alpha / 2))  # 8
    windows = {u: data.items[max(data.offsets[u], dm.train_end[u] - N - 1): dm.train_end[u]]
               for u in range(data.num_users)}
    torch.manual_seed(0)
    cut = expected = long = 0
    for batch in dm.train_dataloader():
        for r, u in enumerate(batch["user"].tolist()):
            n, full = batch["lengths"][r].item(), windows[u]
            seq = batch["items"][r, :n].tolist() + [batch["targets"][r, n - 1].item()]
            assert batch["targets"][r, : n - 1].tolist() == seq[1 : n]  # targets are the next kept items
            it = iter(full.tolist())
            assert all(x in it for x in seq)  # an ordered subsequence of the whole window
            if len(full) - 1 > m:
                long += 1
                if n < len(full) - 1:
                    assert n == m
                    cut += 1
                expected += 1 - N**alpha / (len(full) - 1) ** 2
            else:
                assert seq == full.tolist()  # short windows are never cut
    assert long > 300 and abs(cut - expected) < 4 * expected**0.5
    # evaluation sees whole windows
    assert next(iter(dm.test_dataloader()))["lengths"].max().item() == N
    with pytest.raises(DataError, match="data.loader.stochastic_length"):
        LoaderConfig(stochastic_length=2.5)


def test_last_window_keeps_most_recent_items_and_pads_right(tiny):
    dm = make(tiny, max_seq_len=2, loader=LoaderConfig(batch_size=8))
    batch = next(iter(dm.train_dataloader()))
    a = list(dm.data.user_ids).index("a")
    row = batch["user"].tolist().index(a)
    # training part of a = 10 11 12 -> window of max_seq_len + 1 = 3 items
    assert raw(dm, batch["items"][row, :2].tolist()) == ["10", "11"]
    assert raw(dm, batch["targets"][row, :2].tolist()) == ["11", "12"]
    assert batch["items"].shape[1] == 2
    assert (batch["items"][batch["targets"] == 0] == 0).all()


def test_history_exclusion_options(tiny):
    for exclude, expect in [("history", ["10", "11", "12", "13"]), ("window", ["12", "13"]), ("none", None)]:
        dm = make(tiny, max_seq_len=2, exclude=exclude)
        tb = next(iter(dm.test_dataloader()))
        a = list(dm.data.user_ids).index("a")
        row = tb["user"].tolist().index(a)
        if expect is None:
            assert "exclude" not in tb
        else:
            got = [i for i in tb["exclude"][row].tolist() if i]
            assert raw(dm, got) == expect


def test_second_run_hits_the_cache(tiny, monkeypatch):
    make(tiny)
    from genrec.data import sources

    def boom(self):
        raise AssertionError("source read again despite a cache")

    dm = SequenceDataModule(dataset="plain", root=str(tiny))
    monkeypatch.setattr(type(dm.source), "load", boom)
    assert dm.num_items == 5


def test_cache_is_invalidated_when_the_file_changes(tiny):
    assert make(tiny).num_items == 5
    with open(tiny / "interactions.csv", "a") as f:
        f.write("d,99,1\nd,98,2\nd,97,3\n")
    assert make(tiny).num_items == 8


def test_a_cached_load_hashes_only_files_whose_stamp_changed_unless_told_to_verify_in_full(tiny, hashed):
    folder = make_verified(tiny).cache_folder
    hashed.clear()
    assert make(tiny).num_items == 5 and hashed == []
    assert make(tiny, preprocess=PreprocessConfig(verify_cache="full")).num_items == 5
    cache_files = json.loads((folder / "meta.json").read_text())["files"]
    assert sorted(hashed) == sorted(["interactions.csv", *cache_files])
    with pytest.raises(DataError, match="data.preprocess.verify_cache must be one of"):
        PreprocessConfig(verify_cache="sometimes")


def test_a_file_rewritten_with_the_same_size_and_mtime_is_not_served_from_the_cache(tiny, hashed):
    path = tiny / "interactions.csv"
    make_verified(tiny)
    before = path.stat()
    path.write_text(path.read_text().replace("a,14,5", "a,15,5"))  # same length: only the bytes differ
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    hashed.clear()
    dm = make(tiny)
    assert raw(dm, dm.data.sequence(list(dm.data.user_ids).index("a")))[-1] == "15"
    assert hashed[0] == "interactions.csv"  # its stamp changed (ctime): hashed again, not trusted


def test_the_cache_is_checked_while_the_inputs_are_hashed(tiny, monkeypatch):
    """Both read every byte (inputs, cache files); one after the other they were a third of a cached
    load at 20M interactions."""
    from genrec.data import datamodule, preprocess

    folder = make(tiny).cache_folder
    checking = threading.Event()
    check = preprocess.check

    def check_and_signal(*args):
        checking.set()
        return check(*args)

    source_type = type(SequenceDataModule(dataset="plain", root=str(tiny)).source)
    fingerprint = source_type.fingerprint

    def fingerprint_once_checking(self, *args):
        assert checking.wait(timeout=10), "the cache's check did not start while the inputs were hashed"
        return fingerprint(self, *args)

    monkeypatch.setattr(preprocess, "check", check_and_signal)
    monkeypatch.setattr(source_type, "fingerprint", fingerprint_once_checking)
    source = get_source("plain", root=str(tiny))
    data = datamodule.load_sequences(source)
    assert preprocess.mapped_file(data.items).parent == folder and data.num_interactions == 10


def test_the_newest_cache_of_other_inputs_is_neither_served_nor_reported(tiny, caplog):
    path = tiny / "interactions.csv"
    first = path.read_text()
    old = make(tiny).cache_folder
    path.write_text(first.replace("a,14,5", "a,15,5"))
    newer = make(tiny).cache_folder  # the newest cache: the one checked while the inputs are hashed
    assert newer != old
    path.write_text(first)
    for damaged in (False, True):
        if damaged:
            _truncate(newer / "items.npy")
            (newer / "meta.json").touch()  # still the newest
        with caplog.at_level(logging.WARNING, logger="genrec.data.preprocess"):
            again = make(tiny)
        assert preprocess.mapped_file(again.data.items).parent == old
        assert raw(again, again.data.sequence(list(again.data.user_ids).index("a")))[-1] == "14"
    assert "rebuilding" not in caplog.text


@pytest.mark.parametrize("reader", ["engine", "pandas"])
def test_a_file_changing_while_it_is_read_is_an_error_and_nothing_is_cached(tiny, monkeypatch, reader):
    from genrec.data import engine

    dm = SequenceDataModule(dataset="plain", root=str(tiny))
    owner, name = (engine, "read_csv") if reader == "engine" else (type(dm.source), "load")
    read = getattr(owner, name)

    def read_then_append(*args, **kwargs):
        out = read(*args, **kwargs)
        with open(tiny / "interactions.csv", "a") as f:
            f.write("d,99,9\n")
        return out

    monkeypatch.setattr(owner, name, read_then_append)
    if reader == "pandas":
        monkeypatch.setattr(type(dm.source), "engine_scan", lambda source: None)
    with pytest.raises(DataError, match=r"interactions.csv.* changed while being read.*run again"):
        dm.prepare_data()
    left = list(dm.cache_folder.parent.iterdir()) if dm.cache_folder.parent.exists() else []
    assert [p.name for p in left if p.name != VERIFIED_RECORD] == []  # the record of verified stamps is no cache


def _flip_an_item(folder):
    """Change one item id inside the items file in place (same size): another sequence, same shape."""
    arrow = folder / "items.npy"
    blob = bytearray(arrow.read_bytes())
    items = np.array([1, 2, 3, 4, 5], np.int64).tobytes()  # user a's sequence
    at = bytes(blob).index(items)
    blob[at : at + 8] = np.array([2], np.int64).tobytes()
    arrow.write_bytes(bytes(blob))
    return arrow


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


CACHE_DAMAGE = {
    "item changed in place": _flip_an_item,
    "sequences cut short": lambda folder: _truncate(folder / "items.npy"),
    "offsets cut short": lambda folder: _truncate(folder / "offsets.npy"),
    "item id map cut short": lambda folder: _truncate(folder / "item_ids.parquet"),
    "meta.json cut short": lambda folder: _truncate(folder / "meta.json"),
    "meta.json counts edited": lambda folder: (folder / "meta.json").write_text(
        (folder / "meta.json").read_text().replace('"interactions": 10', '"interactions": 11')) and folder / "meta.json",
    "user id map deleted": lambda folder: (folder / "user_ids.parquet").unlink() or folder / "user_ids.parquet",
}


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=list(CACHE_DAMAGE))
def test_a_damaged_preprocessing_cache_is_rebuilt_with_a_warning_naming_the_file(tiny, damage, caplog):
    good = make_verified(tiny)  # then damage changes a trusted file's stamp
    # copies: ``good`` maps the files about to be damaged, and a mapped file cut short faults on access
    items, offsets = np.array(good.data.items), np.array(good.data.offsets)
    damaged = CACHE_DAMAGE[damage](good.cache_folder)
    with caplog.at_level(logging.WARNING, logger="genrec.data.preprocess"):
        again = make(tiny)
    assert np.array_equal(again.data.items, items) and np.array_equal(again.data.offsets, offsets)
    assert list(again.data.item_ids) == list(good.data.item_ids) and again.data.counts == good.data.counts
    assert str(damaged) in caplog.text and "rebuilding" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genrec.data.preprocess"):
        assert np.array_equal(make(tiny).data.items, items)
    assert "rebuilding" not in caplog.text  # the rebuilt cache replaced the damaged one


def test_max_seq_len_below_two_is_refused(tiny):
    with pytest.raises(DataError, match="max_seq_len"):
        SequenceDataModule(dataset="plain", root=str(tiny), max_seq_len=1)


def test_unknown_dataset_is_refused():
    with pytest.raises(DataError, match="unknown dataset 'nope'.*synthetic"):
        SequenceDataModule(dataset="nope")


def test_empty_after_kcore_names_the_options(tiny):
    dm = SequenceDataModule(dataset="plain", root=str(tiny), preprocess=PreprocessConfig(min_user_interactions=50))
    with pytest.raises(DataError, match="empty after k-core.*data.preprocess.min_user_interactions"):
        dm.prepare_data()


def test_kcore_counts_what_it_removes(tiny):
    dm = make(tiny, preprocess=PreprocessConfig(min_user_interactions=3))
    c = dm.data.counts
    assert c["users_removed_by_kcore"] == 1 and c["rows_removed_by_kcore"] == 2
    assert c["interactions"] == 8


def test_popularity_counts_use_training_part_only(tiny):
    dm = make(tiny)
    counts = dm.train_item_counts()
    # a trains on 10 11 12, b on 12, c on 10 11
    expected = {"10": 2, "11": 2, "12": 2, "13": 0, "14": 0}
    assert {dm.data.item_ids[i]: int(counts[i]) for i in range(1, 6)} == expected


def test_ml1m_through_the_datamodule():
    from tests.conftest import shared_data

    dm = SequenceDataModule(dataset="ml-1m", root=str(shared_data("ml-1m")), max_seq_len=200)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.data.num_users, dm.data.num_items, dm.data.num_interactions) == (6040, 3706, 1_000_209)
    assert len(dm.val_set) == len(dm.test_set) == 6040
    assert len(dm.train_set) == 6040
    batch = next(iter(dm.train_dataloader()))
    assert batch["items"].shape[1] <= 200


def test_unwritable_cache_fails_before_reading_and_names_the_fixes(tmp_path, monkeypatch):
    # a file where the cache folder should be: unwritable even for root
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "not-a-folder" / "cache"))
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 50, "num_items": 80, "seed": 0})
    reads = []
    read_raw = dm.source.load
    dm.source.load = lambda: reads.append(1) or read_raw()
    with pytest.raises(DataError, match=r"cannot write the preprocessing cache .*not-a-folder.*GENREC_CACHE.*data.preprocess.use_cache: false"):
        dm.prepare_data()
    assert reads == []  # refused before the raw files were read
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 50, "num_items": 80, "seed": 0},
                            preprocess=PreprocessConfig(use_cache=False))
    assert dm.data.num_users == 50


def test_a_cache_write_failing_midway_is_a_data_error(tmp_path, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(preprocess, "write", disk_full)
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 50, "num_items": 80, "seed": 0})
    with pytest.raises(DataError, match=r"No space left on device.*data.preprocess.use_cache: false"):
        dm.prepare_data()


def test_every_filtered_count_is_logged_the_readers_included(tmp_path, caplog):
    # movies.dat lists an unrated movie (30) and repeats one (20): ML-1M has 177 of the first kind
    (tmp_path / "ratings.dat").write_text("".join(f"{u}::{i}::5::{u * 10 + i}\n" for u in (1, 2) for i in (10, 20, 40)))
    (tmp_path / "movies.dat").write_text("10::A::G\n20::B::G\n20::B again::G\n30::Unrated::G\n40::D::G\n")
    with caplog.at_level(logging.INFO):
        dm = SequenceDataModule(dataset="ml-1m", root=str(tmp_path))
        dm.prepare_data()
    line = next(r.getMessage() for r in caplog.records if "filtered:" in r.getMessage())
    assert "item_text_unknown_ids=1" in line and "item_text_duplicate_ids=1" in line
    assert "users_not_evaluated_lt3=0" in line and "rows_read" not in line
    assert dm.data.counts["item_text_unknown_ids"] == 1


def test_ids_the_readers_rewrote_are_counted_in_the_log(tmp_path, caplog):
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu, a\nu,a\nu,b\n")
    with caplog.at_level(logging.INFO):
        dm = SequenceDataModule(dataset="plain", root=str(tmp_path))
        dm.prepare_data()
    line = next(r.getMessage() for r in caplog.records if "filtered:" in r.getMessage())
    assert "item_ids_stripped=1" in line and dm.data.num_items == 2


def test_preprocessing_options_are_one_group_that_overrides_merge_into():
    from genrec.data.datamodule import rebuild_options

    out = rebuild_options(SequenceDataModule, {"dataset": "synthetic", "preprocess": {"use_cache": False}},
                          {"preprocess.verify_cache": "full", "loader.batch_size": 7})
    assert out["preprocess"] == PreprocessConfig(use_cache=False, verify_cache="full") and out["loader"].batch_size == 7
    assert "use_cache" not in out
    with pytest.raises(ValueError, match=r"preprocess.budget"):
        rebuild_options(SequenceDataModule, {}, {"preprocess.budget": "1GB"})
    with pytest.raises(DataError, match=r"'lots'.*data.preprocess.memory"):
        rebuild_options(SequenceDataModule, {}, {"preprocess": {"memory": "lots"}})


def test_item_text_datasets_keep_their_k_core_keys(monkeypatch, tmp_path):
    """``data.datasets`` entries of the tokenizer's data module spell k-core as a domain does; they
    reach the sequence module's ``preprocess``."""
    from genrec.data import item_text

    monkeypatch.setattr(item_text, "embed_texts", lambda texts, *a, **k: np.zeros((len(texts), 4), np.float32))
    options = {"num_users": 60, "num_items": 80, "seed": 0}
    spec = {"dataset": "synthetic", "dataset_options": options, "min_item_interactions": 40}
    embeddings = item_text.ItemTextDataModule(datasets=[spec])._load()
    filtered = SequenceDataModule(dataset="synthetic", dataset_options=options,
                                  preprocess=PreprocessConfig(min_item_interactions=40)).data
    assert len(embeddings) == filtered.num_items < 80
