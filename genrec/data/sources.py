"""Readers for the official dataset formats (MovieLens, Amazon reviews, S3-Rec, a plain layout): each returns
``RawData``, and bad input is a ``DataError`` naming the file, the line (1-based) or column, and what to do."""
from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import json
import logging
import math
import re
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import pandas as pd

from genrec.data.download import Download, fetch, recorded
from genrec.data.raw import DataError, RawData
from genrec.data.registry import Source, register_source
from genrec.digests import Verified

log = logging.getLogger(__name__)

UNKNOWN_ITEM_TEXT_POLICIES = ("error", "ignore")
GROUPLENS = "https://files.grouplens.org/datasets/movielens"
MOVIELENS = {
    "ml-1m": Download(f"{GROUPLENS}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", ("ratings.dat", "movies.dat")),
    "ml-100k": Download(
        f"{GROUPLENS}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", ("u.data", "u.item", "u.genre")
    ),
    "ml-20m": Download(f"{GROUPLENS}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3", ("ratings.csv", "movies.csv")),
}
RATING_FIELDS = ["user", "item", "rating", "timestamp"]
ML_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
# The Amazon and S3-Rec publishers give no checksums, so those downloads are not verified.
AMAZON_URLS = {
    "2014": (
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_{category}_5.json.gz",
        "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/meta_{category}.json.gz",
    ),
    "2018": (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/{category}_5.json.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/metaFiles2/meta_{category}.json.gz",
    ),
    "2023": (
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/review_categories/{category}.jsonl.gz",
        "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/meta_categories/meta_{category}.jsonl.gz",
    ),
}
# Per release: the reviews' user, item and time fields, the time's unit, and the metadata's item field.
AMAZON_FIELDS = {
    "2014": ("reviewerID", "asin", "unixReviewTime", "s", "asin"),
    "2018": ("reviewerID", "asin", "unixReviewTime", "s", "asin"),
    "2023": ("user_id", "parent_asin", "timestamp", "ms", "parent_asin"),
}
AMAZON_TEXT = ["title", "description", "brand", "categories"]
S3REC_URL = "https://raw.githubusercontent.com/RUCAIBox/CIKM2020-S3Rec/master/data/{category}.txt"
PLAIN_INTERACTIONS = ("interactions.csv", "interactions.parquet", "interactions.jsonl")
# pandas' C parser takes one-character separators only; the unit separator never occurs in text.
ONE_BYTE_SEP = "\x1f"
PANDAS_FIELD_COUNT = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
INT64_MAX = np.iinfo(np.int64).max
ASIN = r"""["']{key}["']\s*:\s*["']([^"'\\]+)["']"""
MANGLED = re.compile(r".+\.\d+")  # pandas renames a repeated column name ``name`` to ``name.1``
# only an empty field is missing: "NA", "None" or "null" are ids and titles like any other text
NA_FIELDS = {"keep_default_na": False, "na_values": [""]}
UNREADABLE_GZIP = (EOFError, gzip.BadGzipFile, zlib.error)
MOVIELENS_ENCODING_FIX = ("fetch the official file again, or set data.dataset_options.encoding to the encoding the "
                          "file was saved in (e.g. latin-1)")

Where = Callable[[int], str]  # row position -> "line N" / "row N", for error messages


@dataclass(frozen=True)
class EngineScan:
    """An interactions file the engine may read itself (``engine.read``): its field names -> ``u``, ``i``, ``t``
    (``optional`` ones when present) and its layout (``delimited``, ``json`` or ``parquet``; ``.gz`` is gzip)."""

    path: Path
    columns: dict[str, str]
    optional: dict[str, str] = dataclass_field(default_factory=dict)
    format: str = "delimited"
    delimiter: str = ","
    names: tuple[str, ...] | None = None
    quote: bool = True
    strict: bool = True
    time_unit: str = "s"


