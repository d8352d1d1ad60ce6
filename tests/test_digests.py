"""Verified stamps: a file whose stat stamp is unchanged since its last full hash is not read again."""
import json
import os
import time

import pytest

from genrec import digests
from tests.helpers import wait_until_past


@pytest.fixture
def hashed(monkeypatch):
    """The files ``digests.file_digest`` reads, in order."""
    read = []
    real = digests.file_digest

    def counting(path):
        read.append(path.name)
        return real(path)

    monkeypatch.setattr(digests, "file_digest", counting)
    return read


def files(tmp_path, **contents):
    for name, text in contents.items():
        (tmp_path / name).write_text(text)
    return [tmp_path / name for name in contents]


def test_a_file_verified_before_is_not_read_again_while_its_stamp_is_unchanged(tmp_path, hashed):
    paths = files(tmp_path, a="first", b="second")
    wait_until_past(*paths)
    verified = digests.Verified(tmp_path / "cache" / "verified.json")
    expected = [digests.file_digest(p) for p in paths]
    hashed.clear()
    assert verified.digests(paths) == expected and hashed == ["a", "b"]
    assert digests.Verified(tmp_path / "cache" / "verified.json").digests(paths) == expected  # a new process
    assert hashed == ["a", "b"]
    assert digests.file_digests(paths, verified) == expected and hashed == ["a", "b"]


def test_a_rewrite_keeping_size_and_mtime_changes_the_stamp_and_is_hashed_again(tmp_path, hashed):
    (path,) = files(tmp_path, a="version 1")
    wait_until_past(path)
    verified = digests.Verified(tmp_path / "verified.json")
    verified.digests([path])
    before = path.stat()
    time.sleep(0.01)
    path.write_text("version 2")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    hashed.clear()
    assert verified.digests([path]) == [digests.file_digest(path)] != [digests.xxhash.xxh3_128(b"version 1").hexdigest()]
    assert hashed[0] == "a"  # the re-hash path, not the record


def test_a_racy_stamp_is_not_recorded(tmp_path, hashed):
    """A file whose times are not older than the hashing could be written again without a new
    stamp (same clock tick): it is hashed on every load, as git treats racy index entries."""
    (path,) = files(tmp_path, a="racy")
    future = time.time_ns() + 3600 * 10**9
    os.utime(path, ns=(future, future))
    verified = digests.Verified(tmp_path / "verified.json")
    verified.digests([path])
    verified.digests([path])
    assert hashed == ["a", "a"] and not (tmp_path / "verified.json").exists()


def test_a_damaged_record_is_ignored_and_everything_hashed_again(tmp_path, hashed):
    paths = files(tmp_path, a="one", b="two")
    wait_until_past(*paths)
    record = tmp_path / "verified.json"
    expected = digests.Verified(record).digests(paths)
    body = json.loads(record.read_text())
    body["files"][str(paths[0].absolute())][-1] = "0" * 32  # a recorded digest changed: the record's own digest fails
    record.write_text(json.dumps(body))
    hashed.clear()
    assert digests.Verified(record).digests(paths) == expected and hashed == ["a", "b"]
    record.write_text("{cut")
    hashed.clear()
    assert digests.Verified(record).digests(paths) == expected and hashed == ["a", "b"]
