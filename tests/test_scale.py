"""Beyond one process: shards, the submitit launcher, and data-parallel training."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark
from benchmark.orchestration.grid import parse_shard
from benchmark.orchestration.launch import SlurmOptions, launch
from benchmark.reporting import build_report
from benchmark.settings.config import grid_from_mapping
from benchmark.training.runfile import iter_runs

GRID = {"methods": "baseline,kd", "data": "synth", "regimes": "unpaired,paired", "seeds": [0],
        "profile": "smoke", "progress": False}


def _metrics(out: Path) -> dict[tuple, dict]:
    return {(r["dataset"], r["regime"], r["method"], r["seed"]): r["metrics"] for r in iter_runs(out)}


# provenance rows that name when the report was built and when its runs finished
_WHEN_ROWS = ("| report built |", "| runs dated |")


def _report_text(out: Path) -> tuple[str, dict[str, str]]:
    """REPORT.md without its two time rows, and every table file's text by name."""
    text = "\n".join(line for line in (out / "REPORT.md").read_text().splitlines()
                     if not line.startswith(_WHEN_ROWS))
    tables = {p.name: p.read_text() for p in sorted((out / "report" / "tables").iterdir())}
    return text, tables


def test_parse_shard_rejects_bad_values() -> None:
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "a/b", "1-2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_two_shards_merge_to_the_unsharded_grid(tmp_path: Path) -> None:
    whole = benchmark.run(out=tmp_path / "whole", **GRID)
    part0 = benchmark.run(out=tmp_path / "sharded", shard="0/2", **GRID)
    part1 = benchmark.run(out=tmp_path / "sharded", shard="1/2", **GRID)
    keys = lambda rs: {(r["regime"], r["method"]) for r in rs}  # noqa: E731
    assert keys(part0).isdisjoint(keys(part1))
    assert keys(part0) | keys(part1) == keys(whole)
    assert _metrics(tmp_path / "whole") == _metrics(tmp_path / "sharded")
    # the merged shards' report is the unsharded one, table for table (bootstrap CIs and tests included)
    build_report(tmp_path / "whole", n_boot=200)
    build_report(tmp_path / "sharded", n_boot=200)
    whole_text, whole_tables = _report_text(tmp_path / "whole")
    sharded_text, sharded_tables = _report_text(tmp_path / "sharded")
    assert len(whole_tables) > 5 and "kd" in whole_tables["synth_main.md"]
    assert sharded_tables == whole_tables
    assert sharded_text == whole_text


def test_submitit_local_launcher_runs_every_shard_once(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    grid = grid_from_mapping({**GRID, "methods": "baseline", "out": str(tmp_path / "sub")})
    counts = launch(grid, "submitit-local", SlurmOptions(tasks=2, array_parallelism=1, time_min=20))
    assert sum(c.get("ok", 0) for c in counts) == 2
    runs = [r for r in iter_runs(tmp_path / "sub") if r["method"] == "baseline"]
    assert sorted(r["regime"] for r in runs) == ["paired", "unpaired"]


TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.mark.skipif(shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None,
                    reason="accelerate launcher not installed")
def test_two_cpu_processes_end_with_identical_weights_and_one_writer(tmp_path: Path) -> None:
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "-m", "benchmark", "--methods", "kd", "--data", "synth", "--regimes",
         "unpaired", "--seeds", "0", "--profile", "smoke", "--out", str(out), "--no-progress",
         *(["--log-with", "tensorboard"] if TENSORBOARD else [])],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    hashes = dict(re.findall(r"rank (\d)/2 synth/unpaired/kd/seed0 student sha256 ([0-9a-f]+)", res.stderr))
    assert set(hashes) == {"0", "1"}, res.stderr[-2000:]
    assert hashes["0"] == hashes["1"]
    files = list((out / "runs" / "synth" / "unpaired" / "kd").iterdir())
    assert [f.name for f in files] == ["seed0.json"]
    record = iter_runs(out)
    kd = next(r for r in record if r["method"] == "kd")
    assert kd["student_sha256"] == hashes["0"]
    if TENSORBOARD:  # trackers on the main process only: every event file comes from one process
        events = list((out / "logs" / "synth" / "unpaired" / "kd" / "seed0").rglob("events.out.tfevents.*"))
        assert events and len({e.name.split(".")[-2] for e in events}) == 1, events


def test_local_workers_run_every_run_once_and_train_each_teacher_once(tmp_path: Path) -> None:
    grid = grid_from_mapping({**GRID, "out": str(tmp_path / "workers"), "seeds": [0, 1],
                              "cache_dir": str(tmp_path / "cache")})
    counts = launch(grid, "local", workers=2)
    assert len(counts) == 2 and sum(c.get("ok", 0) for c in counts) == 8
    runs = [r for r in iter_runs(tmp_path / "workers") if r["regime"] != "teacher"]
    keys = [(r["regime"], r["method"], r["seed"]) for r in runs]
    assert len(keys) == len(set(keys)) == 8
    # two (dataset, seed) teachers, split between the workers before any student ran
    teachers = list((tmp_path / "cache" / "teachers").glob("*.pt"))
    assert len(teachers) == 2
    assert all(r["teacher"] is None or r["timing"]["teacher_s"] == 0.0 for r in runs)
    # a second call finds everything done and rewrites nothing
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "workers" / "runs").rglob("*.json")}
    again = launch(grid, "local", workers=2)
    assert sum(c.get("ok", 0) for c in again) == 8
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "workers" / "runs").rglob("*.json")} == before


def test_local_workers_reject_zero() -> None:
    with pytest.raises(ValueError, match="--workers"):
        launch(grid_from_mapping(GRID), "local", workers=0)


def test_precision_and_channels_last_are_flags_over_the_paper_profile() -> None:
    from benchmark.orchestration.cli import _grid_mapping, build_parser

    def profile(*flags: str):
        args = build_parser().parse_args(["run", "--profile", "paper", *flags])
        return grid_from_mapping(_grid_mapping(args)).resolved_profile()

    assert (profile().precision, profile().channels_last) == ("bf16", True)
    off = profile("--precision", "no", "--no-channels-last")
    assert (off.precision, off.channels_last) == ("no", False)
    assert profile("--channels-last").channels_last is True
