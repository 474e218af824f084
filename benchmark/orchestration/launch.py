"""Launchers: run a grid here, or as a job array through submitit.

- ``local`` (default): this process runs the grid (or its ``--shard``). With
  ``--workers w > 1`` it starts w worker processes on this machine, each with
  ``cores / w`` threads: they first train the grid's teachers between them, wait for
  each other, then each takes the next unclaimed run whenever it is free. Small models on a CPU use cores better
  this way than through intra-op threads (on 2 cores, two one-thread workers train
  cnn4 about 1.3x faster than one two-thread process, and run-level overhead halves).
- ``slurm``: the grid is split into ``--tasks`` shards submitted as one SLURM job array
  (partition, GPUs per task, time, memory and array parallelism are options). Each
  array task runs ``run_grid`` on its shard; results merge because every run is its
  own file, and a resubmitted array skips finished runs.
- ``submitit-local``: the same jobs on this machine through submitit's local executor,
  submitted in waves of at most ``--array-parallelism`` (the local executor itself
  would start every job at once). Used to test the SLURM path without a cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings.config import GridConfig

LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclass
class SlurmOptions:
    """Resources of one array task."""

    tasks: int = 4
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 4
    time_min: int = 240
    mem_gb: int = 32
    array_parallelism: int = 16
    account: str | None = None


def run_shard(grid: GridConfig, shard: str) -> dict[str, int]:
    """Entry point of one array task: run one shard, return status counts."""
    from .grid import run_grid

    records = run_grid(dataclasses.replace(grid, shard=shard, progress=False))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _next_index(counter: Any) -> int:
    with counter.get_lock():
        value = int(counter.value)
        counter.value += 1
    return value


def _local_worker(grid: GridConfig, worker: tuple[int, int], threads: int, barrier: Any, counter: Any,
                  results: Any) -> None:
    """One ``--workers`` process: its share of the teachers, then its share of the runs."""
    import torch

    from .grid import run_grid, train_teachers

    torch.set_num_threads(threads)
    train_teachers(grid, worker)
    with contextlib.suppress(threading.BrokenBarrierError):  # a sibling died; its teachers train on demand
        barrier.wait()
    records = run_grid(dataclasses.replace(grid, progress=False), worker=worker,
                       claim=functools.partial(_next_index, counter))
    counts: dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    results.put(counts)


def run_local_workers(grid: GridConfig, workers: int) -> list[dict[str, int]]:
    """Run ``grid`` (or its ``--shard``) in ``workers`` processes on this machine.

    Datasets are loaded (and image caches built) here first, so bad data stops the grid
    before any worker starts and workers never race on a cache file. A worker that
    dies loses only its unfinished run; the others go on, and a second call resumes.
    """
    from ..training.runner import Session
    from .grid import load_bundles

    load_bundles(grid, Session(grid.out, grid.cache_dir))
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    barrier = ctx.Barrier(workers)
    counter = ctx.Value("i", 0)
    results = ctx.Queue()
    procs = [ctx.Process(target=_local_worker, args=(grid, (i, workers), threads, barrier, counter, results),
                         name=f"kdbench-worker-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    counts: list[dict[str, int]] = []
    failed: list[str] = []
    alive = list(procs)
    while alive:
        for p in list(alive):
            p.join(timeout=1.0)
            if p.exitcode is None:
                continue
            alive.remove(p)
            if p.exitcode != 0:
                failed.append(f"{p.name} exited with code {p.exitcode}")
                barrier.abort()
        while not results.empty():
            counts.append(results.get())
    while len(counts) < workers - len(failed) and not results.empty():
        counts.append(results.get())
    if failed:
        raise RuntimeError("; ".join(failed) + ". Finished runs are saved; run the same command again to "
                           "resume the rest.")
    return counts


def _executor(launcher: str, folder: Path, opts: SlurmOptions) -> Any:
    import submitit

    if launcher == "slurm":
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict[str, Any] = {
            "timeout_min": opts.time_min,
            "mem_gb": opts.mem_gb,
            "cpus_per_task": opts.cpus_per_task,
            "slurm_array_parallelism": opts.array_parallelism,
            "name": "kdbench",
        }
        if opts.gpus_per_task:
            params["gpus_per_node"] = opts.gpus_per_task
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.account:
            params["slurm_account"] = opts.account
        ex.update_parameters(**params)
        return ex
    ex = submitit.LocalExecutor(folder=str(folder))
    ex.update_parameters(timeout_min=opts.time_min)
    return ex


def launch(
    grid: GridConfig, launcher: str = "local", opts: SlurmOptions | None = None, wait: bool = False,
    workers: int = 1,
) -> list[dict[str, int]]:
    """Run ``grid`` with ``launcher``; returns per-shard (or per-worker) status counts
    (for ``slurm`` only with ``wait``; otherwise it returns once the array is submitted)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if launcher == "local":
        if workers > 1:
            return run_local_workers(grid, workers)
        return [run_shard(grid, grid.shard or "0/1")]
    opts = opts or SlurmOptions()
    if opts.tasks < 1:
        raise ValueError("--tasks must be at least 1")
    shards = [f"{i}/{opts.tasks}" for i in range(opts.tasks)]
    folder = Path(grid.out) / "logs" / "submitit"
    executor = _executor(launcher, folder, opts)
    if launcher == "slurm":
        jobs = executor.map_array(run_shard, [grid] * len(shards), shards)
        print(f"[kdbench] submitted SLURM array {jobs[0].job_id.split('_')[0]} with {len(jobs)} task(s); "
              f"logs in {folder}", file=sys.stderr)
        return [job.result() for job in jobs] if wait else []
    results: list[dict[str, int]] = []
    wave = max(1, opts.array_parallelism)
    for start in range(0, len(shards), wave):
        jobs = [executor.submit(run_shard, grid, s) for s in shards[start : start + wave]]
        results.extend(job.result() for job in jobs)
    return results
