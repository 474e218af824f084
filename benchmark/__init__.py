"""kdbench harness: configuration, training, evaluation, statistics and reports.

Everything the command line does is one function call on the same code path::

    import benchmark
    records = benchmark.run(methods="pagkd,crd", data="ih_polyp", regimes="unpaired,all",
                            seeds=[0, 1, 2], profile="cpu", out="results")
    benchmark.report("results")

Sub-packages follow the flow of a run: :mod:`.orchestration` (command line, grid,
launchers) runs :mod:`.training` (one run, teachers, the training loop), which uses
:mod:`.settings` (profiles, configs), :mod:`.models` (backbones, weights) and
:mod:`.analysis` (metrics, statistics, figures); :mod:`.reporting` turns run files into
``REPORT.md``. None of them imports one above it (``tests/test_layering.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

# Every entry point (python -m benchmark, kdbench, python -m benchmark.perf, the Python
# API) imports this package first: weights come only from packages and local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# OpenMP threads that spin while waiting make a shared CPU 5-8x slower; sleeping costs
# next to nothing on an idle one. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_grid_config(grid: Any) -> list[dict[str, Any]]:
    """Run a :class:`benchmark.settings.config.GridConfig` (see :func:`benchmark.orchestration.grid.run_grid`)."""
    from .orchestration.grid import run_grid

    return run_grid(grid)


def run(
    methods: str | list[str] = "all",
    data: str | list[str] = "synth",
    regimes: str | list[str] = "main",
    seeds: int | list[int] | str = (0, 1, 2),
    profile: str = "cpu",
    out: str | Path = "results",
    **flags: Any,
) -> list[dict[str, Any]]:
    """Run a grid and return its run records. ``flags`` take the command line's long
    flag names with underscores (``epochs=3``, ``data_root=...``, ``option=["kd.temperature=2"]``,
    ``progress=False``, ``cache_dir=...``, ``shard="0/2"``)."""
    from .settings.config import grid_from_mapping

    if isinstance(seeds, int):
        seeds = [seeds]
    mapping: dict[str, Any] = {
        "methods": methods, "data": data, "regimes": regimes,
        "seeds": seeds if isinstance(seeds, str) else list(seeds),
        "profile": profile, "out": str(out), "progress": False, **flags,
    }
    return run_grid_config(grid_from_mapping(mapping))


def report(results: str | Path = "results", out_dir: str | Path | None = None) -> Path:
    """Build ``REPORT.md`` (tables and figures) from the run files under ``results``."""
    from .reporting import build_report

    return build_report(results, out_dir)


def rerun(run_file: str | Path, out: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Repeat one run from the config stored in its own file; returns (new, original).

    The run is repeated with the number of torch threads its file records (float sums
    split across a different number of threads round differently, so a run made by a
    one-thread ``--workers`` process is repeated with one thread)."""
    import torch

    from .settings.config import RunConfig
    from .training.runfile import read_run
    from .training.runner import Session

    original = read_run(run_file)
    if original is None:
        raise FileNotFoundError(f"run file {run_file} is missing or not valid JSON")
    cfg = RunConfig.from_dict(original["config"])
    threads = ((original.get("provenance") or {}).get("hardware") or {}).get("torch_threads")
    if isinstance(threads, int) and threads > 0:
        torch.set_num_threads(threads)
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="kdbench-rerun-"))
    session = Session(out)
    record = session.run(cfg, session.fold(session.dataset(cfg), cfg))  # a fold run repeats its own fold
    return record, original
