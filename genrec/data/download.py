"""Fetch official dataset files into the cache: checksummed, written atomically, zips unpacked, each kept
file's digest recorded in ``MANIFEST`` so that a copy changed on disk since is noticed."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.request import urlopen

from genrec.data.raw import DataError
from genrec.digests import file_digest

TIMEOUT_S = 60.0
MANIFEST = ".downloaded.json"


@dataclass(frozen=True)
class Download:
    """One published file (``md5``: None without a checksum); ``extract`` names the files to take out of a zip
    archive, which is then deleted (empty: the file is used as downloaded)."""

    url: str
    md5: str | None = None
    extract: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def fetch(downloads: list[Download], folder: Path, timeout: float = TIMEOUT_S) -> None:
    """Download each file into ``folder``. Network errors (a cut-off transfer included) raise ``OSError``."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in downloads:
        target = folder / item.filename
        try:
            with urlopen(item.url, timeout=timeout) as response:
                _write_atomically(response, target, item.md5, item.url)
        except http.client.HTTPException as err:
            raise OSError(f"incomplete transfer of {item.url}: {err!r}") from err
        if item.extract:
            extract(target, folder, item.extract)
            target.unlink()
        record(folder, item.extract or (item.filename,))


def record(folder: Path, names: tuple[str, ...]) -> None:
    """Add the digests of the downloaded files ``names`` to the folder's manifest."""
    kept = {**recorded(folder), **{name: file_digest(folder / name) for name in names}}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST}.", suffix=".part")
    with os.fdopen(fd, "w") as f:
        json.dump(kept, f, indent=1)
    os.replace(tmp, folder / MANIFEST)


def recorded(folder: Path) -> dict[str, str]:
    """The digests recorded for the folder's downloaded files; none when the manifest is absent or damaged."""
    try:
        kept = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return kept if isinstance(kept, dict) else {}


def extract(archive: Path, folder: Path, names: tuple[str, ...]) -> None:
    """Write the members of ``archive`` whose base names are in ``names`` directly into ``folder``."""
    with zipfile.ZipFile(archive) as zf:
        members = {PurePosixPath(m.filename).name: m for m in zf.infolist() if not m.is_dir()}
        missing = [name for name in names if name not in members]
        if missing:
            raise DataError(f"{archive} lacks {', '.join(missing)}; delete it and download it again")
        for name in names:
            with zf.open(members[name]) as src:
                _write_atomically(src, folder / name)


def _write_atomically(src: BinaryIO, target: Path, md5: str | None = None, origin: str = "") -> None:
    """Copy ``src`` to ``target`` via a temporary file, so that ``target`` only ever holds a complete, verified copy."""
    digest = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                dst.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(f"checksum mismatch for {target.name} from {origin}: expected md5 {md5}, got "
                            f"{digest.hexdigest()}; the download was corrupted or the file changed upstream and was "
                            "not kept; try again")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
