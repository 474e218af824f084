"""Launchers: run a grid here, or as a job array through submitit.

- ``local`` (default): this process runs the grid (or its ``--shard``).
- ``slurm``: the grid is split into ``--tasks`` shards submitted as one SLURM job array
  (partition, GPUs per task, time, memory and array parallelism are options). Each
  array task runs ``run_grid`` on its shard; results merge because every run is its
  own file, and a resubmitted array skips finished runs.
- ``submitit-local``: the same jobs on this machine through submitit's local executor,
  submitted in waves of at most ``--array-parallelism`` (the local executor itself
  would start every job at once). Used to test the SLURM path without a cluster.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import GridConfig

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
    grid: GridConfig, launcher: str = "local", opts: SlurmOptions | None = None, wait: bool = False
) -> list[dict[str, int]]:
    """Run ``grid`` with ``launcher``; returns per-shard status counts (for ``slurm``
    only with ``wait``; otherwise it returns once the array is submitted)."""
    if launcher not in LAUNCHERS:
        raise ValueError(f"unknown launcher {launcher!r}; use one of {', '.join(LAUNCHERS)}")
    if launcher == "local":
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
