"""A grid killed with SIGKILL mid-run resumes and finishes with every run exactly once;
a corrupt teacher cache is detected by its hash and rebuilt."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmark.settings.config import RunConfig
from benchmark.settings.profiles import get_profile
from benchmark.training.runfile import iter_runs
from benchmark.training.runner import Session

GRID = ["--methods", "baseline,kd", "--data", "synth", "--regimes", "paired,unpaired", "--seeds", "0",
        "--profile", "smoke", "--no-progress"]


def _grid(out: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *GRID, "--out", str(out)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_grid_then_resume_runs_every_run_once(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = _grid(out, tmp_path)
    deadline = time.time() + 600
    first: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        first = [p for p in (out / "runs").rglob("seed0.json") if "teacher" not in p.parts] if out.exists() else []
        if first:
            break
        time.sleep(0.2)
    assert first, "the grid wrote no run file before the deadline"
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the next run
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in first}
    for p in first:
        json.loads(p.read_text())  # never half-written

    second = _grid(out, tmp_path)
    _, err = second.communicate(timeout=900)
    assert second.returncode == 0, err
    runs = [r for r in iter_runs(out) if r["regime"] != "teacher"]
    keys = [(r["regime"], r["method"]) for r in runs]
    assert sorted(keys) == sorted({(g, m) for g in ("paired", "unpaired") for m in ("baseline", "kd")})
    assert all(r["status"] == "ok" for r in runs)
    assert {p: p.stat().st_mtime_ns for p in first} == done_before, "a finished run was run again"
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"


def test_corrupt_teacher_cache_is_detected_and_rebuilt(tmp_path: Path) -> None:
    session = Session(tmp_path / "out", cache_dir=tmp_path / "cache")
    cfg = RunConfig(dataset="synth", regime="unpaired", method="kd", seed=0, profile=get_profile("smoke"))
    bundle = session.dataset(cfg)
    first = session.teacher(bundle, "nbi", cfg.profile, 0)
    assert not first.cached
    ckpt = next((tmp_path / "cache" / "teachers").glob("*.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:-100] + b"\0" * 100)

    fresh = Session(tmp_path / "out", cache_dir=tmp_path / "cache")
    rebuilt = fresh.teacher(fresh.dataset(cfg), "nbi", cfg.profile, 0)
    assert not rebuilt.cached, "a corrupt checkpoint was loaded instead of rebuilt"
    again = Session(tmp_path / "out", cache_dir=tmp_path / "cache").teacher(bundle, "nbi", cfg.profile, 0)
    assert again.cached
