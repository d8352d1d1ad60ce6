"""benchmarks/data_scale.py end to end at a small size: the file format it writes and the table it prints."""
import subprocess
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import data_scale  # noqa: E402


def test_synthetic_files_follow_the_ml20m_format(tmp_path):
    data_scale.write_ml20m(tmp_path, 5000)
    lines = (tmp_path / "ratings.csv").read_text().splitlines()
    assert lines[0] == "userId,movieId,rating,timestamp" and len(lines) == 5001
    rows = [tuple(map(float, line.split(","))) for line in lines[1:]]
    assert rows == sorted(rows, key=lambda r: (r[0], r[1]))  # by user, then movie, as the release
    assert {r[2] for r in rows} <= {x / 2 for x in range(1, 11)}
    assert (tmp_path / "movies.csv").read_text().startswith("movieId,title,genres\n1,")


@pytest.mark.slow
def test_benchmark_prints_cold_and_cache_hit_rows(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "data_scale.py"), "--sizes", "20000",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("| 20,000 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 11 and all(float(c.replace(",", "")) > 0 for c in cells[:9])
    added, alone, inputs = (float(x.strip("(),")) for x in cells[9].split())
    assert 0 < inputs <= alone and added < alone + float(cells[6]) * 1e3  # added: a difference of medians, noisy at this size
    assert cells[10].endswith("%")
    assert (tmp_path / "cache-20000" / "processed" / "ml-20m").is_dir()  # the cache the second run hit
    assert out.rstrip().endswith("all within 8.0 GiB")
