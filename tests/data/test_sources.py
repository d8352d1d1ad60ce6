"""Dataset readers: real local data where present, tiny synthetic files for every format and error."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.client
import io
import json
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genrec.data import download, preprocess, sources
from genrec.data.datamodule import cache_folder, load_sequences
from genrec.data.raw import DataError, RawData
from genrec.data.registry import get_source
from tests.conftest import shared_data

def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    data = text.encode(encoding)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def load(name: str, root: Path, **options) -> RawData:
    return get_source(name, root=str(root), **options).load()


def assert_size(raw: RawData, users: int, items: int, rows: int) -> None:
    frame = raw.interactions
    assert (frame["user"].nunique(), frame["item"].nunique(), len(frame)) == (users, items, rows)


def assert_string_ids(raw: RawData) -> None:
    assert pd.api.types.is_string_dtype(raw.interactions["user"])
    assert pd.api.types.is_string_dtype(raw.interactions["item"])


# ---- real data -------------------------------------------------------------------------------


def test_ml_1m_real() -> None:
    raw = load("ml-1m", shared_data("ml-1m"))
    assert_size(raw, 6040, 3706, 1_000_209)
    assert_string_ids(raw)
    assert raw.interactions["timestamp"].dtype == "int64"
    assert raw.interactions.iloc[0].tolist() == ["1", "1193", 978300760]
    toy_story = raw.items.set_index("item").loc["1"]
    assert (toy_story["title"], toy_story["genres"]) == ("Toy Story (1995)", "Animation, Children's, Comedy")
    assert len(raw.items) == 3706 and raw.counts["item_text_unknown_ids"] == 3883 - 3706


def test_ml_100k_real() -> None:
    raw = load("ml-100k", shared_data("ml-100k"))
    assert_size(raw, 943, 1682, 100_000)
    assert raw.items.set_index("item").loc["2", "genres"] == "Action, Adventure, Thriller"


def test_s3rec_real() -> None:
    raw = load("s3rec", shared_data("amazon-ids"), category="Beauty")
    assert_size(raw, 22_363, 12_101, 198_502)
    assert not raw.has_timestamps


@pytest.mark.parametrize(
    "folder, size", [("amazon-scientific", (8317, 4344, 58_492)), ("amazon-office", (4905, 2420, 53_258))]
)
def test_plain_real(folder: str, size: tuple[int, int, int]) -> None:
    raw = load("plain", shared_data(folder))
    assert_size(raw, *size)
    assert len(raw.items) == size[1]
    assert list(raw.items.columns) == ["item", "title", "description", "brand", "categories"]


def digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        array = np.asarray(part)
        h.update(array.tobytes() if array.dtype != object else "\x00".join(map(str, part)).encode())
    return h.hexdigest()[:16]


# What the readers made of the real data before ids had one canonical form (commit 39f41e1): the
# README's tables were measured on exactly these sequences (items, times), user ids, item id maps
# and item text.
BEFORE_CANONICAL_IDS = [
    ("ml-1m", "ml-1m", {}, "892d1693c7991669 85a0b4bcea2b1f35 83142380ff08625c 9aabd36b86bdb1ae"),
    ("ml-100k", "ml-100k", {}, "1d9a0f6727a36712 b99041e3636b7f44 117ce399493a57ce f8bc8593d4f46473"),
    ("plain", "amazon-scientific", {}, "b284f91fac83097a 846e40e8b28b0ab4 66afba3643e0ad02 7c45f76548775075"),
    ("plain", "amazon-office", {}, "823c2e7cbfa6aaa7 a13d21fbcf7cd241 b5a29b0615e429db 8b0adc3f54573351"),
    ("plain", "amazon-beauty-text", {}, "6a8d367627228504 97b4db1338e8e21b 470ccfe987400847 71e5c4133ca946ef"),
    ("plain", "amazon-toys-text", {}, "e86331494f8125d6 60ec3b98a8ffa71a ca34a639ad0714a6 6cc24c128184e868"),
    ("plain", "yelp", {}, "afc9e8b1e8c80b6d 93a8cf0d011aef84 05c2e7deb2f5bcef 30a61f29a65cbb8c"),
    ("plain", "amazon-cellphones", {}, "ae74ea231cc63084 c915260e3f34c7fc 1e22e8e7abedc033 91ba4fa2b7055962"),
    ("plain", "microlens-50k", {}, "1693c8cc68f2053c ebed85676a9b7a31 f10a2a79635a6a8b f736c84fd4915dca"),
    ("s3rec", "amazon-ids", {"category": "Beauty"}, "b519f4f4b2cf0c62 e8f63b9af6215c05 a818ad2be3e6eb59 None"),
    ("s3rec", "amazon-ids", {"category": "Sports_and_Outdoors"}, "ef5123a9ebef4bc5 32c418eedff0cb3f 94fed5c1e216b1b4 None"),
    ("s3rec", "amazon-ids", {"category": "Toys_and_Games"}, "1ff2e0abeed06650 fc643f97c067e8af abdef10fc45faa92 None"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, folder, options, expected", BEFORE_CANONICAL_IDS)
def test_real_datasets_give_the_same_sequences_and_id_maps_as_before_canonical_ids(
    name: str, folder: str, options: dict[str, str], expected: str
) -> None:
    raw = load(name, shared_data(folder), **options)
    data = preprocess.build_sequences(raw)
    text = None if data.item_text is None else digest(
        *[data.item_text[c].astype(str).tolist() for c in data.item_text.columns], list(data.item_text.columns))
    found = [digest(data.offsets, data.items, data.timestamps), digest(list(data.user_ids)), digest(list(data.item_ids)), text]
    assert " ".join(map(str, found)) == expected
    assert not {key for key in raw.counts if key.endswith(("_stripped", "_float_to_int"))}


# ---- formats, synthetic ----------------------------------------------------------------------


def write_ml_1m(folder: Path, ratings: str = "1::10::5::100\n1::20::3::200\n2::10::4::150\n") -> Path:
    folder.mkdir(exist_ok=True)
    write(folder / "ratings.dat", ratings)
    movies = '10::Amélie (2001)::Comedy|Romance\n20::"Quoted" Title::Drama\n30::Unrated::Drama\n'
    write(folder / "movies.dat", movies, "latin-1")
    return folder


def test_ml_1m_synthetic_keeps_file_order_and_latin1_titles(tmp_path: Path) -> None:
    raw = load("ml-1m", write_ml_1m(tmp_path))
    assert raw.interactions.values.tolist() == [["1", "10", 100], ["1", "20", 200], ["2", "10", 150]]
    assert raw.items.values.tolist() == [["10", "Amélie (2001)", "Comedy, Romance"], ["20", '"Quoted" Title', "Drama"]]
    assert raw.counts == {"item_text_unknown_ids": 1, "item_text_duplicate_ids": 0}


def test_ml_20m_csv_with_quoted_titles(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n")
    movies = 'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Fantasy\n29,Lost,(no genres listed)\n'
    write(tmp_path / "movies.csv", movies)
    raw = load("ml-20m", tmp_path)
    assert raw.interactions.values.tolist() == [["1", "2", 1112486027], ["1", "29", 1112484676]]
    assert raw.items.values.tolist() == [["2", "Jumanji, The (1995)", "Adventure, Fantasy"], ["29", "Lost", ""]]


def write_amazon_2014(folder: Path, suffix: str = ".gz") -> None:
    reviews = [
        {"reviewerID": "U1", "asin": "B1", "unixReviewTime": 1400000000, "reviewText": "good"},
        {"reviewerID": "U1", "asin": "B2", "unixReviewTime": 1300000000},
        {"reviewerID": "U2", "asin": "B1", "unixReviewTime": 1350000000},
    ]
    write(folder / f"reviews_Beauty_5.json{suffix}", "\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = [
        {"asin": "B1", "title": "Soap", "categories": [["Beauty", "Bath"], ["Beauty", "Soap"]], "brand": "Acme"},
        {"asin": "B2", "description": "Gentle 'cream'", "title": None},
        {"asin": "B9", "title": "Not in the 5-core"},
    ]
    write(folder / f"meta_Beauty.json{suffix}", "\n".join(repr(m) for m in meta) + "\n")


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_amazon_2014_python_literal_metadata(tmp_path: Path, suffix: str) -> None:
    write_amazon_2014(tmp_path, suffix)
    explicit = {"reviews_file": "reviews_Beauty_5.json", "meta_file": "meta_Beauty.json"}
    raw = load("amazon", tmp_path, version=2014, **({"category": "Beauty"} if suffix else explicit))
    expected = [["U1", "B1", 1400000000], ["U1", "B2", 1300000000], ["U2", "B1", 1350000000]]
    assert raw.interactions.values.tolist() == expected
    assert raw.items.to_dict("records") == [
        {"item": "B1", "title": "Soap", "description": "", "brand": "Acme", "categories": "Beauty, Bath, Soap"},
        {"item": "B2", "title": "", "description": "Gentle 'cream'", "brand": "", "categories": ""},
    ]
    assert raw.counts == {"item_text_unknown_ids": 1, "item_text_duplicate_ids": 0}


def test_amazon_2018_json_metadata_with_lists_and_duplicates(tmp_path: Path) -> None:
    review = {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 1500000000, "style": {"Color:": "Red"}}
    write(tmp_path / "Arts_5.json.gz", json.dumps(review) + "\n")
    meta = [
        {"category": ["Arts", "Paint"], "description": ["Red.", "Oil paint."], "title": "Red", "asin": "A1"},
        {"title": "Red again", "asin": "A1"},
    ]
    write(tmp_path / "meta_Arts.json", "\n".join(json.dumps(m) for m in meta) + "\n")
    raw = load("amazon", tmp_path, category="Arts", version="2018", meta_file="meta_Arts.json")
    assert raw.items.to_dict("records") == [
        {"item": "A1", "title": "Red", "description": "Red. Oil paint.", "brand": "", "categories": "Arts, Paint"}
    ]
    assert raw.counts["item_text_duplicate_ids"] == 1


def test_amazon_metadata_is_optional_and_published_files_may_be_gunzipped(tmp_path: Path) -> None:
    write(tmp_path / "reviews_Toys_5.json", json.dumps({"reviewerID": "U", "asin": "T", "unixReviewTime": 1}) + "\n")
    raw = load("amazon", tmp_path, category="Toys")
    assert raw.items is None and len(raw.interactions) == 1


def write_amazon_2023(folder: Path) -> None:
    """The Amazon Reviews 2023 layout: ``<category>.jsonl.gz`` and ``meta_<category>.jsonl.gz``."""
    folder.mkdir(parents=True, exist_ok=True)
    reviews = [  # U1's two reviews fall in one second; the milliseconds order them against file order
        {"rating": 5.0, "title": "t", "text": "x", "images": [], "asin": "B1x", "parent_asin": "P1",
         "user_id": "U1", "timestamp": 1588687728923, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 4.0, "asin": "B2", "parent_asin": "P2", "user_id": "U1", "timestamp": 1588687728100},
        {"rating": 3.0, "asin": "B1y", "parent_asin": "P1", "user_id": "U2", "timestamp": 1500000000000},
        {"rating": 1.0, "asin": "B3", "parent_asin": "P3", "user_id": "U2", "timestamp": 1500000001000},
        {"rating": 2.0, "asin": "B2", "parent_asin": "P2", "user_id": "U2", "timestamp": 1500000002000},
    ]
    write(folder / "All_Beauty.jsonl.gz", "\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = [
        {"main_category": "All Beauty", "title": "Soap", "features": [], "description": ["Mild.", "Soap."],
         "store": "Acme", "categories": ["Beauty", "Soap"], "details": {}, "parent_asin": "P1", "bought_together": None},
        {"title": "Cream", "description": [], "store": None, "categories": [], "parent_asin": "P2"},
        {"title": "Never reviewed", "parent_asin": "P9"},
    ]
    write(folder / "meta_All_Beauty.jsonl.gz", "\n".join(json.dumps(m) for m in meta) + "\n")


def test_amazon_2023_json_lines_with_millisecond_times_through_the_cache(tmp_path: Path) -> None:
    write_amazon_2023(tmp_path / "data")
    source = get_source("amazon", root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"),
                        category="All_Beauty", version=2023)
    assert [d.url.rsplit("/", 2)[-2:] for d in source.downloads()] == [
        ["review_categories", "All_Beauty.jsonl.gz"], ["meta_categories", "meta_All_Beauty.jsonl.gz"]]
    raw = source.load()
    assert raw.interactions[["user", "item", "timestamp"]].values.tolist() == [
        ["U1", "P1", 1588687728], ["U1", "P2", 1588687728], ["U2", "P1", 1500000000], ["U2", "P3", 1500000001],
        ["U2", "P2", 1500000002]]
    assert raw.interactions["timestamp_ns"].tolist() == [923_000_000, 100_000_000, 0, 0, 0]
    assert raw.items.to_dict("records") == [
        {"item": "P1", "title": "Soap", "description": "Mild. Soap.", "brand": "Acme", "categories": "Beauty, Soap"},
        {"item": "P2", "title": "Cream", "description": "", "brand": "", "categories": ""},
    ]
    assert raw.counts["item_text_unknown_ids"] == 1
    load_sequences(source)
    data = load_sequences(source)  # the cache
    assert preprocess.mapped_file(data.items) is not None and list(data.item_ids) == ["<pad>", "P1", "P2", "P3"]
    assert list(data.user_ids) == ["U1", "U2"]
    assert data.sequence(0).tolist() == [2, 1]  # U1: P2 at .100 before P1 at .923 of the same second
    assert data.sequence(1).tolist() == [1, 3, 2]


def test_amazon_2023_times_must_be_integer_milliseconds(tmp_path: Path) -> None:
    lines = [{"user_id": "U", "parent_asin": "P", "timestamp": 1588687728923},
             {"user_id": "U", "parent_asin": "Q", "timestamp": 1588687728.5}]
    write(tmp_path / "B.jsonl.gz", "\n".join(json.dumps(r) for r in lines) + "\n")
    message = error("amazon", tmp_path, category="B", version="2023")
    assert "B.jsonl.gz: line 2: timestamp 1588687728.5 is not unix milliseconds" in message


def test_ml_20m_official_zip_layout_is_downloaded_extracted_and_read(tmp_path: Path, monkeypatch) -> None:
    """The release nests its files in ``ml-20m/`` beside others (links, tags, genome, README)."""
    ratings = "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n2,2,4.0,1112484000\n2,29,1.0,1112484001\n"
    movies = 'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Fantasy\n29,Lost,(no genres listed)\n'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in (("ratings.csv", ratings), ("movies.csv", movies), ("links.csv", "movieId,imdbId,tmdbId\n"),
                           ("tags.csv", "userId,movieId,tag,timestamp\n"), ("README.txt", "readme")):
            zf.writestr(f"ml-20m/{name}", body)
    payload = buffer.getvalue()
    official = sources.MOVIELENS["ml-20m"]
    assert official.url.endswith("/ml-20m.zip") and official.md5 and official.extract == ("ratings.csv", "movies.csv")
    monkeypatch.setitem(sources.MOVIELENS, "ml-20m", dataclasses.replace(official, md5=hashlib.md5(payload).hexdigest()))
    requested = serve(monkeypatch, payload)
    source = get_source("ml-20m", cache_dir=str(tmp_path / "cache"))
    data = load_sequences(source)
    assert requested == [official.url]
    assert sorted(p.name for p in (tmp_path / "cache" / "ml-20m").iterdir()) == [".downloaded.json", "movies.csv", "ratings.csv"]
    assert list(data.item_ids) == ["<pad>", "2", "29"] and list(data.user_ids) == ["1", "2"]
    assert [data.sequence(u).tolist() for u in (0, 1)] == [[2, 1], [1, 2]]  # by time
    assert data.item_text["title"].tolist() == ["", "Jumanji, The (1995)", "Lost"]


def test_s3rec_file_option(tmp_path: Path) -> None:
    write(tmp_path / "seq.txt", "1 5 6 7\n2 6\n")
    raw = load("s3rec", tmp_path, file="seq.txt")
    assert raw.interactions.values.tolist() == [["1", "5"], ["1", "6"], ["1", "7"], ["2", "6"]]


def plain_frame() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [3, 5, 4]})


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_plain_formats(tmp_path: Path, suffix: str) -> None:
    frame, path = plain_frame(), tmp_path / f"interactions.{suffix}"
    if suffix == "csv":
        frame.to_csv(path, index=False)
    elif suffix == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)
    write(tmp_path / "items.jsonl", '{"item_id": "a", "title": "A", "tags": ["x", "y"]}\n\n{"item_id": "b"}\n')
    raw = load("plain", tmp_path)
    assert raw.interactions.values.tolist() == [["u1", "a", 3], ["u1", "b", 5], ["u2", "a", 4]]
    expected = [{"item": "a", "title": "A", "tags": "x, y"}, {"item": "b", "title": "", "tags": ""}]
    assert raw.items.to_dict("records") == expected


def test_plain_parquet_datetimes_become_unix_seconds(tmp_path: Path) -> None:
    frame = plain_frame().assign(timestamp=pd.to_datetime([3, 5, 4], unit="s"))
    frame.to_parquet(tmp_path / "interactions.parquet")
    assert load("plain", tmp_path).interactions["timestamp"].tolist() == [3, 5, 4]


def sequence_of(raw: RawData, user: str) -> list[str]:
    """The user's raw item ids in the order preprocessing puts them."""
    data = preprocess.build_sequences(raw)
    u = list(data.user_ids).index(user)
    return [data.item_ids[i] for i in data.sequence(u)]