class FileSource(Source):
    """A dataset whose files sit in ``root`` if given (never downloaded into), else ``cache_dir/<name>``;
    ``defaults`` lists the options a reader accepts."""

    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, root: str | None = None, cache_dir: str | None = None, download: bool = True, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise DataError(f"{self.name}: unknown option(s) {unknown}; valid options: {sorted(self.defaults)}")
        super().__init__(root, cache_dir, download, **{**self.defaults, **options})
        self.check_options()

    def check_options(self) -> None:
        policy = self.options.get("unknown_item_text", "error")
        if policy not in UNKNOWN_ITEM_TEXT_POLICIES:
            raise DataError(f"{self.name}: unknown_item_text={policy!r}; use one of {UNKNOWN_ITEM_TEXT_POLICIES}")

    def required_files(self) -> list[str]:
        raise NotImplementedError

    def optional_files(self) -> list[str]:
        return []

    def downloads(self) -> list[Download]:
        return []

    @property
    def folder(self) -> Path:
        return self.root if self.root is not None else self.cache_dir / self.name

    def input_files(self) -> list[Path]:
        return [self.folder / name for name in self.required_files() + self.optional_files()]

    def file_digests(self, verified: Verified | None = None) -> dict[str, str]:
        """Downloads missing files first, and again any downloaded file changed since its checked download."""
        self.resolve()
        digests = super().file_digests(verified)
        kept = recorded(self.folder) if self.root is None else {}
        changed = [self.folder / name for name, digest in kept.items() if name in digests and digests[name] != digest]
        if not changed:
            return digests
        names = ", ".join(map(str, changed))
        if not (self.download and self.downloads()):
            raise DataError(f"{names} changed since it was downloaded and checked (a damaged disk or a stray write); "
                            "delete it to download it again")
        log.warning("%s changed since it was downloaded and checked; downloading it again", names)
        for path in changed:
            path.unlink()
        self.resolve()
        return super().file_digests(verified)

    def resolve(self) -> Path:
        """The folder holding every required file, downloading into the cache when needed and allowed."""
        folder, expected = self.folder, ", ".join(self.required_files())
        if self.root is None and self.download and self._missing(folder) and self.downloads():
            try:
                fetch(self.downloads(), folder)
            except OSError as err:
                raise DataError(f"{self.name}: download failed ({err}); put {expected} into {folder} yourself "
                                f"({self.where_to_get()}), or pass root= a folder that holds them") from err
        missing = self._missing(folder)
        if missing:
            raise DataError(f"{self.name}: {folder} lacks {', '.join(missing)} (expected: {expected}); "
                            f"{self.where_to_get()}")
        return folder

    def where_to_get(self) -> str:
        urls = ", ".join(d.url for d in self.downloads())
        unzip = " and unzip it" if any(d.extract for d in self.downloads()) else ""
        allow = ", or pass download=True" if self.root is None and not self.download else ""
        return f"download {urls} into it{unzip}{allow}" if urls else "put them there"

    def _missing(self, folder: Path) -> list[str]:
        return [name for name in self.required_files() if not (folder / name).is_file()]

    def _items_policy(self) -> str:
        return self.options["unknown_item_text"]

    def engine_scan(self) -> EngineScan | None:
        """The interactions file, when the engine may read it without ``load`` (then ``load_items`` reads the text)."""
        return None

    def _with_items(self, interactions: pd.DataFrame, counts: dict[str, int]) -> RawData:
        return RawData(self.name, interactions, self.load_items(set(interactions["item"].unique()), counts), counts)

    def load_items(self, known: set[str], counts: dict[str, int]) -> pd.DataFrame | None:
        raise NotImplementedError


class MovieLens(FileSource):
    """The GroupLens releases; movies nobody rated are dropped and counted. ``encoding``: docs/datasets.md."""

    defaults = {"unknown_item_text": "ignore", "encoding": "auto"}
    separator = ""  # of the header-less ratings file; ML-20M's ratings are a CSV with a header

    def check_options(self) -> None:
        super().check_options()
        encoding = self.options["encoding"]
        if encoding != "auto":
            try:
                codecs.lookup(encoding)
            except (LookupError, TypeError):
                raise DataError(f"{self.name}: encoding={encoding!r} is not a codec Python knows; use 'auto', "
                                "'utf-8' or 'latin-1'") from None

    @property
    def ratings_encoding(self) -> str:
        return "utf-8" if self.options["encoding"] == "auto" else self.options["encoding"]

    def required_files(self) -> list[str]:
        return [name for name in MOVIELENS[self.name].extract if name not in self.optional_files()]

    def optional_files(self) -> list[str]:
        return ["u.genre"] if self.name == "ml-100k" else []

    def downloads(self) -> list[Download]:
        return [MOVIELENS[self.name]]

    def load(self) -> RawData:
        path, counts = self.resolve() / MOVIELENS[self.name].extract[0], {}
        if self.separator:
            ratings = read_fields(path, self.separator, RATING_FIELDS, ("rating", "timestamp"), self.ratings_encoding)
            return self._with_items(interaction_frame(ratings, path, counts), counts)
        ratings = read_csv(path, {"userId": "user", "movieId": "item", "timestamp": "timestamp"}, self.ratings_encoding)
        return self._with_items(interaction_frame(ratings, path, counts, lambda i: f"line {i + 2}"), counts)

    def engine_scan(self) -> EngineScan | None:
        """The ratings file, for the engine when the readers read it as UTF-8."""
        if self.ratings_encoding.replace("-", "").lower() != "utf8":
            return None
        path = self.resolve() / MOVIELENS[self.name].extract[0]
        if not self.separator:
            return EngineScan(path, {"userId": "u", "movieId": "i", "timestamp": "t"})
        return EngineScan(path, {"user": "u", "item": "i", "timestamp": "t"}, delimiter=self.separator,
                          names=tuple(RATING_FIELDS), quote=False)

    def _movies(self) -> tuple[pd.DataFrame, Path, Where]:
        """The catalogue (``item`` and text columns, as read), its file, and how its rows are named."""
        raise NotImplementedError

    def load_items(self, known: set[str], counts: dict[str, int]) -> pd.DataFrame:
        movies, path, where = self._movies()
        return keep_known_items(item_frame(movies, path, counts, where), known, path, self._items_policy(), counts)


@register_source("ml-1m")
class MovieLens1M(MovieLens):
    separator = "::"

    def _movies(self) -> tuple[pd.DataFrame, Path, Where]:
        path = self.folder / "movies.dat"
        movies = read_fields(path, "::", ["item", "title", "genres"], encoding=self.options["encoding"])
        movies["genres"] = movies["genres"].str.replace("|", ", ", regex=False)
        return movies, path, lambda i: f"line {i + 1}"


