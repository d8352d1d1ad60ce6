"""The out-of-core preprocessing engine: the files it reads itself, the ones it leaves to the readers,
its memory budget, and the memory-mapped sequences it leaves behind."""
import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genrec.data import DataError, PreprocessConfig, SequenceDataModule, engine, get_source, preprocess
from genrec.data.datamodule import load_sequences
from tests.conftest import REPO
from tests.data.test_sources import BEFORE_CANONICAL_IDS, digest, shared_data

sys.path.insert(0, str(REPO / "benchmarks"))
import data_scale  # noqa: E402


def both_paths(source, monkeypatch, **kcore):
    """The sequences from the engine reading the file itself, and from the pandas readers; and
    whether the engine did read it."""
    read = []
    real = engine.read

    def spy(*args):
        result = real(*args)
        read.append(result is not None)
        return result

    monkeypatch.setattr(engine, "read", spy)
    native = preprocess.build_sequences(source, **kcore)
    monkeypatch.setattr(type(source), "engine_scan", lambda self: None)
    via_pandas = preprocess.build_sequences(source, **kcore)
    monkeypatch.undo()
    return native, via_pandas, read == [True]


def assert_same(a, b):
    for name in ("offsets", "items", "timestamps"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype == np.int64 and np.array_equal(x, y), name
    assert list(a.user_ids) == list(b.user_ids) and list(a.item_ids) == list(b.item_ids)
    assert a.counts == b.counts and a.has_timestamps == b.has_timestamps
    assert (a.item_text is None) == (b.item_text is None)
    if a.item_text is not None:
        assert a.item_text.equals(b.item_text)


@pytest.mark.parametrize("kcore", [{}, {"min_user_interactions": 125, "min_item_interactions": 45}])
def test_the_engine_reads_an_ml20m_log_itself_and_gives_what_the_readers_give(tmp_path, monkeypatch, kcore):
    data_scale.write_ml20m(tmp_path, 20_000)
    native, via_pandas, engine_read = both_paths(get_source("ml-20m", root=str(tmp_path)), monkeypatch, **kcore)
    assert engine_read
    assert_same(native, via_pandas)
    if kcore:
        assert native.counts["rows_removed_by_kcore"] > 0 and native.counts["items_removed_by_kcore"] > 0


@pytest.mark.parametrize("kcore, copies", [({}, ["raw"]), ({"min_user_interactions": 125}, ["kept", "raw"])])
def test_the_engine_holds_the_log_once_in_memory_and_copies_it_only_to_filter(tmp_path, monkeypatch, kcore, copies):
    """Each copy of the log inside the engine cost a full pass over it (the cold time at 20M doubled);
    a database file wrote every table to disk besides."""
    data_scale.write_ml20m(tmp_path, 20_000)
    tables = []
    real = engine.build

    def spy(con, *args):
        real(con, *args)
        tables.extend(con.execute("SELECT database_name, table_name, estimated_size FROM duckdb_tables()").fetchall())

    monkeypatch.setattr(engine, "build", spy)
    data = preprocess.build_sequences(get_source("ml-20m", root=str(tmp_path)), **kcore)
    assert {database for database, _, _ in tables} == {"memory"}
    assert sorted(name for _, name, size in tables if size >= data.num_interactions) == copies


def write_plain(folder: Path, body: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "interactions.csv").write_bytes(body)
    return folder


PLAIN = b"user_id,item_id,timestamp\nu2,b,5\nu1,a,3\nu1,10,3\nu2,9,1\nu1,b,2\n"
# Files the engine leaves to the readers: each reads differently in DuckDB than in pandas, or is an
# error only the readers can place on its line.
LEFT_TO_THE_READERS = {
    "an id with spaces around it": (b"user_id,item_id,timestamp\nu1, a,1\nu1,b,2\n", None),
    "a non-breaking space": ("user_id,item_id,timestamp\nu1,a\u00a0,1\nu1,b,2\n".encode(), None),
    "a fractional time": (b"user_id,item_id,timestamp\nu1,a,1.5\nu1,b,1.25\n", None),
    "a header with spaces": (b"user_id, item_id\nu1,a\nu1,b\n", None),
    "a byte-order mark": (b"\xef\xbb\xbfuser_id,item_id\nu1,a\nu1,b\n", None),
    "trailing blank lines": (b"user_id,item_id\nu1,a\nu1,b\n\n\n", None),
    "a quoted field over two lines": (b'user_id,item_id\nu1,"a\nb"\nu1,c\n', None),
    "a blank line inside": (b"user_id,item_id\nu1,a\n\nu1,b\n", r"line 3: no value for 'user'"),
    "a repeated header": (b"user_id,item_id\nu1,a\nuser_id,item_id\n", r"line 3 repeats the header"),
    "a short row": (b"user_id,item_id,timestamp\nu1,a,1\nu1,b\n", r"line 3: no value for 'timestamp'"),
    "a long row": (b"user_id,item_id\nu1,a\nu1,b,c\n", r"line 3 has 3 fields, expected 2"),
    "a missing id": (b"user_id,item_id\nu1,a\n,b\n", r"line 3: no value for 'user'"),
    "a time that is text": (b"user_id,item_id,timestamp\nu1,a,1\nu1,b,soon\n", r"line 3: timestamp 'soon' is not a number"),
    "bad UTF-8": (b"user_id,item_id\nu1,a\nu1,\xff\n", r"line 3, byte 4 \(0xff\) is not valid utf-8"),
}


def test_a_plain_csv_is_read_by_the_engine_with_the_readers_rules(tmp_path, monkeypatch):
    native, via_pandas, engine_read = both_paths(get_source("plain", root=str(write_plain(tmp_path, PLAIN))), monkeypatch)
    assert engine_read
    assert_same(native, via_pandas)
    no_times = write_plain(tmp_path / "no-times", b"user_id,item_id,rating\nu1,a,1\nu1,b,2\n")
    untimed, untimed_pandas, engine_read = both_paths(get_source("plain", root=str(no_times)), monkeypatch)
    assert engine_read and not untimed.has_timestamps
    assert_same(untimed, untimed_pandas)
    assert list(native.item_ids) == ["<pad>", "10", "9", "a", "b"]  # not all numeric: as strings
    assert list(native.user_ids) == ["u2", "u1"] and list(native.items) == [2, 4, 4, 3, 1]  # by time, ties in file order


@pytest.mark.parametrize("case", LEFT_TO_THE_READERS, ids=list(LEFT_TO_THE_READERS))
def test_files_the_engine_cannot_read_as_the_readers_do_are_left_to_them(tmp_path, monkeypatch, case):
    body, error = LEFT_TO_THE_READERS[case]
    source = get_source("plain", root=str(write_plain(tmp_path, body)))
    if error:
        with pytest.raises(DataError, match=error):
            preprocess.build_sequences(source)
        return
    import duckdb

    assert engine.read_csv(duckdb.connect(), source.engine_scan().path, {"user_id": "u", "item_id": "i"},
                           {"timestamp": "t"}) is None
    native, via_pandas, _ = both_paths(source, monkeypatch)
    assert_same(native, via_pandas)


def test_a_memory_budget_that_is_not_a_size_is_refused_naming_the_option(tmp_path, monkeypatch):
    source = get_source("plain", root=str(write_plain(tmp_path, PLAIN)))
    with pytest.raises(DataError, match=r"'lots'.*data.preprocess.memory"):
        SequenceDataModule(dataset="plain", root=str(tmp_path), preprocess=PreprocessConfig(memory="lots"))
    with pytest.raises(DataError, match=r"'lots'.*data.preprocess.memory"):
        preprocess.build_sequences(source, memory_limit="lots")
    dm = SequenceDataModule(dataset="plain", root=str(tmp_path), cache_dir=str(tmp_path / "c"),
                            preprocess=PreprocessConfig(memory="32MB"))
    assert dm.data.num_interactions == 5
    monkeypatch.setenv(engine.MEMORY_LIMIT_ENV, "64MB")
    assert engine.memory_limit() == "64MB"
    assert preprocess.build_sequences(source).num_interactions == 5


def test_a_loaded_cache_maps_its_sequences_and_setup_copies_none_of_them(tmp_path):
    data_scale.write_ml20m(tmp_path / "ml", 5_000)
    dm = SequenceDataModule(dataset="ml-20m", root=str(tmp_path / "ml"), cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    again = SequenceDataModule(dataset="ml-20m", root=str(tmp_path / "ml"), cache_dir=str(tmp_path / "cache"))
    again.setup("fit")  # a cache hit, as every DDP rank but the first
    for dm_ in (dm, again):
        for name in engine.ARRAYS:
            array = getattr(dm_.data, name)
            assert type(array) is np.ndarray and not array.flags.writeable, name  # np.memmap indexes slowly
            assert preprocess.mapped_file(array) == dm_.cache_folder / f"{name}.npy"
        assert dm_.collator.items is dm_.data.items and dm_.collator.timestamps is dm_.data.timestamps
    batch = next(iter(again.train_dataloader()))
    assert batch["items"].dtype.is_floating_point is False and batch["items"].shape[0] > 0


def test_a_cached_load_reads_the_user_ids_only_when_asked_even_after_the_cache_is_replaced(tmp_path, monkeypatch):
    """At 100M interactions the user ids as Python strings were a quarter of what a cached load added."""
    import shutil

    data_scale.write_ml20m(tmp_path / "ml", 5_000)
    options = dict(dataset="ml-20m", root=str(tmp_path / "ml"), cache_dir=str(tmp_path / "cache"))
    SequenceDataModule(**options).setup("fit")
    expected = list(pd.read_csv(tmp_path / "ml" / "ratings.csv", dtype=str)["userId"].drop_duplicates())
    read = []
    real = preprocess.pq.read_table
    monkeypatch.setattr(preprocess.pq, "read_table", lambda source, **kw: read.append(kw.get("columns")) or real(source, **kw))
    dm = SequenceDataModule(**options)
    dm.setup("fit")
    next(iter(dm.train_dataloader()))
    assert ["user_id"] not in read
    shutil.rmtree(dm.cache_folder)  # as a rebuild by another process renames it away and deletes it
    assert list(dm.data.user_ids) == expected and read.count(["user_id"]) == 1
    assert dm.data.user_ids is dm.data.user_ids  # read once, then kept
    assert list(pickle.loads(pickle.dumps(SequenceDataModule(**options).data)).user_ids) == expected


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, options, expected", BEFORE_CANONICAL_IDS)
def test_real_datasets_through_the_engine_and_its_cache_give_the_same_sequences_and_id_maps(
    tmp_path, monkeypatch, name, folder, options, expected
):
    """The whole path a training run takes (the engine reading ML-1M's ``::`` file, ML-100K's
    tab-separated one and the plain CSV files itself, the cache written, then mapped) against the
    digests the README's tables were measured on."""
    source = get_source(name, root=str(shared_data(folder)), cache_dir=str(tmp_path), **options)
    returned = []
    real = engine.read
    monkeypatch.setattr(engine, "read", lambda con, scan: returned.append(real(con, scan)) or returned[-1])
    load_sequences(source)
    assert [read is not None for read in returned] == ([] if name == "s3rec" else [True])  # S3-Rec lines: its reader
    data = load_sequences(source)
    assert preprocess.mapped_file(data.items) is not None
    text = None if data.item_text is None else digest(
        *[data.item_text[c].astype(str).tolist() for c in data.item_text.columns], list(data.item_text.columns))
    found = [digest(data.offsets, data.items, data.timestamps), digest(list(data.user_ids)), digest(list(data.item_ids)), text]
    assert " ".join(map(str, found)) == expected


def test_a_folder_in_the_sequence_format_loads_as_dataset_sequences_and_is_never_rebuilt(tmp_path):
    """What any engine writes (here the one-machine path; tests/data/test_spark_job.py the Spark job)
    trains as ``data.dataset: sequences``: the same split as the raw source's, damage an error."""
    options = {"num_users": 40, "num_items": 100, "seed": 3}
    raw = SequenceDataModule(dataset="synthetic", dataset_options=options, cache_dir=str(tmp_path / "c1"), max_seq_len=8)
    out = tmp_path / "seq"
    out.mkdir()
    preprocess.write(get_source("synthetic", cache_dir=str(tmp_path / "c0"), **options), out, fingerprint="job")
    built = SequenceDataModule(dataset="sequences", root=str(out), cache_dir=str(tmp_path / "c2"), max_seq_len=8)
    for a, b in ((raw.data.offsets, built.data.offsets), (raw.data.items, built.data.items),
                 (raw.data.item_ids, built.data.item_ids), (raw.data.user_ids, built.data.user_ids)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(raw.test_pos, built.test_pos)
    assert built.data.fingerprint == "job"
    with pytest.raises(DataError, match="min_user_interactions"):
        SequenceDataModule(dataset="sequences", root=str(out), preprocess=PreprocessConfig(min_user_interactions=2)).data
    items = np.load(out / "items.npy")
    items[0] = items[0] + 1
    np.save(out / "items.npy", items)
    with pytest.raises(DataError, match=r"items\.npy.*write it again"):
        SequenceDataModule(dataset="sequences", root=str(out), cache_dir=str(tmp_path / "c3")).data
    with pytest.raises(DataError, match="needs data.root"):
        SequenceDataModule(dataset="sequences").data


PARQUET_READ = {  # what the engine reads itself: string or integer ids, integer times or none
    "strings, int times": {"user_id": ["u2", "u1", "u1", "u2"], "item_id": ["b", "10", "9", "a"], "timestamp": [5, 3, 3, 1]},
    "int ids, no times": {"user_id": [7, 3, 7], "item_id": [10, 9, 9]},
    "negative int ids": {"user_id": [-1, 2, -1], "item_id": [-5, 5, 6], "timestamp": [2, 1, 1]},
}
PARQUET_LEFT = {  # what goes to the readers (which give the same result or name the bad row)
    "float ids": {"user_id": [1.0, 2.0, 1.0], "item_id": [3.0, 4.0, 5.0]},
    "float times": {"user_id": ["a", "a"], "item_id": ["x", "y"], "timestamp": [1.5, 1.25]},
    "untrimmed ids": {"user_id": [" a", "a"], "item_id": ["x", "y"]},
    "datetimes": {"user_id": ["a", "a"], "item_id": ["x", "y"], "timestamp": pd.to_datetime(["2020-01-02", "2020-01-01"])},
}


@pytest.mark.parametrize("case", [*PARQUET_READ, *PARQUET_LEFT])
def test_a_plain_parquet_file_is_read_by_the_engine_when_it_gives_what_the_readers_give(tmp_path, monkeypatch, case):
    root = tmp_path / "plain"
    root.mkdir()
    pd.DataFrame({**PARQUET_READ, **PARQUET_LEFT}[case]).to_parquet(root / "interactions.parquet")
    native, via_pandas, engine_read = both_paths(get_source("plain", root=str(root)), monkeypatch)
    assert engine_read == (case in PARQUET_READ)
    assert_same(native, via_pandas)


def test_a_parquet_file_with_a_null_id_is_left_to_the_readers_which_name_the_row(tmp_path):
    root = tmp_path / "plain"
    root.mkdir()
    pd.DataFrame({"user_id": ["a", None], "item_id": ["x", "y"]}).to_parquet(root / "interactions.parquet")
    with pytest.raises(DataError, match="row 2"):
        preprocess.build_sequences(get_source("plain", root=str(root)))
