"""Memory a cached load adds to each DDP rank when every rank maps the same cache.

For an ML-20M-layout folder (``data_scale.py`` writes synthetic ones) whose cache is built first,
this measures, in fresh processes:

* ``1 process``: ``SequenceDataModule(...).setup("fit")`` on the cache, then a whole training
  epoch of batches (no model: the data path alone);
* ``2 processes``: the same in two processes joined by ``torch.distributed`` (gloo, CPU), as DDP
  starts them; each rank iterates its shard of the epoch.

Per process: RSS and PSS (``/proc/self/smaps_rollup``) after the imports and the process group's
set-up, what the load and the epoch added to them, the part of the added RSS that is file maps
(RSS less anonymous memory), the same at the highest RSS sampled during the epoch (every 8 batches),
and the epoch's time. RSS counts a page of the mapped cache in every process that touched it;
PSS splits a shared page between the processes that map it, so the sum of the ranks' PSS is what
the node holds. The issue-40 bar: total added over the ranks at most 1.2x one process's.
``--release-pages-every`` sets ``data.loader.release_pages_every`` (0 = never unmap the pages an
epoch touched); ``--shards`` sets ``data.loader.shards`` (``contiguous``: each rank reads its own
block of users, so it maps about half the cache's pages).

    python benchmarks/ddp_rss.py /tmp/ooc/ml20m-20000000 --cache /tmp/ooc/cache-20000000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def memory() -> dict[str, float]:
    """Rss, Pss and anonymous memory of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"], "anon": fields["Anonymous"]}


def measure(root: str, cache: str, rank: int, world: int, release_pages_every: int | None, shards: str) -> dict:
    """Runs in a child process: one cached load and one epoch of batches on this rank's shard."""
    import torch.distributed as dist

    from genrec.data import LoaderConfig, SequenceDataModule

    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        dist.barrier()  # gloo connects on the first collective: its buffers are not the data's
    before = memory()
    release = {} if release_pages_every is None else {"release_pages_every": release_pages_every}
    loader = LoaderConfig(shards=shards, **release)
    dm = SequenceDataModule(dataset="ml-20m", root=root, cache_dir=cache, max_seq_len=200, loader=loader)
    dm.setup("fit")
    start, batches, peak = time.perf_counter(), 0, memory()
    for _ in dm.train_dataloader():
        batches += 1
        if batches % 8 == 0:  # what a cluster's accounting samples: the RSS during the epoch, not only at its end
            now = memory()
            peak = now if now["rss"] > peak["rss"] else peak
    epoch_s = time.perf_counter() - start
    after = memory()
    if world > 1:
        dist.barrier()  # both ranks hold their pages when the other measures
        after = memory()
        dist.barrier()
        dist.destroy_process_group()
    return {"rank": rank, "batches": batches, "epoch_s": epoch_s, "rss_before": before["rss"],
            "pss_before": before["pss"], "rss_added": after["rss"] - before["rss"],
            "file_added": after["rss"] - after["anon"] - before["rss"] + before["anon"],
            "peak_rss_added": peak["rss"] - before["rss"], "peak_file_added": peak["rss"] - peak["anon"] - before["rss"] + before["anon"],
            "pss_added": after["pss"] - before["pss"]}


def run(root: Path, cache: Path, world: int, release_pages_every: int | None, shards: str) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    release = [] if release_pages_every is None else ["--release-pages-every", str(release_pages_every)]
    procs = [subprocess.Popen([sys.executable, __file__, str(root), "--cache", str(cache), "--rank", str(r),
                               "--world", str(world), "--shards", shards, *release], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
             for r in range(world)]
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a measuring process failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="a folder with ratings.csv and movies.csv in the ML-20M layout")
    parser.add_argument("--cache", type=Path, required=True, help="the cache folder (built first when empty)")
    parser.add_argument("--release-pages-every", type=int, default=None,
                        help="data.loader.release_pages_every (default: LoaderConfig's; 0 = never)")
    parser.add_argument("--shards", choices=("interleaved", "contiguous"), default="interleaved",
                        help="data.loader.shards: how the ranks split the data")
    parser.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank is not None:
        print(json.dumps(measure(str(args.root), str(args.cache), args.rank, args.world, args.release_pages_every,
                                 args.shards)))
        return
    from genrec.data import SequenceDataModule

    SequenceDataModule(dataset="ml-20m", root=str(args.root), cache_dir=str(args.cache), max_seq_len=200).prepare_data()
    one = run(args.root, args.cache, 1, args.release_pages_every, args.shards)
    two = run(args.root, args.cache, 2, args.release_pages_every, args.shards)
    print("| processes | batches per rank | epoch s per rank | RSS added per rank MiB | total RSS added MiB "
          "| file maps' RSS added per rank MiB | total file maps' MiB | peak RSS added during the epoch per rank MiB "
          "| total peak MiB | file maps' part of the peak per rank MiB | total MiB | PSS added per rank MiB | total PSS added MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for runs in (one, two):
        cells = [", ".join(str(r["batches"]) for r in runs), ", ".join(f"{r['epoch_s']:.1f}" for r in runs)]
        for key in ("rss_added", "file_added", "peak_rss_added", "peak_file_added", "pss_added"):
            cells += [", ".join(f"{r[key]:.0f}" for r in runs), f"{sum(r[key] for r in runs):.0f}"]
        print(f"| {len(runs)} | " + " | ".join(cells) + " |")
    for key in ("rss_added", "pss_added"):
        ratio = sum(r[key] for r in two) / one[0][key]
        print(f"2 processes / 1 process, {key.split('_')[0].upper()} added: {ratio:.2f}x (bar: 1.2x)")


if __name__ == "__main__":
    main()