@register_source("ml-100k")
class MovieLens100K(MovieLens):
    separator = "\t"

    def _movies(self) -> tuple[pd.DataFrame, Path, Where]:
        path = self.folder / "u.item"
        genres = read_genre_names(self.folder / "u.genre")
        fields = ["item", "title", "release_date", "video_release_date", "url", *genres]
        movies = read_fields(path, "|", fields, encoding=self.options["encoding"], may_be_empty=fields[1:5])
        flags = movies[list(genres)].to_numpy() == "1"
        movies["genres"] = [", ".join(np.asarray(genres)[row]) for row in flags]
        return movies[["item", "title", "genres"]], path, lambda i: f"line {i + 1}"


@register_source("ml-20m")
class MovieLens20M(MovieLens):
    def _movies(self) -> tuple[pd.DataFrame, Path, Where]:
        path = self.folder / "movies.csv"
        movies = read_csv(path, {"movieId": "item", "title": "title", "genres": "genres"}, self.options["encoding"])
        # "(no genres listed)" is the release's placeholder for missing text
        genres = movies["genres"].replace("(no genres listed)", "")
        movies["genres"] = genres.str.replace("|", ", ", regex=False)
        return movies, path, lambda i: f"line {i + 2}"


@register_source("amazon")
class Amazon(FileSource):
    """McAuley's Amazon review dumps (``version`` 2014, 2018 or 2023) plus optional metadata, whose products
    without reviews are dropped and counted (docs/datasets.md)."""

    defaults = {"category": None, "version": 2014, "reviews_file": None, "meta_file": None,
                "unknown_item_text": "ignore"}

    def check_options(self) -> None:
        super().check_options()
        self.options["version"] = str(self.options["version"])  # 2014 and "2014" are the same input
        if self.options["version"] not in AMAZON_URLS:
            raise DataError(f"amazon: version={self.options['version']!r}; use 2014, 2018 or 2023")
        if self.options["category"] is None and self.options["reviews_file"] is None:
            raise DataError("amazon: set category (e.g. 'Beauty') or reviews_file")

    def downloads(self) -> list[Download]:
        category = self.options["category"]
        if category is None:
            return []
        return [Download(url.format(category=category)) for url in AMAZON_URLS[self.options["version"]]]

    def _file_names(self) -> tuple[str, str | None]:
        """Explicit ``reviews_file``/``meta_file`` first, else the published names (or their gunzipped copies)."""
        published = [self._gunzipped_if_present(d.filename) for d in self.downloads()] or [None, None]
        return self.options["reviews_file"] or published[0], self.options["meta_file"] or published[1]

    def _gunzipped_if_present(self, name: str) -> str:
        plain = name.removesuffix(".gz")
        return plain if not (self.folder / name).is_file() and (self.folder / plain).is_file() else name

    def required_files(self) -> list[str]:
        reviews, meta = self._file_names()
        return [reviews] + ([meta] if self.options["meta_file"] else [])

    def optional_files(self) -> list[str]:
        meta = self._file_names()[1]
        return [meta] if meta and not self.options["meta_file"] else []

    def load(self) -> RawData:
        counts: dict[str, int] = {}
        return self._with_items(read_amazon_reviews(self.resolve() / self._file_names()[0], counts,
                                                    self.options["version"]), counts)

    def engine_scan(self) -> EngineScan | None:
        user, item, time, unit, _ = AMAZON_FIELDS[self.options["version"]]
        reviews = self.resolve() / self._file_names()[0]
        # 2014 and 2018 files may hold Python literals, read as such (a key given twice: the last)
        return EngineScan(reviews, {user: "u", item: "i", time: "t"}, format="json",
                          strict=self.options["version"] == "2023", time_unit=unit)

    def load_items(self, known: set[str], counts: dict[str, int]) -> pd.DataFrame | None:
        meta = self._file_names()[1]
        if meta is None or not (self.folder / meta).is_file():
            return None
        return read_amazon_meta(self.folder / meta, known, self._items_policy(), counts, self.options["version"])


@register_source("s3rec")
class S3Rec(FileSource):
    """S3-Rec's preprocessed sequences: one line per user, ``user item item ...`` in time order."""

    defaults = {"category": None, "file": None}

    def check_options(self) -> None:
        if self.options["category"] is None and self.options["file"] is None:
            raise DataError("s3rec: set category (e.g. 'Beauty', read from <category>.txt) or file")

    def required_files(self) -> list[str]:
        return [self.options["file"] or f"{self.options['category']}.txt"]

    def downloads(self) -> list[Download]:
        category = self.options["category"]
        return [Download(S3REC_URL.format(category=category))] if category else []

    def load(self) -> RawData:
        path = self.resolve() / self.required_files()[0]
        users, items, lines = [], [], []
        text = decode(published_bytes(path, "utf-8")[0], path, "utf-8")
        for lineno, line in enumerate(text.rstrip().splitlines(), 1):
            user, *sequence = line.split() or [""]
            if not sequence:
                raise DataError(f"{path}: line {lineno} has no items; each line must read 'user item item ...'")
            users.extend([user] * len(sequence))
            items.extend(sequence)
            lines.extend([lineno] * len(sequence))
        counts: dict[str, int] = {}
        frame = pd.DataFrame({"user": users, "item": items})
        return RawData(self.name, interaction_frame(frame, path, counts, lambda i: f"line {lines[i]}"), counts=counts)


