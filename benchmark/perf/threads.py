"""Section ``threads``: a bare training step's speed under the OpenMP settings that matter
on a shared machine, each in fresh processes."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F

from ..models.backbones import create_backbone
from .machine import median
from .probe import probe_result, run_probe, start_probe

THREAD_SETTINGS: dict[str, dict[str, str | None]] = {
    "default": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": None},
    "one_thread": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
}


def thread_probe(batch: int, image_size: int, budget_s: float) -> dict[str, Any]:
    """Images/s of a bare ``kdbench_cnn4`` training step in this process (median step of
    at least 3 and at most 30 after two warm-up steps, for about ``budget_s`` seconds)."""
    torch.manual_seed(0)
    model = create_backbone("kdbench_cnn4", 2).model
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.rand(batch, 3, image_size, image_size), torch.randint(0, 2, (batch,))

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    step()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 30):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"threads": torch.get_num_threads(), "steps": len(times),
            "images_per_s": batch / times[len(times) // 2], "load_1m": os.getloadavg()[0]}


def measure_threads(
    batch: int = 32, image_size: int = 32, budget_s: float = 5.0, repeats: int = 2,
    settings: dict[str, dict[str, str | None]] | None = None,
) -> dict[str, Any]:
    """A bare student step's images/s in fresh processes under each OpenMP setting
    (settings alternate; median over ``repeats``)."""
    settings = settings or THREAD_SETTINGS
    probe_args = {"batch": batch, "image_size": image_size, "budget_s": budget_s}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in settings}
    for _ in range(repeats):
        for name, overrides in settings.items():
            env = dict(os.environ)
            for k, v in overrides.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = v
            runs[name].append(run_probe(thread_probe, probe_args, f"thread probe {name!r}", env=env, tail=2000))
    workers = max(1, os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    runs["one_thread_workers"] = []
    for _ in range(repeats):
        procs = [start_probe(thread_probe, probe_args, env=env) for _ in range(workers)]
        outs = [p.communicate() for p in procs]
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError("parallel thread probe failed:\n" + "\n".join(e[-2000:] for _, e in outs))
        each = [probe_result(o) for o, _ in outs]
        runs["one_thread_workers"].append({"threads": 1, "processes": workers, "load_1m": each[0]["load_1m"],
                                           "images_per_s": sum(r["images_per_s"] for r in each)})
    settings = {**settings, "one_thread_workers": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                                                   "processes": str(workers)}}
    out: dict[str, Any] = {"batch": batch, "image_size": image_size, "settings": {}}
    for name, rs in runs.items():
        out["settings"][name] = {
            "env": {k: v for k, v in settings[name].items() if v is not None},
            "threads": rs[0]["threads"],
            "images_per_s": median([r["images_per_s"] for r in rs]),
            "runs": rs,
        }
    return out