def test_fractional_csv_timestamps_keep_their_true_order(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,a,1.9\nu,b,1.2\nu,c,0.5\nu,d,3\n")
    raw = load("plain", tmp_path)
    assert raw.interactions["timestamp"].tolist() == [1, 1, 0, 3]
    assert sequence_of(raw, "u") == ["c", "b", "a", "d"]  # d, the held-out target, stays last


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin"])
def test_sub_second_and_timezone_aware_parquet_datetimes(tmp_path: Path, tz: str | None) -> None:
    # what Spark writes: microsecond datetimes with a time zone
    times = pd.to_datetime(["2020-01-01 00:00:01.9", "2020-01-01 00:00:01.2", "2020-01-01 00:00:02.0"]).as_unit("us")
    if tz:
        times = times.tz_localize("UTC").tz_convert(tz)
    frame = pd.DataFrame({"user_id": ["u"] * 3, "item_id": ["a", "b", "c"], "timestamp": times})
    frame.to_parquet(tmp_path / "interactions.parquet")
    raw = load("plain", tmp_path)
    assert raw.interactions["timestamp"].tolist() == [1577836801, 1577836801, 1577836802]
    assert sequence_of(raw, "u") == ["b", "a", "c"]


@pytest.mark.parametrize("value", ["99999999999999999999", "9223372036854775808", "-1e300"])
def test_out_of_range_timestamp_names_file_and_line(tmp_path: Path, value: str) -> None:
    write(tmp_path / "interactions.csv", f"user_id,item_id,timestamp\nu,a,5\nu,b,{value}\n")
    message = error("plain", tmp_path)
    assert "interactions.csv: line 3: timestamp" in message and "out of range" in message


def test_non_finite_parquet_timestamp_is_refused(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [1.5, float("inf")]})
    frame.to_parquet(tmp_path / "interactions.parquet")
    assert "interactions.parquet: row 2: timestamp inf is out of range" in error("plain", tmp_path)


