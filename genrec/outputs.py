"""Result files: an existing file is replaced only when genrec wrote it, unchanged since, for the same owner
(command, run or inputs, protocol), as recorded in ``genrec_outputs.json`` (docs/evaluation.md).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

MANIFEST = "genrec_outputs.json"


class OutputExistsError(FileExistsError):
    """An output path holds a file this command may not replace without ``--overwrite``."""


def _normal(owner: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(owner, sort_keys=True, default=str))


def _manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise OutputExistsError(f"{path} cannot be read ({err}): it records the files genrec wrote in {folder}; "
                                "remove it (every file there then counts as not written by genrec) or write elsewhere") from None
    if not isinstance(data, dict) or data.get("written_by") != "genrec":
        raise OutputExistsError(f"{path} is not genrec's record of its files: move it away, or write elsewhere")
    return data["files"]


def _describe(owner: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in owner.items() if k != "protocol")


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key} ({a!r} vs {b!r})")
    return keys


def check_outputs(paths: Iterable[Path], owner: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse to replace a file among ``paths`` that genrec did not write for ``owner``, unless ``overwrite``."""
    if overwrite:
        return
    owner, paths = _normal(owner), [Path(p) for p in paths]
    for folder in {p.parent for p in paths}:
        _manifest(folder)  # a file of that name genrec did not write would be replaced by the record
    for path in paths:
        if not path.exists():
            continue
        if path.is_dir():
            raise OutputExistsError(f"{path} is a folder; name a file to write to")
        entry = _manifest(path.parent).get(path.name)
        fix = "pass --overwrite to replace it, or --out to write elsewhere"
        if entry is None:
            raise OutputExistsError(f"{path} exists and was not written by genrec: {fix}")
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            raise OutputExistsError(f"{path} was changed since genrec wrote it ({_describe(entry['owner'])}): {fix}")
        if entry["owner"] != owner:
            raise OutputExistsError(
                f"{path} holds the output of another command, run or protocol ({_describe(entry['owner'])}); they "
                f"differ in {', '.join(_differences(entry['owner'], owner))}: {fix}")


def record_outputs(paths: Iterable[Path], owner: dict[str, Any]) -> None:
    """Note in each folder's ``genrec_outputs.json`` that genrec wrote ``paths`` (as they are now) for ``owner``."""
    owner = _normal(owner)
    by_folder: dict[Path, list[Path]] = {}
    for path in map(Path, paths):
        by_folder.setdefault(path.parent, []).append(path)
    for folder, files in by_folder.items():
        try:
            entries = _manifest(folder)
        except OutputExistsError:  # an unreadable record is rebuilt from what was just written
            entries = {}
        for path in files:
            stat = path.stat()
            entries[path.name] = {"owner": owner, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        tmp = folder / f".{MANIFEST}.{os.getpid()}"
        tmp.write_text(json.dumps({"written_by": "genrec", "files": entries}, indent=1))
        os.replace(tmp, folder / MANIFEST)


def format_of(path: Path, fmt: str | None, formats: dict[str, str], option: str = "") -> str:
    """The file format of ``path``: its suffix's (``formats`` maps suffix -> format), which ``fmt``,
    when given, must equal; an unknown suffix needs ``fmt``."""
    by_suffix = formats.get(path.suffix.lower())
    if fmt is None:
        if by_suffix is None:
            raise ValueError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; use one of "
                             f"{sorted(formats)}" + (f" or give {option}" if option else ""))
        return by_suffix
    if by_suffix is not None and by_suffix != fmt:
        raise ValueError(f"{path} has the suffix of {by_suffix}, but {option} is {fmt}: the file would hold {fmt} "
                         f"bytes under a {path.suffix} name; change the suffix or {option}")
    return fmt
