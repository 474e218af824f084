"""Section ``teacher_cache``: a run's training time with the teacher-output cache off and on."""

from __future__ import annotations

import time
from typing import Any

import torch

import methods

from ..models.backbones import create_backbone
from ..settings.profiles import Profile
from ..training.train import TeacherOutputCache
from .data import PerfData
from .loops import harness_run
from .machine import load_1m, median
from .run_setup import accelerator


def measure_teacher_cache(pd: PerfData, epochs: int = 1, repeats: int = 3, method: str = "kd") -> dict[str, Any]:
    """``method``'s training time with ``teacher_cache`` off and on (alternating)."""
    if methods.get(method).teacher_augmented:
        raise ValueError(f"method {method!r} needs augmented teacher inputs; the teacher cache does not apply")
    off, on = [], []
    loads = [load_1m()]
    profile_on = pd.profile.replace(teacher_cache=True)
    profile_off = pd.profile.replace(teacher_cache=False)
    for r in range(repeats):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            t = harness_run(pd, method, epochs, profile=profile_on if flag else profile_off)
            (on if flag else off).append(t)
        loads.append(load_1m())
    t_off, t_on = median([t.seconds for t in off]), median([t.seconds for t in on])
    build = median([cache_build_s(pd, profile_on) for _ in range(repeats)])
    # Per-epoch times without the one-off build, extrapolated to the profile's epoch count.
    epochs_full = pd.profile.epochs
    per_epoch_on = max(t_on - build, 0.0) / epochs
    projected_on = build + epochs_full * per_epoch_on
    projected_off = epochs_full * t_off / epochs
    return {
        "method": method, "epochs": epochs, "repeats": repeats, "teacher_pool": len(pd.data.teacher_pool),
        "train_s_off": t_off, "train_s_on": t_on, "saving": 1.0 - t_on / t_off if t_off > 0 else float("nan"),
        "cache_build_s": build, "profile_epochs": epochs_full,
        "projected_saving_at_profile_epochs": 1.0 - projected_on / projected_off if projected_off > 0 else float("nan"),
        "images_per_s_off": median([t.images_per_s for t in off]),
        "images_per_s_on": median([t.images_per_s for t in on]),
        "images": off[0].images, "off": [t.as_dict() for t in off], "on": [t.as_dict() for t in on],
        "load_1m": loads,
    }


def cache_build_s(pd: PerfData, profile: Profile, seed: int = 0) -> float:
    """Seconds to compute the teacher-output cache of ``pd``'s teacher pool once."""
    acc = accelerator(profile)
    torch.manual_seed(seed)
    teacher = create_backbone(profile.teacher_backbone, pd.bundle.num_classes).to(acc.device).eval()
    t0 = time.perf_counter()
    cache = TeacherOutputCache(teacher, pd.data, profile)
    if cache.logits.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0
