import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genrec.data import LoaderConfig, SequenceDataModule, preprocess
from genrec.resume import run_differences

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")


def mapped_rss_kib(path: Path) -> int:
    """Resident KiB of this process's maps of ``path``."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@linux
def test_releasing_unmaps_the_touched_pages_and_keeps_the_values(tmp_path):
    path = tmp_path / "items.npy"
    values = np.random.default_rng(0).integers(0, 1 << 40, 1 << 21)  # 16 MiB
    np.save(path, values)
    array = np.asarray(np.load(path, mmap_mode="r"))  # as preprocess._read maps the cache
    assert int(array.sum()) == int(values.sum())  # touches every page
    assert mapped_rss_kib(path) >= 15 * 1024
    preprocess.release_pages(array)
    assert mapped_rss_kib(path) < 1024
    np.testing.assert_array_equal(array, values)


def test_only_read_only_maps_are_released(tmp_path):
    path = tmp_path / "items.npy"
    np.save(path, np.arange(1 << 16))
    written = np.load(path, mmap_mode="c")  # copy-on-write: its written pages exist nowhere else
    written[:] = -1
    preprocess.release_pages(written, np.full(4, 7))
    assert (written == -1).all()


def epoch(root, every, loader, workers):
    torch.manual_seed(0)
    dm = SequenceDataModule(dataset="synthetic", dataset_options={"num_users": 300, "num_items": 200},
                            cache_dir=str(root / "cache"), max_seq_len=20,
                            loader=LoaderConfig(batch_size=8, eval_batch_size=8, stochastic_length=1.5,
                                                release_pages_every=every, num_workers=workers))
    dm.prepare_data()
    dm.setup("fit")
    assert preprocess.mapped_file(dm.data.items) is not None  # the batches are read from the maps
    return list(getattr(dm, loader)())


@pytest.mark.parametrize("loader, workers", [("train_dataloader", 0), ("val_dataloader", 0), ("train_dataloader", 2)])
def test_releasing_every_batch_serves_the_same_batches_as_never(tmp_path, loader, workers):
    # with workers, each releases its own (inherited) maps
    released, kept = epoch(tmp_path, 1, loader, workers), epoch(tmp_path, 0, loader, workers)
    assert len(released) == len(kept) > 1
    for a, b in zip(released, kept):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_negative_release_interval_is_refused():
    with pytest.raises(ValueError, match="release_pages_every"):
        LoaderConfig(release_pages_every=-1)


def test_a_resumed_run_may_release_pages_at_another_interval():
    saved = {"datamodule_hyper_parameters": {"loader": {"batch_size": 8, "release_pages_every": 1}}}
    config = {"data": {"init_args": {"loader": {"batch_size": 8, "release_pages_every": 64}}}}
    assert run_differences(config, saved) == []
    config["data"]["init_args"]["loader"]["batch_size"] = 16
    assert run_differences(config, saved) == ["data.loader.batch_size: 8 in the checkpoint, 16 here"]
