"""genrec.outputs: which existing files a command may replace, and formats that follow the suffix."""
import json
import os

import pytest

from genrec.outputs import MANIFEST, OutputExistsError, check_outputs, format_of, record_outputs

OWNER = {"command": "evaluate.py model", "checkpoint": "/runs/a/last.ckpt", "protocol": {"split": "test", "exclude": "history"}}


def written(path, owner=OWNER, text="report"):
    path.write_text(text)
    record_outputs([path], owner)
    return path


def test_free_paths_and_own_files_of_the_same_owner_pass(tmp_path):
    check_outputs([tmp_path / "new.json"], OWNER)
    check_outputs([written(tmp_path / "test_metrics.json")], json.loads(json.dumps(OWNER)))


def test_a_file_genrec_did_not_write_is_refused_unless_overwrite(tmp_path):
    mine = tmp_path / "test_metrics.json"
    mine.write_text("my notes")
    with pytest.raises(OutputExistsError, match="test_metrics.json exists and was not written by genrec: pass --overwrite"):
        check_outputs([mine], OWNER)
    check_outputs([mine], OWNER, overwrite=True)


def test_another_owner_is_refused_naming_what_differs(tmp_path):
    path = written(tmp_path / "test_metrics.json")
    other = {**OWNER, "protocol": {"split": "test", "exclude": "none"}}
    with pytest.raises(OutputExistsError, match=r"differ in protocol.exclude \('history' vs 'none'\)"):
        check_outputs([path], other)
    with pytest.raises(OutputExistsError, match=r"differ in checkpoint"):
        check_outputs([path], {**OWNER, "checkpoint": "/runs/b/last.ckpt"})


def test_a_file_changed_since_genrec_wrote_it_is_refused(tmp_path):
    path = written(tmp_path / "test_report.md")
    path.write_text("edited by hand, and longer")
    with pytest.raises(OutputExistsError, match="was changed since genrec wrote it"):
        check_outputs([path], OWNER)
    same_size = written(tmp_path / "b.md", text="abc")
    stat = same_size.stat()
    same_size.write_text("xyz")
    os.utime(same_size, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(OutputExistsError, match="was changed since"):
        check_outputs([same_size], OWNER)


def test_a_foreign_file_named_like_the_record_is_never_replaced(tmp_path):
    (tmp_path / MANIFEST).write_text('{"mine": 1}')
    with pytest.raises(OutputExistsError, match="is not genrec's record"):
        check_outputs([tmp_path / "new.json"], OWNER)


def test_format_follows_the_suffix_or_the_mismatch_is_an_error(tmp_path):
    formats = {".parquet": "parquet", ".csv": "csv"}
    assert format_of(tmp_path / "recs.csv", None, formats) == "csv"
    assert format_of(tmp_path / "recs.CSV", "csv", formats) == "csv"
    with pytest.raises(ValueError, match="has the suffix of csv, but --format is parquet"):
        format_of(tmp_path / "recs.csv", "parquet", formats, "--format")
    with pytest.raises(ValueError, match=r"cannot tell the format from the suffix '.txt'"):
        format_of(tmp_path / "recs.txt", None, formats, "--format")
    assert format_of(tmp_path / "recs.txt", "csv", formats) == "csv"