@register_source("plain")
class Plain(FileSource):
    """A folder with ``interactions.{csv,parquet,jsonl}`` (``user_id,item_id[,timestamp]``), optional ``items.jsonl``;
    without a timestamp each user's rows are in chronological order."""

    defaults = {"interactions_file": None, "unknown_item_text": "error"}

    def required_files(self) -> list[str]:
        if self.options["interactions_file"]:
            return [self.options["interactions_file"]]
        found = [name for name in PLAIN_INTERACTIONS if (self.folder / name).is_file()]
        if len(found) > 1:
            raise DataError(f"plain: {self.folder} holds {', '.join(found)}; choose one with interactions_file=")
        return found or ["interactions.csv"]

    def optional_files(self) -> list[str]:
        return ["items.jsonl"]

    def where_to_get(self) -> str:
        return f"point root= at a folder with one of {', '.join(PLAIN_INTERACTIONS)} (user_id,item_id[,timestamp])"

    def load(self) -> RawData:
        counts: dict[str, int] = {}
        return self._with_items(read_plain_interactions(self.resolve() / self.required_files()[0], counts), counts)

    def engine_scan(self) -> EngineScan | None:
        path = self.resolve() / self.required_files()[0]
        kind = Path(path.name.removesuffix(".gz")).suffix  # as read_plain_interactions tells them apart
        formats = {".parquet": "parquet", ".jsonl": "json"}
        if kind == ".parquet" and path.suffix == ".gz":
            return None
        return EngineScan(path, {"user_id": "u", "item_id": "i"}, {"timestamp": "t"}, format=formats.get(kind, "delimited"))

    def load_items(self, known: set[str], counts: dict[str, int]) -> pd.DataFrame | None:
        path = self.folder / "items.jsonl"
        if not path.is_file():
            return None
        return keep_known_items(read_items_jsonl(path, counts), known, path, self._items_policy(), counts)


def canonical_id(value: Any) -> tuple[str | None, str | None]:
    """The canonical form of one raw id (docs/datasets.md), None when missing, and what that form changed
    (``"stripped"``, ``"float_to_int"``); a value that is no id raises ``TypeError`` saying what it is."""
    if isinstance(value, str):
        stripped = value.strip()
        return stripped or None, "stripped" if len(stripped) != len(value) else None
    if value is None or value is pd.NA or value is pd.NaT:
        return None, None
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("a boolean")
    if isinstance(value, (int, np.integer)):
        return str(int(value)), None
    if isinstance(value, (float, np.floating, Decimal)):
        if value != value:  # NaN, how pandas and JSON write a missing number
            return None, None
        if not math.isfinite(value):
            raise TypeError("an infinite number")
        if value == int(value):
            return str(int(value)), "float_to_int"
        return (str(value.normalize()) if isinstance(value, Decimal) else repr(float(value))), None
    raise TypeError(f"a {type(value).__name__}")


def canonical_ids(values: pd.Series, what: str, path: Path, where: Where, counts: dict[str, int],
                  key: str | None = None) -> pd.Series:
    """``canonical_id`` of every value, the changes counted in ``counts[<key>_<change>]`` (key: ``<what>_ids``)."""
    key = key or f"{what}_ids"
    if pd.api.types.is_integer_dtype(values.dtype) and not values.hasnans:
        return values.astype(str)
    if not values.hasnans and pd.api.types.infer_dtype(values) == "string":  # all text, the common case: vectorised
        canonical = values.astype(str).str.strip()
        changes = {"stripped": int((canonical.str.len() != values.str.len()).sum())}
        blank = canonical.eq("").to_numpy()
        if blank.any():
            row = int(np.argmax(blank))
            raise DataError(f"{path}: {where(row)}: the {what} id {values.iloc[row]!r} is blank; fix or remove that row")
    else:
        ids: list[str] = []
        changes = {"stripped": 0, "float_to_int": 0}
        for row, value in enumerate(values.tolist()):
            canonical_value, change = checked_id(value, what, path, where(row))
            if change:
                changes[change] += 1
            ids.append(canonical_value)
        canonical = pd.Series(ids, index=values.index, dtype=str)
    count_changes(changes, key, counts)
    return canonical


def checked_id(value: Any, what: str, path: Path, place: str) -> tuple[str, str | None]:
    """``canonical_id``, with a missing id or one that is neither text nor a number a ``DataError`` at ``place``."""
    try:
        canonical, change = canonical_id(value)
    except TypeError as kind:
        raise DataError(f"{path}: {place}: the {what} id {value!r} is {kind}, not an id; write ids as text or "
                        "integers") from None
    if canonical is None:
        raise DataError(f"{path}: {place}: no {what} id (the value is empty or null); fix or remove that row")
    return canonical, change


def count_changes(changes: dict[str, int], key: str, counts: dict[str, int]) -> None:
    for change, count in changes.items():
        if count:
            counts[f"{key}_{change}"] = counts.get(f"{key}_{change}", 0) + count


def read_fields(path: Path, sep: str, names: list[str], numeric: tuple[str, ...] = (), encoding: str = "utf-8",
                may_be_empty: list[str] | None = None) -> pd.DataFrame:
    """A header-less file of ``names`` fields a line (quotes are ordinary characters), each non-empty except
    ``may_be_empty`` (filled with ""); fields not ``numeric`` stay strings."""
    layout = sep.replace("\t", "<tab>").join(names)
    data, encoding = published_bytes(path, encoding)
    if len(sep) > 1:
        decode(data, path, encoding, MOVIELENS_ENCODING_FIX)  # finds a bad byte where it is, before sep is shortened
        data, sep = data.replace(sep.encode(), ONE_BYTE_SEP.encode()), ONE_BYTE_SEP
    dtype = {name: str for name in names if name not in numeric}
    options = {"sep": sep, "header": None, "names": names, "dtype": dtype, "encoding": encoding}
    frame = parse_csv(path, io.BytesIO(data), MOVIELENS_ENCODING_FIX, quoting=csv.QUOTE_NONE, **options)
    optional = may_be_empty or []
    required = [name for name in names if name not in optional]
    check_complete(frame, required, path, lambda i: f"line {i + 1}", f"each line must read {layout}")
    frame[optional] = frame[optional].fillna("")
    return frame


