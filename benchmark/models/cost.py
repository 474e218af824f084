"""Size and speed of a network: parameters, forward FLOPs and CPU latency per image."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def forward_flops(model: nn.Module, image_size: int) -> int:
    """FLOPs of one forward pass on one image (a multiply-add counts as 2)."""
    param = next(model.parameters())
    x = torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    forward = getattr(model, "from_image", model)  # a frozen trunk is part of the deployed network
    with FlopCounterMode(display=False) as counter:
        forward(x)
    model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def cpu_latency_ms(model: nn.Module, image_size: int, repeats: int = 10) -> float:
    """Median wall time of a batch-of-one forward pass on the CPU, in milliseconds."""
    cpu_model = copy.deepcopy(model).cpu().float().eval()
    x = torch.zeros(1, 3, image_size, image_size)
    forward = getattr(cpu_model, "from_image", cpu_model)
    for _ in range(2):
        forward(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        forward(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


_memo: dict[tuple[str, int, int], dict[str, Any]] = {}


def model_cost(model: nn.Module, num_classes: int, image_size: int, name: str) -> dict[str, Any]:
    """Parameters, forward FLOPs per image and CPU latency (ms/image, batch 1), memoised
    per (backbone, classes, image size) within a process."""
    key = (name, num_classes, image_size)
    if key not in _memo:
        _memo[key] = {
            "backbone": name,
            "image_size": image_size,
            "params": int(sum(p.numel() for p in model.parameters())),
            "flops": forward_flops(model, image_size),
            "latency_ms": cpu_latency_ms(model, image_size),
        }
    return dict(_memo[key])
