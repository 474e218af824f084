"""Section ``flops``: achieved GFLOP/s of the training step beside a matrix multiply's."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..models.backbones import create_backbone
from ..models.cost import forward_flops
from .data import PerfData
from .machine import load_1m, median
from .run_setup import default_device


def matmul_gflops(n: int = 2048, repeats: int = 5, device: torch.device | str | None = None) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matrix multiply (2 n^3 FLOPs)."""
    device = torch.device(device) if device is not None else default_device()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync()
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / median(times) / 1e9


def measure_flops(
    pd: PerfData, throughput: dict[str, Any], matmul_n: int = 2048, matmul_repeats: int = 5
) -> dict[str, Any]:
    """Achieved GFLOP/s of the training steps measured by :func:`measure_throughput`."""
    profile = pd.profile
    n_classes = pd.bundle.num_classes
    s_flops = forward_flops(create_backbone(profile.backbone, n_classes), profile.image_size)
    t_flops = forward_flops(create_backbone(profile.teacher_backbone, n_classes), profile.image_size)
    loads = [load_1m()]
    mm = matmul_gflops(matmul_n, matmul_repeats)
    loads.append(load_1m())
    out: dict[str, Any] = {
        "student_forward_flops": s_flops, "teacher_forward_flops": t_flops,
        "step_flops_per_image": {"baseline": 3 * s_flops, "kd": 3 * s_flops + t_flops},
        "matmul_n": matmul_n, "matmul_gflops": mm, "load_1m": loads, "methods": {},
    }
    for method, m in throughput["methods"].items():
        per_image = out["step_flops_per_image"].get(method, 3 * s_flops)
        for side in ("harness", "bare"):
            gflops = per_image * m[f"{side}_images_per_s"] / 1e9
            out["methods"].setdefault(method, {})[side] = {"gflops": gflops, "fraction_of_matmul": gflops / mm}
    return out