def read_csv(path: Path, columns: dict[str, str], encoding: str = "utf-8") -> pd.DataFrame:
    """The ``columns`` (file name -> our name) of a published CSV file with a header; all but timestamps stay strings."""
    data, encoding = published_bytes(path, encoding)
    dtype = {name: str for name, ours in columns.items() if ours != "timestamp"}
    frame = parse_csv(path, io.BytesIO(data), MOVIELENS_ENCODING_FIX, dtype=dtype, encoding=encoding)
    check_no_repeated_header(frame, path, lambda i: f"line {i + 2}")
    frame = select_columns(frame, columns, path)
    check_complete(frame, list(columns.values()), path, lambda i: f"line {i + 2}", f"columns: {', '.join(columns)}")
    return frame


def published_bytes(path: Path, encoding: str) -> tuple[bytes, str]:
    """A published file's bytes, checked not cut short, and its encoding (``auto``: UTF-8 if valid, else latin-1)."""
    data = path.read_bytes()
    check_not_cut(path, data)
    if encoding != "auto":
        return data, encoding
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return data, "latin-1"
    return data, "utf-8"


def check_no_repeated_header(frame: pd.DataFrame, path: Path, where: Where) -> None:
    """A row that repeats the header (``cat a.csv b.csv``) would become a user ``user_id`` and an item ``item_id``."""
    if frame.empty:
        return
    first = frame.columns[0]
    candidates = frame[(frame[first] == first).to_numpy()]  # cheap on millions of rows: one column first
    repeated = [i for i, row in enumerate(candidates.itertuples(index=False))
                if all(str(value) == str(column) for value, column in zip(row, frame.columns))]
    if repeated:
        row = frame.index.get_loc(candidates.index[repeated[0]])
        raise DataError(f"{path}: {where(row)} repeats the header ({', '.join(map(str, frame.columns))}), as when "
                        "files are joined with cat; remove that line (or join them with the header kept once)")


def check_not_cut(path: Path, data: bytes) -> None:
    """A published file ends with a line break; without one its last line (which may still parse) was cut short."""
    if data and not data.endswith((b"\n", b"\r")):
        last = data.count(b"\n") + 1
        raise DataError(f"{path}: line {last}, the last, has no line break, so the file looks cut short (an "
                        "interrupted download or copy); fetch it again, or add the line break if that line is complete")


def warn_if_cut(path: Path) -> None:
    """Files a user writes need not end with a line break, but the last line may have been cut: say so."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(max(0, size - 1))
        last = f.read(1)
    if size and last not in (b"\n", b"\r"):
        warnings.warn(f"{path}: the last line has no line break; if the file was cut short (an interrupted copy), "
                      "its last row is wrong: check it", stacklevel=3)


def parse_csv(path: Path, source: Path | IO[bytes], encoding_fix: str = "", **kwargs: Any) -> pd.DataFrame:
    """pandas' C parser, its errors restated as ``DataError`` naming ``path``; only an empty field is missing,
    header names are stripped and must be unique, trailing blank lines are dropped."""
    header = kwargs.get("header", "infer") is not None
    encoding = kwargs.setdefault("encoding", "utf-8")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            if header and isinstance(kwargs.get("dtype"), dict):  # the names as written, ``user_id, item_id`` too
                written = pd.read_csv(source, nrows=0, encoding=encoding).columns
                kwargs["dtype"] = {name: kwargs["dtype"][name.strip()] for name in written if name.strip() in kwargs["dtype"]}
                if not isinstance(source, Path):
                    source.seek(0)
            frame = pd.read_csv(source, index_col=False, skip_blank_lines=False, **NA_FIELDS, **kwargs)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty; check that it is the right file, written completely") from None
    except pd.errors.ParserError as err:
        found = PANDAS_FIELD_COUNT.search(str(err))
        detail = f"line {found[2]} has {found[3]} fields, expected {found[1]}" if found else str(err).strip()
        raise DataError(f"{path}: {detail}; fix or remove that line") from None
    except pd.errors.ParserWarning:  # pandas truncates a too-long first line instead of failing
        raise DataError(f"{path}: line {2 if header else 1} has more fields than expected; fix or remove it") from None
    except UnicodeDecodeError:
        decode(source.getvalue() if isinstance(source, io.BytesIO) else read_bytes(path), path, encoding, encoding_fix)
        raise
    except UNREADABLE_GZIP as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__}: {err}); the gzip file looks cut short or "
                        "damaged: fetch or write it again") from None
    if header:
        frame.columns = header_names(frame, path, source, encoding)
    filled = frame.notna().to_numpy().any(axis=1)
    last = len(filled) - int(np.argmax(filled[::-1])) if filled.any() else 0
    return frame.iloc[:last]


def header_names(frame: pd.DataFrame, path: Path, source: Path | IO[bytes], encoding: str) -> list[str]:
    """The header's column names as written, less surrounding spaces (``user_id, item_id``); each once."""
    names = [str(name) for name in frame.columns]
    if any(MANGLED.fullmatch(name) for name in names):  # ``name.1`` may be pandas' rename of a repeated name
        data = source.getvalue() if isinstance(source, io.BytesIO) else read_bytes(path)
        names = next(csv.reader(io.StringIO(decode(data, path, encoding))))
    names = [name.strip() for name in names]
    check_unique(names, f"{path}: line 1, the header,")
    return names


