"""The engine reading delimited text (any delimiter, with or without a header, gzip) and JSON lines
itself: whatever it reads gives the very files the readers' path gives, and whatever it cannot be
sure of it leaves to the readers, whose result or error is then unchanged."""
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from genrec.data import DataError, engine, get_source, preprocess
from tests.data.test_sources import write

ROWS = 300


def outcome(source) -> tuple[str, object]:
    """Every file ``preprocess.write`` writes for ``source`` (byte for byte), or the error it raises."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        try:
            preprocess.write(source, out)
        except DataError as err:
            return "error", str(err)
        return "files", {path.name: path.read_bytes() for path in sorted(out.iterdir())}


def both_paths(source, monkeypatch) -> tuple[list, tuple, tuple]:
    """What ``engine.read`` returned (once per preprocessing), and the outcome with the engine's
    scan and without it (the readers' path)."""
    returned = []
    real = engine.read
    monkeypatch.setattr(engine, "read", lambda con, scan: returned.append(real(con, scan)) or returned[-1])
    native = outcome(source)
    monkeypatch.setattr(type(source), "engine_scan", lambda self: None)
    readers = outcome(source)
    monkeypatch.undo()
    return returned, native, readers


def log(seed: int = 0, rows: int = ROWS, unit: int = 1) -> list[tuple[str, str, int]]:
    """(user, item, time) rows: numeric ids with leading zeros, equal times, a user's rows out of order."""
    rng = np.random.default_rng(seed)
    users = [f"{u:03d}" if u % 3 else str(u) for u in rng.integers(1, 40, rows)]
    items = [str(i) for i in rng.integers(1, 60, rows)]
    times = rng.integers(1_000, 1_040, rows) * unit + (rng.integers(0, 1000, rows) if unit > 1 else 0)
    return list(zip(users, items, times.tolist()))


def write_ml_1m(folder: Path, ratings: bytes | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    body = ratings if ratings is not None else "".join(f"{u}::{i}::4::{t}\n" for u, i, t in log()).encode()
    (folder / "ratings.dat").write_bytes(body)
    write(folder / "movies.dat", "".join(f"{i}::Film {i} é::Drama|Comedy\n" for i in range(1, 70)), "latin-1")
    return folder


def write_ml_100k(folder: Path, ratings: bytes | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    body = ratings if ratings is not None else "".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in log(1)).encode()
    (folder / "u.data").write_bytes(body)
    flags = "|".join("01"[g % 2] for g in range(19))
    write(folder / "u.item", "".join(f"{i}|Film {i}|01-Jan-1995||http://x|{flags}\n" for i in range(1, 70)), "latin-1")
    return folder


def write_plain(folder: Path, name: str, body: bytes) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(body)
    (folder / "items.jsonl").write_text("".join(json.dumps({"item_id": str(i), "title": f"T{i}"}) + "\n"
                                                for i in range(1, 60)))
    return folder


def plain_csv(rows=None) -> bytes:
    return ("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows or log(2))).encode()


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def amazon_reviews(version: str, rows=None) -> bytes:
    if version == "2023":
        return jsonl({"rating": 5.0, "title": "t", "text": "good, {fine}", "images": [{"url": "x"}], "asin": f"B{i}",
                      "parent_asin": f"P{i}", "user_id": f"U{u}", "timestamp": t, "helpful_vote": 0,
                      "verified_purchase": True} for u, i, t in rows or log(3, unit=1000))
    return jsonl({"reviewerID": f"A{u}", "asin": f"B{i}", "unixReviewTime": t, "style": {"Size:": "L"},
                  "reviewText": "ok"} for u, i, t in rows or log(4))


def write_amazon(folder: Path, version: str, reviews: bytes | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    name = {"2014": "reviews_Beauty_5.json.gz", "2018": "Beauty_5.json.gz", "2023": "Beauty.jsonl.gz"}[version]
    (folder / name).write_bytes(gzip.compress(reviews if reviews is not None else amazon_reviews(version)))
    key = "parent_asin" if version == "2023" else "asin"
    prefix = "P" if version == "2023" else "B"
    meta = [{key: f"{prefix}{i}", "title": f"Item {i}", "categories": [["A", "B"]]} for i in range(1, 70, 2)]
    lines = (repr(m) if version == "2014" else json.dumps(m) for m in meta)
    meta_name = "meta_Beauty.jsonl.gz" if version == "2023" else "meta_Beauty.json.gz"
    (folder / meta_name).write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    return folder


AMAZON = {"category": "Beauty"}


def source(kind: str, folder: Path, body: bytes | None = None):
    """A source of ``kind`` over synthetic files in ``folder`` (``body``: its interactions file's bytes)."""
    if kind == "ml-1m":
        return get_source("ml-1m", root=str(write_ml_1m(folder, body)))
    if kind == "ml-100k":
        return get_source("ml-100k", root=str(write_ml_100k(folder, body)))
    if kind == "csv.gz":
        root = write_plain(folder, "interactions.csv.gz", gzip.compress(body if body is not None else plain_csv()))
        return get_source("plain", root=str(root), interactions_file="interactions.csv.gz", unknown_item_text="ignore")
    if kind == "jsonl":
        body = body if body is not None else jsonl({"user_id": u, "item_id": i, "timestamp": t} for u, i, t in log(5))
        return get_source("plain", root=str(write_plain(folder, "interactions.jsonl", body)), unknown_item_text="ignore")
    version = kind.removeprefix("amazon-")
    return get_source("amazon", root=str(write_amazon(folder, version, body)), version=version, **AMAZON)


def multi_member_gzip(data: bytes) -> bytes:
    return gzip.compress(data[: len(data) // 2]) + gzip.compress(data[len(data) // 2 :])


READ = {  # format: the interactions file's bytes (None: the synthetic default)
    "ml-1m": ("ml-1m", None),
    "ml-1m, quotes are ordinary characters": ("ml-1m", b'"1"::10::4::5\n1::"10::4::6\n2::10::4::5\n'),
    "ml-1m, a ':' beside the delimiter": ("ml-1m", b"1:::10::4::5\n1::10::4::6\n"),
    "ml-100k": ("ml-100k", None),
    "plain csv.gz": ("csv.gz", None),
    "plain csv.gz, two gzip members": ("csv.gz", "multi"),
    "plain jsonl": ("jsonl", None),
    "plain jsonl, integer and text ids, -0": ("jsonl", b'{"user_id": 7, "item_id": "7"}\n{"user_id": "7", "item_id": -0}\n'
                                                       b'{"user_id": -3, "item_id": 18446744073709551615}\n'),
    "plain jsonl, no times": ("jsonl", jsonl({"user_id": u, "item_id": i} for u, i, _ in log(6))),
    "amazon 2014": ("amazon-2014", None),
    "amazon 2014, a key repeated in a nested object (the last kept, as Python's)": (
        "amazon-2014", b'{"reviewerID": "A", "asin": "B1", "unixReviewTime": 5, "style": {"s": 1, "s": 2}}\n'),
    "amazon 2018": ("amazon-2018", None),
    "amazon 2023, sub-second and negative milliseconds": ("amazon-2023", None),
    "amazon 2023, negative milliseconds": ("amazon-2023", amazon_reviews("2023", [("1", "1", -1500), ("1", "2", -1001),
                                                                                 ("1", "3", -2000), ("2", "1", 0)])),
}


@pytest.mark.parametrize("case", READ)
def test_the_engine_reads_each_format_itself_into_the_files_the_readers_write(tmp_path, monkeypatch, case):
    kind, body = READ[case]
    if body == "multi":
        body = None
        src = source(kind, tmp_path)
        path = src.engine_scan().path
        path.write_bytes(multi_member_gzip(gzip.decompress(path.read_bytes())))
    else:
        src = source(kind, tmp_path, body)
    returned, native, readers = both_paths(src, monkeypatch)
    assert len(returned) == 1 and returned[0] is not None, "the engine left the file to the readers"
    assert native[0] == "files", native[1]
    assert native == readers  # every file, meta.json's counts included, byte for byte


def test_amazon_2023_times_keep_their_milliseconds_through_the_engine(tmp_path, monkeypatch):
    src = source("amazon-2023", tmp_path, amazon_reviews("2023", [("1", "1", 1_500), ("1", "2", 1_100), ("1", "3", -1)]))
    returned, native, _ = both_paths(src, monkeypatch)
    assert returned[0] == {"u", "i", "t"}
    data = preprocess.build_sequences(src)
    assert data.timestamps.tolist() == [-1, 1, 1] and data.sequence(0).tolist() == [3, 2, 1]


ML = "1::10::4::5\n"
J23 = '{"user_id": "U", "parent_asin": "P", "timestamp": 1000}\n'
J14 = '{"reviewerID": "U", "asin": "B1", "unixReviewTime": 5}\n'
# What the engine leaves to the readers: each reads otherwise in DuckDB, or is an error only the
# readers can place on its line. Their outcome (the files or the error) must not change.
LEFT = {
    "a ragged line": ("ml-1m", ML + "1::20::4\n"),
    "a line with a field too many": ("ml-1m", ML + "1::20::4::6::9\n"),
    "a blank line": ("ml-1m", ML + "\n1::20::4::6\n"),
    "bad UTF-8": ("ml-1m", ML.encode() + b"1::2\xff::4::6\n"),
    "a unit separator in a field": ("ml-1m", ML + "1::2\x1f0::4::6\n"),
    "a fractional time": ("ml-1m", ML + "1::20::4::6.5\n"),
    "an id with spaces around it": ("ml-1m", ML + "1:: 20::4::6\n"),
    "a byte-order mark": ("ml-1m", "\ufeff" + ML + "1::20::4::6\n"),
    "no line break at the end": ("ml-1m", ML + "1::20::4::6"),
    "an empty file": ("ml-1m", ""),
    "a tab-separated ragged line": ("ml-100k", "1\t10\t4\t5\n1\t20\n"),
    "a gzip file cut short": ("csv.gz", "cut"),
    "a key named twice": ("amazon-2023", J23 + '{"user_id": "U", "user_id": "V", "parent_asin": "P", "timestamp": 1}\n'),
    "a key named twice (2014: the last kept)": ("amazon-2014", J14 + '{"reviewerID": "U", "reviewerID": "V", '
                                                '"asin": "B", "unixReviewTime": 1}\n'),
    "a key named twice, as many keys as the first line names": (
        "amazon-2023", J23.replace("}", ', "x": 1}') + '{"user_id": "U", "user_id": "V", "parent_asin": "P", "timestamp": 1}\n'),
    "a key named twice in a nested object": ("amazon-2023", J23 + '{"user_id": "U", "parent_asin": "Q", '
                                             '"timestamp": 2, "images": [{"u": 1, "u": 2}]}\n'),
    "a float id": ("jsonl", '{"user_id": 1.0, "item_id": "a"}\n{"user_id": 2, "item_id": "b"}\n'),
    "an id in exponent form": ("jsonl", '{"user_id": 1e3, "item_id": "a"}\n'),
    "an integer id beyond 64 bits": ("jsonl", '{"user_id": 123456789012345678901234567890, "item_id": "a"}\n'),
    "an id with spaces inside its string": ("jsonl", '{"user_id": " u", "item_id": "a"}\n'),
    "a null id": ("jsonl", '{"user_id": null, "item_id": "a"}\n'),
    "a time in some lines only": ("jsonl", '{"user_id": "u", "item_id": "a", "timestamp": 1}\n'
                                           '{"user_id": "u", "item_id": "b"}\n'),
    "a null time": ("jsonl", '{"user_id": "u", "item_id": "a", "timestamp": null}\n'),
    "a JSON blank line": ("amazon-2023", J23 + "\n" + J23),
    "a line of spaces": ("amazon-2014", J14 + "   \n" + J14),
    "JSON bad UTF-8": ("amazon-2023", J23.encode() + b'{"user_id": "\xff", "parent_asin": "P", "timestamp": 1}\n'),
    "a JSON gzip file cut short": ("amazon-2014", "cut"),
    "a fractional time (2014: kept as a fraction)": ("amazon-2014", J14 + J14.replace("5}", "5.5}")),
    "a fractional time (2023: an error)": ("amazon-2023", J23 + J23.replace("1000}", "1000.5}")),
    "a time written as text": ("amazon-2014", J14 + J14.replace("5}", '"6"}')),
    "a boolean time": ("amazon-2014", J14 + J14.replace("5}", "true}")),
    "a trailing comma": ("amazon-2023", J23 + J23.replace("}", ",}")),
    "a missing key": ("amazon-2023", J23 + '{"user_id": "U", "timestamp": 1}\n'),
    "a Python literal (2014)": ("amazon-2014", J14 + J14.replace('"', "'")),
    "an array on a line": ("amazon-2023", J23 + "[1, 2]\n"),
}


@pytest.mark.parametrize("case", LEFT)
def test_what_the_engine_cannot_be_sure_of_is_left_to_the_readers_unchanged(tmp_path, monkeypatch, case):
    kind, body = LEFT[case]
    if body == "cut":
        src = source(kind, tmp_path)
        path = src.engine_scan().path
        path.write_bytes(path.read_bytes()[:-30])
    else:
        body = body.encode() if isinstance(body, str) else body
        src = source(kind, tmp_path, body)
    returned, native, readers = both_paths(src, monkeypatch)
    assert returned == [None], "the engine read the file itself"
    assert native == readers


def test_the_line_count_of_a_gzip_file_streams_every_member_and_refuses_a_cut_one(tmp_path):
    data = b"".join(b"%d,x\n" % i for i in range(200_000))
    whole, members, cut = tmp_path / "a.gz", tmp_path / "b.gz", tmp_path / "c.gz"
    whole.write_bytes(gzip.compress(data))
    members.write_bytes(multi_member_gzip(data + b"last"))
    cut.write_bytes(gzip.compress(data)[:-5])
    assert engine._lines(whole) == (200_000, True)
    assert engine._lines(members) == (200_000, False)
    assert engine._lines(cut) is None


def test_the_benchmarks_amazon_2023_log_is_read_by_the_engine_as_the_readers_read_it(tmp_path, monkeypatch):
    """``benchmarks/data_scale.py --format jsonl`` measures the engine on this layout (nested image
    objects on some lines): it must be the engine's path that is timed, giving the readers' files."""
    import sys

    from tests.conftest import REPO

    sys.path.insert(0, str(REPO / "benchmarks"))
    import data_scale

    data_scale.write_amazon_2023(tmp_path, 3_000)
    src = get_source("amazon", root=str(tmp_path), category="Synthetic", version=2023)
    returned, native, readers = both_paths(src, monkeypatch)
    assert returned == [{"u", "i", "t"}] and native[0] == "files" and native == readers
