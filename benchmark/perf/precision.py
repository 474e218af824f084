"""Section ``precision`` (meant for ``--profile paper`` on a GPU): the harness's training
images/s per method in float32 and bf16, with and without channels-last, one fresh
process per variant (Accelerate's mixed precision is fixed per process)."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..settings.profiles import Profile, get_profile
from .data import perf_data, render_twin
from .loops import harness_run
from .machine import load_1m, median
from .probe import run_probe
from .run_setup import accelerator

PRECISION_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "no", "channels_last": False},
    "fp32+channels_last": {"precision": "no", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}


def precision_probe(
    profile: dict[str, Any], method: str, dataset: str = "ih_polyp", epochs: int = 1,
    bundle_file: str | None = None,
) -> dict[str, Any]:
    """One harness run of ``method`` in this process under ``profile`` (a
    :meth:`Profile.as_dict`, precision and channels_last included); the mixed precision
    Accelerate applied is read back from the accelerator, not assumed. ``bundle_file``:
    the rendered twin, pickled by :func:`measure_precision` (rendering 448-px images
    takes longer than the run)."""
    prof = Profile(**profile)
    bundle = None
    if bundle_file is not None:
        with open(bundle_file, "rb") as fh:
            bundle = pickle.load(fh)  # written by this module's parent process, never user input
    pd = perf_data(prof, dataset, bundle=bundle)
    acc = accelerator(prof)
    cuda = acc.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = harness_run(pd, method, epochs, profile=prof)
    return {
        "method": method, "precision": prof.precision, "effective_precision": str(acc.mixed_precision),
        "channels_last": prof.channels_last, "device": torch.cuda.get_device_name() if cuda else "cpu",
        "backbone": prof.backbone, "teacher_backbone": prof.teacher_backbone, "image_size": prof.image_size,
        "batch_size": prof.batch_size, "images": t.images, "steps": t.steps, "train_s": t.seconds,
        "median_step_s": t.median_step_s,
        "images_per_s": prof.batch_size / t.median_step_s if t.step_s else t.images_per_s,
        "images_per_s_whole_run": t.images_per_s,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def measure_precision(
    profile: str | Profile = "paper", methods_: Sequence[str] = ("baseline", "pagkd"), dataset: str = "ih_polyp",
    epochs: int = 1, repeats: int = 1, variants: Sequence[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Training images/s per method and precision/memory-format variant, each run in a
    fresh process; ``speedup`` is relative to the ``fp32`` variant of the same method."""
    variants = list(variants or PRECISION_VARIANTS)
    unknown = set(variants) - set(PRECISION_VARIANTS)
    if unknown:
        raise ValueError(f"unknown precision variant(s) {sorted(unknown)}; variants: {', '.join(PRECISION_VARIANTS)}")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {m: {v: [] for v in variants} for m in methods_}
    loads = [load_1m()]
    prof = get_profile(profile) if isinstance(profile, str) else profile
    prof = prof.replace(**(overrides or {}))
    with tempfile.TemporaryDirectory(prefix="kdbench-perf-") as tmp:
        bundle_file = Path(tmp) / "bundle.pkl"
        with open(bundle_file, "wb") as fh:
            pickle.dump(render_twin(prof, dataset), fh, protocol=pickle.HIGHEST_PROTOCOL)
        for _ in range(repeats):
            for method in methods_:
                for variant in variants:
                    spec = {"profile": prof.replace(**PRECISION_VARIANTS[variant]).as_dict(), "method": method,
                            "dataset": dataset, "epochs": epochs, "bundle_file": str(bundle_file)}
                    runs[method][variant].append(
                        run_probe(precision_probe, spec, f"precision probe {method}/{variant}"))
            loads.append(load_1m())
    out: dict[str, Any] = {"profile": prof.name, "dataset": f"{dataset}-synthetic", "epochs": epochs,
                           "repeats": repeats, "overrides": overrides or {}, "load_1m": loads, "methods": {}}
    for method, by_variant in runs.items():
        table = {}
        for variant, rs in by_variant.items():
            table[variant] = {**rs[0], "images_per_s": median([r["images_per_s"] for r in rs]),
                              "runs": [r["images_per_s"] for r in rs]}
        base = table.get("fp32", {}).get("images_per_s")
        for row in table.values():
            row["speedup"] = row["images_per_s"] / base if base else None
        out["methods"][method] = table
    return out