def check_unique(names: list[str], where: str) -> None:
    """A column named twice is an error naming ``where``: only one of those columns could be read."""
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{where} names the column(s) {repeated} more than once, and only one of them could be read; "
                        "rename or remove the others")


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when its name ends with ``.gz``."""
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def decode(data: bytes, path: Path, encoding: str, fix: str = "", first_line: int = 1) -> str:
    """``data`` (starting at line ``first_line``) as text less a byte-order mark, or a ``DataError`` naming the
    line and byte that ``encoding`` cannot decode."""
    try:
        return data.decode(encoding).removeprefix("\ufeff")  # else the first id would be another one, "\ufeffu1"
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + first_line
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}: line {line}, byte {column} (0x{data[err.start]:02x}) is not valid {encoding}; "
                        f"{fix or f'save the file as {encoding}'}") from None


def select_columns(frame: pd.DataFrame, columns: dict[str, str], path: Path) -> pd.DataFrame:
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{path}: no column {column!r}; columns found: {list(frame.columns)}; need {list(columns)}")
    return frame[list(columns)].rename(columns=columns)


def check_complete(frame: pd.DataFrame, required: list[str], path: Path, where: Where, layout: str) -> None:
    missing = frame[required].isna().to_numpy()
    if missing.any():
        row, col = np.argwhere(missing)[0]
        raise DataError(f"{path}: {where(int(row))}: no value for {required[col]!r} ({layout}); fix or remove it")


def to_seconds(values: pd.Series, path: Path, where: Where) -> tuple[pd.Series, pd.Series | None]:
    """Unix seconds (floored) and, when some value has a fraction, its nanoseconds within that second; datetimes
    count from the epoch in UTC. The first value that is no number or does not fit int64 seconds is an error."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    booleans = (np.ones(len(values), bool) if pd.api.types.is_bool_dtype(values) else
                values.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(bool) if values.dtype == object else None)
    if booleans is not None and booleans.any():  # pandas would count True as the second 1
        row = int(np.argmax(booleans))
        raise DataError(f"{path}: {where(row)}: {values.name} {bool(values.iloc[row])} is a boolean, not a time (unix "
                        "seconds); fix or remove that row")
    if pd.api.types.is_datetime64_dtype(values):
        ticks_per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[np.datetime_data(values.dtype)[0]]
        ticks = values.to_numpy().view(np.int64)
        seconds, ticks_left = np.divmod(ticks, ticks_per_second)
        return _timestamp_columns(seconds, ticks_left * (10**9 // ticks_per_second), values.index)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{path}: {where(row)}: {values.name} {values.iloc[row]!r} is not a number (unix seconds)")
    as_float = numbers.to_numpy(np.float64)
    if pd.api.types.is_integer_dtype(numbers):
        # uint64 values past int64, or int64 values near its ends that float64 rounds outward
        out = (numbers.to_numpy() > INT64_MAX) if numbers.dtype == np.uint64 else np.zeros(len(numbers), bool)
    else:
        out = ~np.isfinite(as_float) | (as_float < -(2.0**63)) | (as_float >= 2.0**63)
    if out.any():
        row = int(np.argmax(out))
        value = values.iloc[row]
        value = value.item() if isinstance(value, np.generic) else value
        raise DataError(f"{path}: {where(row)}: {values.name} {value!r} is out of range: unix seconds must "
                        "fit in a signed 64-bit integer; fix or remove that row")
    if pd.api.types.is_integer_dtype(numbers):
        return _timestamp_columns(numbers.to_numpy().astype(np.int64), np.zeros(len(numbers), np.int64), values.index)
    seconds = np.floor(as_float)
    return _timestamp_columns(seconds.astype(np.int64), np.round((as_float - seconds) * 1e9).astype(np.int64), values.index)


def _timestamp_columns(seconds: np.ndarray, nanoseconds: np.ndarray, index: pd.Index) -> tuple[pd.Series, pd.Series | None]:
    fraction = pd.Series(nanoseconds, index=index, dtype=np.int64) if nanoseconds.any() else None
    return pd.Series(seconds, index=index, dtype=np.int64), fraction


def interaction_frame(frame: pd.DataFrame, path: Path, counts: dict[str, int],
                      where: Where = lambda i: f"line {i + 1}") -> pd.DataFrame:
    """The ``RawData.interactions`` table: canonical ids, int64 timestamps (and their fractions) if present, file order."""
    if frame.empty:
        raise DataError(f"{path} holds no interactions; check that it is the right file")
    frame = frame.reset_index(drop=True)
    out = pd.DataFrame({column: canonical_ids(frame[column], column, path, where, counts) for column in ("user", "item")})
    if "timestamp" in frame.columns:
        out["timestamp"], fraction = to_seconds(frame["timestamp"], path, where)
        if fraction is not None:
            out["timestamp_ns"] = fraction
    return out


def item_frame(items: pd.DataFrame, path: Path, counts: dict[str, int], where: Where) -> pd.DataFrame:
    """Item text with canonical ids, so that text and interactions name an item alike."""
    items = items.reset_index(drop=True)
    return items.assign(item=canonical_ids(items["item"], "item", path, where, counts, "item_text_ids"))


def read_genre_names(path: Path) -> tuple[str, ...]:
    """ML-100K's ``u.genre`` (``name|index``) when present, else the names the release documents."""
    if not path.is_file():
        return ML_100K_GENRES
    names = tuple(line.split("|")[0] for line in path.read_text("latin-1").splitlines() if line.strip())
    if len(names) != len(ML_100K_GENRES):
        raise DataError(f"{path} lists {len(names)} genres, expected {len(ML_100K_GENRES)}; restore the official file")
    return names


def json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for every non-blank line of a possibly gzipped UTF-8 file."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):  # decoded line by line, so an undecodable byte is found on its line
                line = decode(raw, path, "utf-8", "JSON lines are UTF-8: save the file as UTF-8", lineno)
                if line.strip():
                    yield lineno, line
    except (OSError, *UNREADABLE_GZIP) as err:  # EOFError: a gzip file cut short
        raise DataError(f"{path}: unreadable after line {lineno} ({err}); is it complete UTF-8 (gzip)?") from None


class RepeatedKeys(ValueError):
    pass


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict, refusing a key given twice."""
    record = dict(pairs)
    if len(record) < len(pairs):
        keys = [key for key, _ in pairs]
        raise RepeatedKeys(sorted({key for key in keys if keys.count(key) > 1}))
    return record


def parse_record(line: str, path: Path, lineno: int, python_literals: bool = False) -> dict[str, Any]:
    """One object of a JSON-lines file; in JSON (not Amazon's Python literals) a field named twice is an error."""
    try:
        record = json.loads(line, object_pairs_hook=None if python_literals else unique_keys)
    except RepeatedKeys as repeated:
        raise DataError(f"{path}: line {lineno} names the field(s) {repeated.args[0]} more than once, and only one of "
                        "them could be read; rename or remove the others") from None
    except json.JSONDecodeError as err:
        if not python_literals:
            raise DataError(f"{path}: line {lineno} is not valid JSON ({err.msg}); write one object a line") from None
        try:  # the 2014 Amazon metadata holds Python dict literals, not JSON
            record = ast.literal_eval(line.strip())
        except (ValueError, SyntaxError):
            raise DataError(f"{path}: line {lineno} is neither JSON nor a Python dict literal") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {lineno} is a {type(record).__name__}, expected one object per line")
    return record


def field(record: dict[str, Any], key: str, path: Path, lineno: int) -> Any:
    if record.get(key) is None:
        raise DataError(f"{path}: line {lineno}: no field {key!r}; fields found: {sorted(record)}")
    return record[key]


def read_amazon_reviews(path: Path, counts: dict[str, int], version: str = "2014") -> pd.DataFrame:
    user, item, time, unit, _ = AMAZON_FIELDS[version]
    rows: dict[str, list[Any]] = {"user": [], "item": [], "timestamp": []}
    lines: list[int] = []
    for lineno, line in json_lines(path):
        record = parse_record(line, path, lineno, python_literals=version != "2023")  # 2023 is strict JSON
        rows["user"].append(field(record, user, path, lineno))
        rows["item"].append(field(record, item, path, lineno))
        rows["timestamp"].append(field(record, time, path, lineno))
        lines.append(lineno)
    where: Where = lambda i: f"line {lines[i]}"  # noqa: E731
    frame = pd.DataFrame(rows, dtype=object)
    if unit == "ms":
        frame["timestamp"] = milliseconds(rows["timestamp"], time, path, where)
    return interaction_frame(frame, path, counts, where)


def milliseconds(values: list[Any], name: str, path: Path, where: Where) -> pd.Series:
    """Unix milliseconds (JSON integers) as datetimes, which ``to_seconds`` splits exactly."""
    for row, value in enumerate(values):
        if type(value) is not int or not -(2**63) <= value < 2**63:
            raise DataError(f"{path}: {where(row)}: {name} {value!r} is not unix milliseconds (a JSON integer that "
                            "fits in 64 bits); fix or remove that row")
    return pd.Series(np.array(values, np.int64).astype("datetime64[ms]"), name="timestamp")


def read_amazon_meta(path: Path, known: set[str], policy: str, counts: dict[str, int],
                     version: str = "2014") -> pd.DataFrame:
    key = AMAZON_FIELDS[version][4]
    item_id = re.compile(ASIN.format(key=key))
    records: list[dict[str, str]] = []
    unknown: list[str] = []
    changes = {"stripped": 0, "float_to_int": 0}
    for lineno, line in json_lines(path):
        match = item_id.search(line)
        if match and match.group(1).strip() not in known:  # most products are not reviewed: skip the full parse
            unknown.append(match.group(1).strip())
            continue
        record = parse_record(line, path, lineno, python_literals=version != "2023")  # 2023 is strict JSON
        asin, change = checked_id(field(record, key, path, lineno), "item", path, f"line {lineno}")
        if asin in known:
            records.append({"item": asin, **amazon_text(record)})
            if change:
                changes[change] += 1
        else:
            unknown.append(asin)
    count_changes(changes, "item_text_ids", counts)
    report_unknown_items(unknown, path, policy, counts)
    return dedupe_items(pd.DataFrame(records, columns=["item", *AMAZON_TEXT]), counts)


def amazon_text(record: dict[str, Any]) -> dict[str, str]:
    """The text fields of a metadata record of any release (2018: ``category``; 2023: ``store`` for the brand)."""
    return {
        "title": text(record.get("title")),
        "description": text(record.get("description"), " "),
        "brand": text(record.get("brand", record.get("store"))),
        "categories": text(record.get("categories", record.get("category"))),
    }


def read_plain_interactions(path: Path, counts: dict[str, int]) -> pd.DataFrame:
    """A CSV, Parquet or JSON-lines table (told apart by the name, less a ``.gz``) of ``user_id,item_id[,timestamp]``."""
    kind = Path(path.name.removesuffix(".gz")).suffix
    if kind == ".parquet":
        frame = read_parquet(path)
        where: Where = lambda i: f"row {i + 1}"  # noqa: E731
    elif kind == ".jsonl":
        numbered = [(lineno, parse_record(line, path, lineno)) for lineno, line in json_lines(path)]
        if not numbered:
            raise DataError(f"{path} holds no interactions; check that it is the right file")
        records = [record for _, record in numbered]
        frame = pd.DataFrame.from_records(records)
        for name in ("user_id", "item_id"):  # the values as parsed: pandas would turn 1 beside 1.5 into 1.0
            if name in frame:
                frame[name] = pd.Series([record.get(name) for record in records], dtype=object)
        where = lambda i: f"line {numbered[i][0]}"  # noqa: E731
    else:
        if path.suffix != ".gz":  # a gzip file cut short fails to decompress instead
            warn_if_cut(path)
        frame = parse_csv(path, path, dtype={"user_id": str, "item_id": str})
        where = lambda i: f"line {i + 2}"  # noqa: E731
        check_no_repeated_header(frame, path, where)
    columns = {"user_id": "user", "item_id": "item"} | ({"timestamp": "timestamp"} if "timestamp" in frame else {})
    frame = select_columns(frame, columns, path)
    check_complete(frame, list(columns.values()), path, where, f"columns: {', '.join(columns)}")
    return interaction_frame(frame, path, counts, where)


def read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        check_unique(pq.read_schema(path).names, str(path))
        return pd.read_parquet(path)
    except DataError:
        raise
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable parquet file ({err})") from None


def read_items_jsonl(path: Path, counts: dict[str, int]) -> pd.DataFrame:
    """One object per line with ``item_id`` and text fields; lists are joined, missing text is ""."""
    records, lines = [], []
    for lineno, line in json_lines(path):
        record = parse_record(line, path, lineno)
        item = field(record, "item_id", path, lineno)
        records.append({"item": item, **{key: text(value) for key, value in record.items() if key != "item_id"}})
        lines.append(lineno)
    if not records:
        return pd.DataFrame({"item": pd.Series([], dtype=str)})
    items = pd.DataFrame(records, dtype=object).fillna("")
    return item_frame(items, path, counts, lambda i: f"line {lines[i]}")


def text(value: Any, sep: str = ", ") -> str:
    """Text of a metadata field: nested lists (Amazon categories) are flattened, de-duplicated and joined."""
    if value is None:
        return ""
    if isinstance(value, list):
        return sep.join(dict.fromkeys(part for part in flatten(value) if part))
    return str(value).strip()


def flatten(values: list[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, list):
            yield from flatten(value)
        else:
            yield text(value)


def keep_known_items(items: pd.DataFrame, known_ids: set[str], path: Path, policy: str, counts: dict[str, int]) -> pd.DataFrame:
    known = items["item"].isin(known_ids)
    report_unknown_items(items.loc[~known, "item"].tolist(), path, policy, counts)
    return dedupe_items(items[known], counts)


def report_unknown_items(unknown: list[str], path: Path, policy: str, counts: dict[str, int]) -> None:
    """Item text for ids nobody interacted with: an error, or (``ignore``) dropped and counted."""
    if unknown and policy == "error":
        examples = ", ".join(repr(item) for item in unknown[:5])
        raise DataError(f"{path}: {len(unknown)} item id(s) have text but no interactions (e.g. {examples}); fix the "
                        "file or pass unknown_item_text='ignore' to drop them")
    counts["item_text_unknown_ids"] = len(unknown)


def dedupe_items(items: pd.DataFrame, counts: dict[str, int]) -> pd.DataFrame:
    """Keep the first text of each item (the 2018 Amazon metadata repeats some products)."""
    duplicated = items["item"].duplicated()
    counts["item_text_duplicate_ids"] = int(duplicated.sum())
    return items[~duplicated].reset_index(drop=True).astype(str)


@register_source("sequences")
class SequenceFiles(Source):
    """A folder already in the sequence format (docs/datasets.md), e.g. from ``python -m genrec.data.spark_job``:
    loaded as it is, checked against its ``meta.json`` digests, never rewritten."""

    def prebuilt(self) -> Path:
        if self.root is None:
            raise DataError("dataset 'sequences' needs data.root: the folder a preprocessing job wrote "
                            "(offsets.npy, items.npy, meta.json, ...; docs/datasets.md)")
        if self.options:
            raise DataError(f"dataset 'sequences' takes no dataset_options (got {sorted(self.options)}): "
                            "the folder is loaded as it was written")
        return self.root

    def input_files(self) -> list[Path]:
        return sorted(p for p in self.prebuilt().iterdir() if p.is_file() and not p.name.startswith("."))

    def load(self) -> RawData:
        raise DataError(f"dataset 'sequences' ({self.root}) holds sequences, not raw interactions: "
                        "load it through SequenceDataModule, or point data.dataset at the raw files' source")