def test_out_of_range_timestamp_in_a_movielens_file(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::10::5::100\n1::20::3::99999999999999999999\n")
    write(tmp_path / "movies.dat", "10::T::G\n20::U::G\n")
    assert "ratings.dat: line 2: timestamp" in error("ml-1m", tmp_path)


def test_plain_numeric_ids_stay_raw_strings(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\n007,1\n007,2\n")
    assert load("plain", tmp_path).interactions.values.tolist() == [["007", "1"], ["007", "2"]]


# ---- errors ----------------------------------------------------------------------------------


def error(name: str, root: Path, **options) -> str:
    with pytest.raises(DataError) as info:
        load(name, root, **options)
    return str(info.value)


def test_unknown_dataset() -> None:
    with pytest.raises(DataError, match="unknown dataset 'ml-2m'.*ml-1m"):
        get_source("ml-2m")


def test_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown option.*'categroy'"):
        get_source("amazon", root=str(tmp_path), categroy="Beauty")


def test_missing_file_names_folder_files_and_source(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1::1::1\n")
    message = error("ml-1m", tmp_path)
    assert str(tmp_path) in message and "lacks movies.dat" in message and "ratings.dat, movies.dat" in message
    assert "ml-1m.zip" in message


@pytest.mark.parametrize(
    "ratings, where",
    [
        ("1::10::5::100\n1::20::3::200::9\n", "line 2 has 5 fields, expected 4"),
        ("1::10::5::100::9\n1::20::3::200\n", "line 1 has more fields than expected"),
        ("1::10::5::100\n1::20::3\n", "line 2: no value for 'timestamp'"),
        ("1::10::5\n1::20::3::200\n", "line 1: no value for 'timestamp'"),
        ("1::10::5::100\n\n2::10::4::150\n", "line 2: no value for 'user'"),  # blank line inside
    ],
)
def test_malformed_line(tmp_path: Path, ratings: str, where: str) -> None:
    message = error("ml-1m", write_ml_1m(tmp_path, ratings))
    assert "ratings.dat" in message and where in message


def test_trailing_blank_lines_are_not_records(tmp_path: Path) -> None:
    assert len(load("ml-1m", write_ml_1m(tmp_path, "1::10::5::100\n\n\n")).interactions) == 1


def test_malformed_csv_line(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a,1\nu,b\n")
    assert "interactions.csv: line 2 has more fields than expected" in error("plain", tmp_path)
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\nu,b,1\n")
    assert "interactions.csv: line 3 has 3 fields, expected 2" in error("plain", tmp_path)


def test_malformed_s3rec_line(tmp_path: Path) -> None:
    write(tmp_path / "Beauty.txt", "1 2 3\n2\n3 4\n\n")
    assert "Beauty.txt: line 2 has no items" in error("s3rec", tmp_path, category="Beauty")


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_missing_column(tmp_path: Path, suffix: str) -> None:
    frame, path = plain_frame().rename(columns={"item_id": "itemId"}), tmp_path / f"interactions.{suffix}"
    {"csv": lambda: frame.to_csv(path, index=False), "parquet": lambda: frame.to_parquet(path),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()  # fmt: skip
    message = error("plain", tmp_path)
    assert path.name in message and "no column 'item_id'" in message and "'itemId'" in message


def test_missing_json_field_names_line(tmp_path: Path) -> None:
    reviews = '{"reviewerID": "U", "asin": "A", "unixReviewTime": 1}\n{"reviewerID": "U"}\n'
    write(tmp_path / "reviews_B_5.json.gz", reviews)
    message = error("amazon", tmp_path, category="B")
    assert "reviews_B_5.json.gz: line 2: no field 'asin'" in message and "['reviewerID']" in message


U_ITEM = "10|T||||" + "|".join("0" * 19) + "\n"
ML_20M_MOVIES = "movieId,title,genres\n2,T,G\n"


@pytest.mark.parametrize(
    "name, files, where",
    [
        ("plain", {"interactions.csv": "user_id,item_id,timestamp\nu,a,1\nu,b,soon\n"}, "line 3: timestamp 'soon'"),
        ("ml-1m", {"ratings.dat": "1::10::5::1\n1::20::3::x7\n", "movies.dat": "10::T::G\n"}, "line 2: timestamp 'x7'"),
        ("ml-100k", {"u.data": "1\t10\t5\t100\n1\t20\t3\t1e\n", "u.item": U_ITEM}, "line 2: timestamp '1e'"),
        (
            "ml-20m",
            {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,7\n1,2,3,abc\n", "movies.csv": ML_20M_MOVIES},
            "line 3: timestamp 'abc'",
        ),
        (
            "amazon",
            {"reviews_B_5.json.gz": '{"reviewerID": "U", "asin": "A", "unixReviewTime": "May 1"}\n'},
            "line 1: timestamp 'May 1'",
        ),
    ],
)
def test_non_numeric_timestamp(tmp_path: Path, name: str, files: dict[str, str], where: str) -> None:
    for file_name, content in files.items():
        write(tmp_path / file_name, content)
    message = error(name, tmp_path, **({"category": "B"} if name == "amazon" else {}))
    assert f"{next(iter(files))}: {where}" in message and "not a number" in message


@pytest.mark.parametrize(
    "name, files, cut",
    [
        ("ml-1m", {"movies.dat": "10::T::G\n20::U::G\n", "ratings.dat": "1::10::5::978300760\n1::20::3::97830"}, "ratings.dat: line 2"),
        ("ml-1m", {"ratings.dat": "1::10::5::978300760\n", "movies.dat": "10::T::G\n20::U::Dr"}, "movies.dat: line 2"),
        ("ml-100k", {"u.item": U_ITEM, "u.data": "1\t10\t5\t881250949\n1\t20\t3\t8812"}, "u.data: line 2"),
        ("ml-20m", {"movies.csv": ML_20M_MOVIES, "ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,1112486027\n1,2,3,11"},
         "ratings.csv: line 3"),
        ("s3rec", {"Beauty.txt": "1 5 6 7\n2 6 12"}, "Beauty.txt: line 2"),
    ],
)
def test_a_published_file_cut_mid_line_is_refused(tmp_path: Path, name: str, files: dict[str, str], cut: str) -> None:
    # the cut line still parses (a smaller timestamp or item id), so only the missing line break tells
    for file, content in files.items():
        write(tmp_path / file, content)
    options = {"category": "Beauty"} if name == "s3rec" else {}
    message = error(name, tmp_path, **options)
    assert f"{cut}, the last, has no line break" in message and "cut short" in message


def test_a_plain_csv_without_final_line_break_loads_with_a_warning(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2")
    with pytest.warns(UserWarning, match="interactions.csv: the last line has no line break"):
        raw = load("plain", tmp_path)
    assert raw.interactions["timestamp"].tolist() == [1, 2]


def test_a_gzip_file_cut_short_is_a_data_error(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"reviewerID": "U", "asin": f"T{i}", "unixReviewTime": i}) + "\n" for i in range(500))
    (tmp_path / "reviews_Toys_5.json.gz").write_bytes(gzip.compress(lines.encode())[:-40])
    assert "unreadable after line" in error("amazon", tmp_path, category="Toys")


@pytest.mark.parametrize(
    "name, files, where",
    [
        ("plain", {"interactions.csv": "user_id,item_id\nu,a\nu,b\nuser_id,item_id\nv,a\nv,b\n"}, "interactions.csv: line 4"),
        ("plain", {"interactions.csv": "user_id,item_id,timestamp\nu,a,1\nuser_id,item_id,timestamp\nv,a,2\n"},
         "interactions.csv: line 3"),
        ("ml-20m", {"movies.csv": ML_20M_MOVIES + "movieId,title,genres\n3,U,G\n",
                    "ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,1112486027\n"}, "movies.csv: line 3"),
    ],
)
def test_a_repeated_header_row_is_refused(tmp_path: Path, name: str, files: dict[str, str], where: str) -> None:
    for file, content in files.items():
        write(tmp_path / file, content)
    assert f"{where} repeats the header" in error(name, tmp_path)


def test_gz_name_on_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "reviews_B_5.json.gz").write_text('{"reviewerID": "U", "asin": "A", "unixReviewTime": 1}\n')
    assert "reviews_B_5.json.gz: unreadable after line 0" in error("amazon", tmp_path, category="B")


def test_items_jsonl_line_not_json(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\n")
    write(tmp_path / "items.jsonl", '{"item_id": "a"}\n{"item_id": "b",\n')
    assert "items.jsonl: line 2 is not valid JSON" in error("plain", tmp_path)


def test_unknown_item_text_is_an_error_by_default_for_plain(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\n")
    write(tmp_path / "items.jsonl", "".join(json.dumps({"item_id": i, "title": i}) + "\n" for i in "abcdefgh"))
    message = error("plain", tmp_path)
    assert "items.jsonl: 7 item id(s)" in message and "'b', 'c', 'd', 'e', 'f'" in message and "'g'" not in message
    raw = load("plain", tmp_path, unknown_item_text="ignore")
    assert raw.items["item"].tolist() == ["a"] and raw.counts["item_text_unknown_ids"] == 7


def test_unknown_item_text_policy_is_checked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown_item_text='drop'"):
        get_source("plain", root=str(tmp_path), unknown_item_text="drop")


@pytest.mark.parametrize("content", ["", "user_id,item_id\n", "user_id,item_id\n\n"])
def test_empty_interactions_file(tmp_path: Path, content: str) -> None:
    write(tmp_path / "interactions.csv", content)
    message = error("plain", tmp_path)
    assert "interactions.csv" in message and ("empty" in message or "no interactions" in message)


def test_several_interaction_files_are_ambiguous(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\n")
    write(tmp_path / "interactions.jsonl", '{"user_id": "u", "item_id": "a"}\n')
    assert "interactions_file" in error("plain", tmp_path)


# ---- downloads -------------------------------------------------------------------------------


def ml_1m_zip(tmp_path: Path) -> bytes:
    folder = write_ml_1m(tmp_path / "src")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in ("ratings.dat", "movies.dat", "README"):
            zf.writestr(f"ml-1m/{name}", (folder / name).read_bytes() if name != "README" else b"readme")
    return buffer.getvalue()


def serve(monkeypatch: pytest.MonkeyPatch, payload: bytes) -> list[str]:
    requested: list[str] = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        assert timeout > 0
        requested.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(download, "urlopen", urlopen)
    return requested


def test_download_verifies_and_extracts_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = ml_1m_zip(tmp_path)
    official = sources.MOVIELENS["ml-1m"]
    monkeypatch.setitem(sources.MOVIELENS, "ml-1m", dataclasses.replace(official, md5=hashlib.md5(payload).hexdigest()))
    requested = serve(monkeypatch, payload)
    raw = get_source("ml-1m", cache_dir=str(tmp_path / "cache")).load()
    assert requested == [official.url] and len(raw.interactions) == 3
    assert sorted(p.name for p in (tmp_path / "cache" / "ml-1m").iterdir()) == [".downloaded.json", "movies.dat", "ratings.dat"]
    get_source("ml-1m", cache_dir=str(tmp_path / "cache")).load()
    assert len(requested) == 1  # the cached copy is reused


def test_a_downloaded_file_changed_since_its_checked_download_is_fetched_again(tmp_path, monkeypatch, caplog):
    payload = ml_1m_zip(tmp_path)
    official = sources.MOVIELENS["ml-1m"]
    monkeypatch.setitem(sources.MOVIELENS, "ml-1m", dataclasses.replace(official, md5=hashlib.md5(payload).hexdigest()))
    requested = serve(monkeypatch, payload)
    cache = str(tmp_path / "cache")
    good = load_sequences(get_source("ml-1m", cache_dir=cache))
    ratings = tmp_path / "cache" / "ml-1m" / "ratings.dat"
    ratings.write_bytes(ratings.read_bytes().replace(b"1::10::", b"1::20::", 1))  # same size: bytes rot on disk
    with caplog.at_level("WARNING", logger="genrec.data.sources"):
        again = load_sequences(get_source("ml-1m", cache_dir=cache))
    assert again.items.tolist() == good.items.tolist() and list(again.item_ids) == list(good.item_ids)
    assert len(requested) == 2 and str(ratings) in caplog.text
    ratings.write_bytes(ratings.read_bytes()[:-5])  # cut short, and no download allowed: an error naming the file
    with pytest.raises(DataError, match=rf"{ratings}.*changed since it was downloaded.*delete it"):
        load_sequences(get_source("ml-1m", cache_dir=cache, download=False))


def test_the_first_download_caches_the_data_under_the_key_of_the_downloaded_files(tmp_path, monkeypatch):
    payload = ml_1m_zip(tmp_path)
    official = sources.MOVIELENS["ml-1m"]
    monkeypatch.setitem(sources.MOVIELENS, "ml-1m", dataclasses.replace(official, md5=hashlib.md5(payload).hexdigest()))
    serve(monkeypatch, payload)
    source = get_source("ml-1m", cache_dir=str(tmp_path / "cache"))
    load_sequences(source)  # the fingerprint taken before the download would differ from the one after
    assert preprocess.load(cache_folder(source, 0, 0), source.fingerprint()) is not None


def test_checksum_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = ml_1m_zip(tmp_path)
    serve(monkeypatch, payload)
    with pytest.raises(DataError) as info:
        get_source("ml-1m", cache_dir=str(tmp_path / "cache")).load()
    message = str(info.value)
    assert "ml-1m.zip" in message and "c4d9eecfca2ab87c1945afe126590906" in message
    assert hashlib.md5(payload).hexdigest() in message
    assert list((tmp_path / "cache" / "ml-1m").iterdir()) == []


class CutOff(io.BytesIO):
    def read(self, size: int = -1) -> bytes:
        raise http.client.IncompleteRead(b"1 2", 100)


@pytest.mark.parametrize("failure", [urllib.error.URLError("no route to host"), CutOff()])
def test_network_failure_says_where_to_put_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception | io.BytesIO
) -> None:
    def urlopen(url: str, timeout: float) -> io.BytesIO:
        if isinstance(failure, Exception):
            raise failure
        return failure

    monkeypatch.setattr(download, "urlopen", urlopen)
    with pytest.raises(DataError) as info:
        get_source("s3rec", cache_dir=str(tmp_path), category="Beauty").load()
    message = str(info.value)
    assert "download failed" in message and "Beauty.txt" in message and str(tmp_path / "s3rec") in message
    assert "root=" in message and list((tmp_path / "s3rec").iterdir()) == []


def test_root_and_download_false_never_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requested = serve(monkeypatch, b"")
    assert "lacks u.data" in error("ml-100k", tmp_path)
    with pytest.raises(DataError, match="download=True"):
        get_source("ml-100k", cache_dir=str(tmp_path), download=False).load()
    assert requested == []


# ---- one id, one item (issue 38) -------------------------------------------------------------


def ids_of(raw: RawData) -> tuple[list[str], list[str]]:
    return raw.interactions["user"].tolist(), raw.interactions["item"].tolist()


@pytest.mark.parametrize(
    "name, files, changed",
    [
        ("plain", {"interactions.csv": "user_id, item_id\nu1, a\nu1,a \n"}, {"item_ids_stripped": 2}),
        ("ml-1m", {"ratings.dat": "u1:: a::5::1\nu1::a::4::2\n", "movies.dat": " a::A::G\n"},
         {"item_ids_stripped": 1, "item_text_ids_stripped": 1}),
        ("ml-100k", {"u.data": "u1\t a\t5\t1\nu1 \ta\t4\t2\n", "u.item": "a|A||||" + "|".join("0" * 19) + "\n"},
         {"user_ids_stripped": 1, "item_ids_stripped": 1}),
        ("amazon", {"reviews_B_5.json": '{"reviewerID": "u1", "asin": " a", "unixReviewTime": 1}\n'
                                        '{"reviewerID": "u1 ", "asin": "a", "unixReviewTime": 2}\n'},
         {"user_ids_stripped": 1, "item_ids_stripped": 1}),
    ],
)
def test_spaces_around_an_id_do_not_make_another_item(tmp_path: Path, name: str, files: dict[str, str],
                                                      changed: dict[str, int]) -> None:
    for file, content in files.items():
        write(tmp_path / file, content)
    raw = load(name, tmp_path, **({"category": "B"} if name == "amazon" else {}))
    assert ids_of(raw) == (["u1", "u1"], ["a", "a"])
    assert {key: count for key, count in raw.counts.items() if key.endswith("_stripped")} == changed


def test_an_id_written_as_a_json_number_or_string_is_one_id(tmp_path: Path) -> None:
    lines = [{"user_id": 1, "item_id": "a"}, {"user_id": "1", "item_id": 7.0}, {"user_id": 1.0, "item_id": 7},
             {"user_id": "007", "item_id": 1.5}, {"user_id": 12345678901234567891, "item_id": "1.0"}]
    write(tmp_path / "interactions.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    raw = load("plain", tmp_path)
    assert ids_of(raw) == (["1", "1", "1", "007", "12345678901234567891"], ["a", "7", "7", "1.5", "1.0"])
    assert raw.counts == {"user_ids_float_to_int": 1, "item_ids_float_to_int": 1}


def test_parquet_float_ids_are_the_integers_they_hold(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [1.0, 1.0, 2.0], "item_id": pd.Series([10, 11, 10], dtype="int32")})
    frame.to_parquet(tmp_path / "interactions.parquet")
    raw = load("plain", tmp_path)
    assert ids_of(raw) == (["1", "1", "2"], ["10", "11", "10"]) and raw.counts == {"user_ids_float_to_int": 3}


def test_item_text_ids_take_the_same_form_as_the_interactions(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,1\nu,2\n")
    write(tmp_path / "items.jsonl", '{"item_id": 1.0, "title": "One"}\n{"item_id": " 2", "title": "Two"}\n')
    raw = load("plain", tmp_path)  # unknown_item_text="error": an unmatched id would fail
    assert raw.items[["item", "title"]].values.tolist() == [["1", "One"], ["2", "Two"]]
    assert raw.counts["item_text_ids_float_to_int"] == 1 and raw.counts["item_text_ids_stripped"] == 1


@pytest.mark.parametrize("name", ["plain", "ml-1m"])
def test_na_like_text_is_an_id_and_only_an_empty_field_is_missing(tmp_path: Path, name: str) -> None:
    ids = ["NA", "None", "null", "NaN", "n/a"]
    if name == "plain":
        write(tmp_path / "interactions.csv", "user_id,item_id\n" + "".join(f"{i},{i}\n" for i in ids))
    else:
        write(tmp_path / "ratings.dat", "".join(f"{i}::{i}::5::1\n" for i in ids))
        write(tmp_path / "movies.dat", "".join(f"{i}::{i} (2000)::G\n" for i in ids))
    raw = load(name, tmp_path)
    assert ids_of(raw) == (ids, ids)
    if name == "ml-1m":
        assert raw.items["title"].tolist() == [f"{i} (2000)" for i in ids]
    write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\n,b\n")
    write(tmp_path / "ratings.dat", "u::a::5::1\n::b::5::1\n")
    where = "interactions.csv: line 3" if name == "plain" else "ratings.dat: line 2"
    assert f"{where}: no value for 'user'" in error(name, tmp_path)


@pytest.mark.parametrize(
    "value, kind", [('["a", "b"]', "a list"), ('{"id": 1}', "a dict"), ("true", "a boolean"), ("Infinity", "an infinite number")]
)
def test_an_id_that_is_not_text_or_a_number_names_the_line(tmp_path: Path, value: str, kind: str) -> None:
    write(tmp_path / "interactions.jsonl", f'{{"user_id": "u", "item_id": "a"}}\n\n{{"user_id": "u", "item_id": {value}}}\n')
    message = error("plain", tmp_path)
    assert "interactions.jsonl: line 3: the item id" in message and f"is {kind}, not an id" in message


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_a_blank_id_names_the_line(tmp_path: Path, suffix: str) -> None:
    if suffix == "jsonl":
        write(tmp_path / "interactions.jsonl", '{"user_id": "u", "item_id": "a"}\n{"user_id": "u", "item_id": "  "}\n')
    else:
        write(tmp_path / "interactions.csv", "user_id,item_id\nu,a\nu,  \n")
    where = "interactions.jsonl: line 2" if suffix == "jsonl" else "interactions.csv: line 3"
    assert f"{where}: the item id '  ' is blank" in error("plain", tmp_path)


# ---- readers that name the file (issue 38) ---------------------------------------------------


@pytest.mark.parametrize(
    "name, files, where",
    [
        ("ml-1m", {"ratings.dat": b"1::10::5::1\n1::2\xe9::5::2\n", "movies.dat": b"10::A::G\n"}, "ratings.dat: line 2, byte 5 (0xe9)"),
        ("ml-100k", {"u.data": b"1\t10\t5\t1\n\xff\t10\t5\t2\n", "u.item": U_ITEM.encode()}, "u.data: line 2, byte 1 (0xff)"),
        ("ml-20m", {"ratings.csv": b"userId,movieId,rating,timestamp\n1,2,3,7\n1,\xe92,3,8\n", "movies.csv": ML_20M_MOVIES.encode()},
         "ratings.csv: line 3, byte 3 (0xe9)"),
        ("plain", {"interactions.csv": b"user_id,item_id\nu,a\nu,caf\xe9\n"}, "interactions.csv: line 3, byte 6 (0xe9)"),
        ("plain", {"interactions.jsonl": b'{"user_id": "u", "item_id": "a"}\n{"user_id": "u", "item_id": "\xe9"}\n'},
         "interactions.jsonl: line 2, byte 30 (0xe9)"),
        ("s3rec", {"Beauty.txt": b"1 2 3\n2 3 \xe9\n"}, "Beauty.txt: line 2, byte 5 (0xe9)"),
    ],
)
def test_a_byte_the_encoding_cannot_read_names_the_line(tmp_path: Path, name: str, files: dict[str, bytes], where: str) -> None:
    for file, content in files.items():
        (tmp_path / file).write_bytes(content)
    message = error(name, tmp_path, **({"category": "Beauty"} if name == "s3rec" else {}))
    assert f"{where} is not valid utf-8" in message
    assert ("dataset_options.encoding" if name.startswith("ml") else "save the file as") in message


@pytest.mark.parametrize("name, movies", [("ml-1m", "movies.dat"), ("ml-100k", "u.item")])
@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_movie_titles_are_read_in_the_encoding_they_were_saved_in(tmp_path: Path, name: str, movies: str, encoding: str) -> None:
    # the releases are latin-1; an editor re-saves them as UTF-8, which latin-1 would read as "AmÃ©lie"
    if name == "ml-1m":
        write(tmp_path / "ratings.dat", "1::10::5::1\n")
        write(tmp_path / movies, "10::Amélie (2001)::Comedy\n", encoding)
    else:
        write(tmp_path / "u.data", "1\t10\t5\t1\n")
        write(tmp_path / movies, "10|Amélie (2001)||||" + "|".join("0" * 19) + "\n", encoding)
    assert load(name, tmp_path).items["title"].tolist() == ["Amélie (2001)"]
    assert load(name, tmp_path, encoding=encoding).items["title"].tolist() == ["Amélie (2001)"]
    if encoding == "latin-1":
        where = "movies.dat: line 1, byte 7" if name == "ml-1m" else "u.item: line 1, byte 6"
        assert f"{where} (0xe9) is not valid utf-8" in error(name, tmp_path, encoding="utf-8")


def test_an_unknown_encoding_option_is_refused() -> None:
    with pytest.raises(DataError, match="encoding='latin-2x' is not a codec"):
        get_source("ml-1m", encoding="latin-2x")


def test_a_gzipped_csv_cut_short_is_a_data_error_naming_it(tmp_path: Path) -> None:
    rows = "user_id,item_id\n" + "".join(f"u{i % 7},i{i}\n" for i in range(2000))
    write(tmp_path / "interactions.csv.gz", rows)
    assert len(load("plain", tmp_path, interactions_file="interactions.csv.gz").interactions) == 2000
    (tmp_path / "interactions.csv.gz").write_bytes((tmp_path / "interactions.csv.gz").read_bytes()[:-30])
    message = error("plain", tmp_path, interactions_file="interactions.csv.gz")
    assert "interactions.csv.gz: unreadable" in message and "cut short" in message


def test_gzipped_json_lines_are_read_as_json_lines(tmp_path: Path) -> None:
    write(tmp_path / "interactions.jsonl.gz", '{"user_id": "u", "item_id": "a", "timestamp": 5}\n')
    assert load("plain", tmp_path, interactions_file="interactions.jsonl.gz").interactions.values.tolist() == [["u", "a", 5]]


# ---- timestamps and columns read once (issue 38) ---------------------------------------------


@pytest.mark.parametrize("suffix, where", [("csv", "line 2"), ("jsonl", "line 1"), ("parquet", "row 1")])
def test_a_boolean_timestamp_is_refused(tmp_path: Path, suffix: str, where: str) -> None:
    frame = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": [False, True]})
    path = tmp_path / f"interactions.{suffix}"
    {"csv": lambda: frame.to_csv(path, index=False), "parquet": lambda: frame.to_parquet(path),
     "jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()  # fmt: skip
    assert f"interactions.{suffix}: {where}: timestamp False is a boolean" in error("plain", tmp_path)


def test_a_boolean_among_numeric_json_timestamps_is_refused(tmp_path: Path) -> None:
    lines = '{"user_id": "u", "item_id": "a", "timestamp": 5}\n{"user_id": "u", "item_id": "b", "timestamp": true}\n'
    write(tmp_path / "interactions.jsonl", lines)
    assert "interactions.jsonl: line 2: timestamp True is a boolean" in error("plain", tmp_path)


@pytest.mark.parametrize(
    "name, files, where",
    [
        ("plain", {"interactions.csv": "user_id,item_id,timestamp,timestamp\nu,a,1,9\nu,b,2,8\n"},
         "interactions.csv: line 1, the header, names the column(s) ['timestamp'] more than once"),
        ("plain", {"interactions.csv": "user_id,item_id, user_id\nu,a,v\n"},
         "interactions.csv: line 1, the header, names the column(s) ['user_id'] more than once"),
        ("plain", {"interactions.jsonl": '{"user_id": "u", "item_id": "a", "timestamp": 1}\n'
                                         '{"user_id": "u", "item_id": "b", "timestamp": 2, "timestamp": 0}\n'},
         "interactions.jsonl: line 2 names the field(s) ['timestamp'] more than once"),
        ("ml-20m", {"ratings.csv": "userId,movieId,rating,timestamp,timestamp\n1,2,3,7,9\n", "movies.csv": ML_20M_MOVIES},
         "ratings.csv: line 1, the header, names the column(s) ['timestamp'] more than once"),
    ],
)
def test_a_column_named_twice_is_refused(tmp_path: Path, name: str, files: dict[str, str], where: str) -> None:
    for file, content in files.items():
        write(tmp_path / file, content)
    assert where in error(name, tmp_path)


def test_a_parquet_column_named_twice_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [pa.array(["u", "u"]), pa.array(["a", "b"]), pa.array([1, 2]), pa.array([9, 8])]
    pq.write_table(pa.table(columns, names=["user_id", "item_id", "timestamp", "timestamp"]), tmp_path / "interactions.parquet")
    assert "interactions.parquet names the column(s) ['timestamp'] more than once" in error("plain", tmp_path)


def test_a_column_whose_name_only_looks_renamed_is_read(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp.1\nu,a,1\n")
    assert load("plain", tmp_path).interactions.values.tolist() == [["u", "a"]]


@pytest.mark.parametrize(
    "name, file, content",
    [("s3rec", "Beauty.txt", "u1 a b\n"), ("plain", "interactions.jsonl", '{"user_id": "u1", "item_id": "a"}\n'),
     ("plain", "interactions.csv", "user_id,item_id\nu1,a\n"), ("ml-1m", "ratings.dat", "u1::a::5::1\n")],
)
def test_a_byte_order_mark_is_not_part_of_the_first_id(tmp_path: Path, name: str, file: str, content: str) -> None:
    write(tmp_path / file, content, "utf-8-sig")
    write(tmp_path / "movies.dat", "a::A::G\n", "utf-8-sig")
    assert load(name, tmp_path, **({"category": "Beauty"} if name == "s3rec" else {})).interactions["user"][0] == "u1"
