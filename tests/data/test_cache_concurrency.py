"""The preprocessing cache when several processes (one per node on a shared file system) write it at once."""
import json
import multiprocessing as mp

from pathlib import Path

import numpy as np

from genrec.data import PreprocessConfig, SequenceDataModule, preprocess


def _build_and_save(folder: str, options: dict, rounds: int, errors) -> None:
    try:
        dm = SequenceDataModule(dataset="synthetic", dataset_options=options, preprocess=PreprocessConfig(use_cache=False))
        for _ in range(rounds):
            preprocess.save(dm.data, Path(folder))
            loaded = preprocess.load(Path(folder))
            assert loaded is not None and np.array_equal(loaded.items, dm.data.items)
    except Exception as err:  # reported to the parent: an assertion in a child would only print
        errors.put(f"{type(err).__name__}: {err}")


def test_concurrent_writers_never_break_the_cache(tmp_path):
    options = {"num_users": 150, "num_items": 80, "seed": 1}
    folder = tmp_path / "cache" / "processed"
    # A stale cache of an older version: writers must replace it, readers must never use it.
    (folder / "sub").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"version": -1}))
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_build_and_save, args=(str(folder), options, 3, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert not found, found
    assert all(p.exitcode == 0 for p in procs)
    assert preprocess.load(folder) is not None
    assert sorted(p.name for p in folder.parent.iterdir()) == ["processed"]  # no temporary folders left
