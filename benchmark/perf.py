"""Speed of the harness on one machine, measured in one run and reported as ratios.

    python -m benchmark.perf --out perf.json            # every section, cpu profile
    python -m benchmark.perf --only throughput,flops    # some sections
    python -m benchmark.perf --profile paper --only precision --data-scale 0.2   # on a GPU

Sections (each one function here, usable from tests and notebooks):

- ``throughput``: images per second of :func:`benchmark.training.train.fit`'s training steps
  (``FitResult.train_s``: validation excluded) for ``baseline`` and ``kd`` against a
  bare PyTorch loop doing the same work: same student (``kdbench_cnn4``), same teacher
  for ``kd`` (the profile's teacher, frozen, ``no_grad``, on augmented teacher-side
  images as the harness feeds it), same uint8 store at the profile's image size indexed per batch, same batch
  size, same Adam settings, the same number of images, and the *same augmentation* (flips,
  90-degree turn, brightness; the bare loop's copy is written out below) unless
  ``augment=False``, which turns it off in both. Harness and bare runs alternate; the
  ratio is the median of the per-pair ratios. Beside it, the ratio of the median
  full-batch step times (end of one step to the end of the next, batch assembly
  included), which a load spike on a shared machine moves far less.
- ``flops``: achieved GFLOP/s of the student's training step (forward FLOPs from
  :func:`benchmark.models.cost.forward_flops` x 3 for forward + backward, times images per
  second) beside a float32 ``n x n`` matrix multiply's GFLOP/s (median of several), the
  practical ceiling of the machine.
- ``decode``: one epoch's data access through :func:`datasets.images.load_images` with
  the decode cache (a memory-mapped ``.npy``, second call) against decoding every PNG
  file again, plus the time the harness spends per epoch assembling batches from its
  in-memory uint8 store (what an epoch really costs once the images are loaded).
- ``teacher_cache``: a ``kd`` run's training time with ``Profile.teacher_cache`` off and
  on (teacher logits computed once per run on un-augmented images; the time to compute
  them is part of ``train_s``).
- ``threads``: a bare training step's speed in fresh processes under the OpenMP
  settings that matter on a shared machine: the default (2 threads, busy-waiting
  workers), ``OMP_WAIT_POLICY=PASSIVE``, one thread, and one one-thread process per
  core running at once (what ``--workers`` does; images/s summed over the processes).
- ``precision`` (only with ``--only``; meant for ``--profile paper`` on a GPU): the
  harness's training images/s for ``baseline`` and ``pagkd`` in float32 and bf16, each
  with and without channels-last, one fresh process per variant (Accelerate's mixed
  precision is fixed per process). Images/s is the batch size over the median
  full-batch step time, so cuDNN's first-step tuning does not count. On a CPU the
  harness always trains in float32, and the figure records bf16 as not applied.

Every section records the machine's load average before and after it; on a shared
machine compare ratios, not absolute figures. All data is SYNTHETIC (the rendered
``ih_polyp`` twin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

import methods
from datasets.base import DatasetBundle, LoadOptions
from datasets.catalog import DataRequest, load_dataset
from datasets.images import load_images
from datasets.sampling import twin_positions
from methods import Batch, DistillerContext
from methods.kd import kd_loss

from .models.backbones import create_backbone
from .models.cost import forward_flops
from .settings.profiles import Profile, get_profile
from .training.inputs import ImageStore
from .training.train import TeacherOutputCache, TrainData, fit

SECTIONS = ("throughput", "flops", "decode", "teacher_cache", "threads", "precision")
# what runs without --only: the CPU-side figures; ``precision`` is asked for by name (on a GPU)
DEFAULT_SECTIONS = SECTIONS[:-1]


# ----------------------------------------------------------------------------- machine


def machine_state() -> dict[str, Any]:
    """Load average, cores and the thread settings in effect (recorded beside every figure)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "load_1m": round(load[0], 2), "load_5m": round(load[1], 2), "load_15m": round(load[2], 2),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(default)"),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _load() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# ----------------------------------------------------------------------------- data


@dataclass
class PerfData:
    """One synthetic dataset with its uint8 store and one regime's training pools."""

    bundle: DatasetBundle
    data: TrainData
    profile: Profile
    regime: str

    @property
    def store(self) -> ImageStore:
        return self.data.store


def perf_data(
    profile: Profile | str = "cpu",
    dataset: str = "ih_polyp",
    regime: str = "all",
    device: torch.device | str | None = None,
    bundle: DatasetBundle | None = None,
) -> PerfData:
    """The SYNTHETIC twin of ``dataset`` at the profile's size and scale, as :class:`TrainData`
    (``bundle``: one rendered before, so that several processes render it once)."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    if bundle is None:
        bundle = render_twin(profile, dataset)
    device = torch.device(device) if device is not None else _device()
    store = ImageStore(bundle.table.images, device, profile.channels_last)
    s_pool, t_pool = bundle.regime_pools(regime)
    labels = bundle.table.labels
    twin = np.arange(len(s_pool)) if regime == "same" else twin_positions(s_pool, t_pool, bundle.table.twin)
    data = TrainData(
        store=store, student_pool=s_pool, teacher_pool=t_pool, twin_position=twin,
        student_labels=labels[s_pool], teacher_labels=labels[t_pool],
        val_index=bundle.splits.val_student, val_labels=labels[bundle.splits.val_student],
        num_classes=bundle.num_classes, class_names=bundle.classes, same_view=regime == "same",
    )
    return PerfData(bundle=bundle, data=data, profile=profile, regime=regime)


def render_twin(profile: Profile, dataset: str = "ih_polyp") -> DatasetBundle:
    """The SYNTHETIC twin of ``dataset`` at the profile's image size and data scale."""
    return load_dataset(
        DataRequest(name=f"{dataset}:synthetic", image_size=profile.image_size, scale=profile.data_scale,
                    min_class_images=profile.min_class_images),
        log=lambda _msg: None,
    )


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_ACCELERATOR: Any = None


def _accelerator(profile: Profile) -> Any:
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from .training.runner import make_accelerator

        _ACCELERATOR = make_accelerator(profile)
    return _ACCELERATOR


def expected_images(n_student: int, batch_size: int, epochs: int) -> int:
    """Images one run trains on: every student image once per epoch, less a last batch
    of a single row (dropped by the class-matched sampler and by the bare loop)."""
    rest = n_student % batch_size
    return epochs * (n_student - (rest if rest == 1 else 0))


# ----------------------------------------------------------------------------- the two loops


@dataclass
class Timing:
    """One timed run: images, training seconds, steps, and the seconds of each full-size
    step measured from the end of the previous step of the same epoch (everything the
    loop does per step; robust to load changes when its median is used)."""

    images: int
    seconds: float
    steps: int
    step_s: list[float] = field(default_factory=list)

    @property
    def median_step_s(self) -> float:
        return _median(self.step_s)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "seconds": round(self.seconds, 4), "steps": self.steps,
                "images_per_s": round(self.images_per_s, 3), "median_step_s": round(self.median_step_s, 5)}


class StepClock:
    """Timestamps at the end of each step; intervals within an epoch between full-size steps."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.last: tuple[int, float] | None = None
        self.step_s: list[float] = []

    def tick(self, epoch: int, rows: int) -> None:
        now = time.perf_counter()
        if self.last is not None and self.last[0] == epoch and rows == self.batch_size:
            self.step_s.append(now - self.last[1])
        self.last = (epoch, now)


def _needs_teacher(method: str) -> bool:
    return bool(methods.get(method).needs_teacher)


def _in_memory_format(model: Any, profile: Profile) -> Any:
    """The model in the profile's memory format (channels-last when it is on), as the runner builds it."""
    return model.to(memory_format=torch.channels_last) if profile.channels_last else model


def harness_run(pd: PerfData, method: str, epochs: int, seed: int = 0, profile: Profile | None = None) -> Timing:
    """One :func:`fit` of ``method`` (student from scratch, random frozen teacher); its
    training-step time ``train_s`` (validation excluded) and images trained on."""
    profile = profile or pd.profile
    acc = _accelerator(profile)
    torch.manual_seed(seed)
    n_classes = pd.bundle.num_classes
    student = _in_memory_format(create_backbone(profile.backbone, n_classes).to(acc.device), profile)
    teacher = None
    if _needs_teacher(method):
        teacher = _in_memory_format(create_backbone(profile.teacher_backbone, n_classes).to(acc.device), profile)
        teacher.eval()
    d = pd.data
    ctx = DistillerContext(
        student=student.spec(profile.image_size), teacher=teacher.spec(profile.image_size) if teacher else None,
        num_classes=n_classes, regime=pd.regime, num_student_train=len(d.student_pool),
        num_teacher_train=len(d.teacher_pool), student_labels=torch.as_tensor(d.student_labels),
        teacher_labels=torch.as_tensor(d.teacher_labels), num_epochs=epochs, steps_per_epoch=0,
        batch_size=profile.batch_size,
    )
    distiller = methods.create(method, ctx)
    clock = StepClock(profile.batch_size)
    after_step = distiller.after_step

    def timed_after_step(batch: Batch) -> None:
        after_step(batch)
        if batch.student_x.device.type == "cuda":
            torch.cuda.synchronize()
        clock.tick(batch.epoch, batch.size)

    distiller.after_step = timed_after_step  # type: ignore[method-assign]
    result = fit(student=student, distiller=distiller, teacher=teacher, data=d, profile=profile, epochs=epochs,
                 lr=profile.lr, weights=dict(distiller.default_weights), seed=seed, accelerator=acc)
    return Timing(images=result.images, seconds=result.train_s, steps=result.steps, step_s=clock.step_s)


def bare_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """The harness's augmentation written out plainly: per-row flips, a 90-degree turn
    (transpose) and a brightness gain, then clamping to [0, 1]."""
    draws = torch.rand(x.shape[0], 4, generator=generator).to(x.device)
    x = torch.where((draws[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where((draws[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
    x = torch.where((draws[:, 2] < 0.5)[:, None, None, None], x.transpose(-1, -2), x)
    return (x * (1.0 + 0.2 * (draws[:, 3] - 0.5))[:, None, None, None]).clamp_(0.0, 1.0)


def bare_run(pd: PerfData, method: str, epochs: int, seed: int = 0, augment: bool | None = None) -> Timing:
    """A plain PyTorch loop doing the work of :func:`harness_run`: shuffled student rows
    in batches (a last single row dropped), uint8 rows indexed from the same store and
    scaled to [0, 1], the same augmentation (or none), student forward, cross-entropy
    (``kd``: 0.1 CE + 0.9 T^2-KL at T = 4 against the frozen teacher run under
    ``no_grad`` on randomly drawn teacher-pool rows), backward, Adam step; model and
    inputs in the profile's memory format."""
    profile = pd.profile
    augment = profile.augment if augment is None else augment
    if method not in ("baseline", "kd"):
        raise ValueError(f"the bare loop implements baseline and kd, not {method!r}")
    device = pd.store.device
    torch.manual_seed(seed)
    n_classes = pd.bundle.num_classes
    student = _in_memory_format(create_backbone(profile.backbone, n_classes).model.to(device), profile).train()
    teacher = None
    if method == "kd":
        teacher = _in_memory_format(create_backbone(profile.teacher_backbone, n_classes).model.to(device),
                                    profile).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    images = pd.store.images
    student_rows = torch.as_tensor(pd.data.student_pool, dtype=torch.long)
    teacher_rows = torch.as_tensor(pd.data.teacher_pool, dtype=torch.long)
    labels = torch.as_tensor(pd.bundle.table.labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    memory_format = torch.channels_last if profile.channels_last else torch.contiguous_format
    n_images = steps = 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = StepClock(profile.batch_size)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = student_rows[torch.randperm(len(student_rows), generator=generator)]
        for start in range(0, len(order), profile.batch_size):
            rows = order[start : start + profile.batch_size]
            if len(rows) < 2:
                continue
            x = images.index_select(0, rows.to(device)).float().div_(255.0)
            if augment:
                x = bare_augment(x, generator)
            x = x.contiguous(memory_format=memory_format)
            y = labels[rows].to(device)
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                t_rows = teacher_rows[torch.randint(len(teacher_rows), (len(rows),), generator=generator)]
                xt = images.index_select(0, t_rows.to(device)).float().div_(255.0)
                if augment:
                    xt = bare_augment(xt, generator)
                xt = xt.contiguous(memory_format=memory_format)
                with torch.no_grad():
                    t_logits = teacher(xt)
                loss = 0.1 * loss + 0.9 * kd_loss(logits, t_logits, 4.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n_images += len(rows)
            steps += 1
            if device.type == "cuda":
                sync()
            clock.tick(epoch, len(rows))
    sync()
    return Timing(images=n_images, seconds=time.perf_counter() - started, steps=steps, step_s=clock.step_s)


# ----------------------------------------------------------------------------- sections


def measure_throughput(
    pd: PerfData, methods_: Sequence[str] = ("baseline", "kd"), epochs: int = 1, repeats: int = 3,
    augment: bool = True,
) -> dict[str, Any]:
    """Harness vs bare loop, alternating, ``repeats`` pairs per method."""
    profile = pd.profile.replace(augment=augment)
    pd = PerfData(pd.bundle, pd.data, profile, pd.regime)
    out: dict[str, Any] = {"augment": augment, "epochs": epochs, "repeats": repeats, "regime": pd.regime,
                           "batch_size": profile.batch_size, "image_size": profile.image_size,
                           "student": profile.backbone, "teacher": profile.teacher_backbone, "methods": {}}
    for method in methods_:
        harness: list[Timing] = []
        bare: list[Timing] = []
        loads = [_load()]
        for r in range(repeats):
            # alternate which goes first so a load change hits both sides alike
            order = [("h", harness_run), ("b", bare_run)] if r % 2 == 0 else [("b", bare_run), ("h", harness_run)]
            for tag, fn in order:
                (harness if tag == "h" else bare).append(fn(pd, method, epochs))
            loads.append(_load())
        ratios = [h.images_per_s / b.images_per_s for h, b in zip(harness, bare, strict=True)]
        h_step = _median([x for t in harness for x in t.step_s])
        b_step = _median([x for t in bare for x in t.step_s])
        out["methods"][method] = {
            "harness_images_per_s": _median([t.images_per_s for t in harness]),
            "bare_images_per_s": _median([t.images_per_s for t in bare]),
            "ratio": _median(ratios),
            "ratios": [round(x, 4) for x in ratios],
            "harness_median_step_s": h_step,
            "bare_median_step_s": b_step,
            "step_ratio": b_step / h_step if h_step > 0 else float("nan"),
            "images_harness": harness[0].images,
            "images_bare": bare[0].images,
            "images_expected": expected_images(len(pd.data.student_pool), profile.batch_size, epochs),
            "harness": [t.as_dict() for t in harness],
            "bare": [t.as_dict() for t in bare],
            "load_1m": loads,
        }
    return out


def matmul_gflops(n: int = 2048, repeats: int = 5, device: torch.device | str | None = None) -> float:
    """Median GFLOP/s of an ``n x n`` float32 matrix multiply (2 n^3 FLOPs)."""
    device = torch.device(device) if device is not None else _device()
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
    return 2 * n**3 / _median(times) / 1e9


def measure_flops(
    pd: PerfData, throughput: dict[str, Any], matmul_n: int = 2048, matmul_repeats: int = 5
) -> dict[str, Any]:
    """Achieved GFLOP/s of the training steps measured by :func:`measure_throughput`."""
    profile = pd.profile
    n_classes = pd.bundle.num_classes
    s_flops = forward_flops(create_backbone(profile.backbone, n_classes), profile.image_size)
    t_flops = forward_flops(create_backbone(profile.teacher_backbone, n_classes), profile.image_size)
    loads = [_load()]
    mm = matmul_gflops(matmul_n, matmul_repeats)
    loads.append(_load())
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


def write_png_files(
    folder: Path, n: int, file_size: int = 64, dataset: str = "ih_polyp", distinct: int = 256
) -> list[Path]:
    """``n`` PNG files of SYNTHETIC frames: ``distinct`` rendered images written in their
    eight flips/turns (so no two files hold the same pixels while rendering stays cheap)."""
    from PIL import Image

    from datasets.synthetic import plan_twin, render_plan

    plan = plan_twin(dataset, scale=1.0, min_class_images=8, seed=0)
    distinct = max(1, min(distinct, len(plan), n))
    base = render_plan(plan, file_size, rows=np.arange(distinct))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = base[i % distinct]
        variant = (i // distinct) % 8
        img = np.rot90(img, variant % 4)
        if variant >= 4:
            img = img[:, ::-1]
        path = folder / f"frame_{i:05d}.png"
        Image.fromarray(np.ascontiguousarray(img)).save(path)
        paths.append(path)
    return paths


def _store_epoch_s(images: np.ndarray, batch_size: int, augment: bool) -> float:
    """Time to assemble one epoch of batches from an in-memory uint8 store."""
    store = ImageStore(images, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    order = np.random.default_rng(0).permutation(len(images))
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        store.batch(order[start : start + batch_size], "none", augment, generator)
    return time.perf_counter() - t0


def measure_decode_cache(
    workdir: Path | None = None, n_files: int = 1500, file_size: int = 64, image_size: int = 32,
    repeats: int = 3, batch_size: int = 32,
) -> dict[str, Any]:
    """One epoch's data access: decode cache (mmap, second call) vs decoding every file."""
    with tempfile.TemporaryDirectory(prefix="kdbench-perf-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        paths = write_png_files(root / "png", n_files, file_size)
        opts_cache = LoadOptions(image_size=image_size, cache_dir=root / "cache")
        opts_plain = LoadOptions(image_size=image_size)
        loads = [_load()]
        t0 = time.perf_counter()
        first, kept, _ = load_images(paths, opts_cache)
        build_s = time.perf_counter() - t0
        cached_s, decode_s = [], []
        hit = False
        for r in range(repeats):
            for tag in (("c", "d") if r % 2 == 0 else ("d", "c")):
                t0 = time.perf_counter()
                if tag == "c":
                    arr, kept, _ = load_images(paths, opts_cache)
                    hit = isinstance(arr, np.memmap) or isinstance(getattr(arr, "base", None), np.memmap)
                    rows = np.array(arr)  # read every row, as an epoch would
                    cached_s.append(time.perf_counter() - t0)
                else:
                    rows, kept, _ = load_images(paths, opts_plain)
                    decode_s.append(time.perf_counter() - t0)
                if rows.shape[0] != int(kept.sum()):
                    raise RuntimeError("decode benchmark: image count does not match the kept mask")
            loads.append(_load())
        same = bool(np.array_equal(np.asarray(first), rows))
        store_s = _median([_store_epoch_s(rows, batch_size, True) for _ in range(repeats)])
    c, d = _median(cached_s), _median(decode_s)
    return {
        "files": n_files, "file_size": file_size, "image_size": image_size, "images": int(rows.shape[0]),
        "cache_build_s": build_s, "cached_epoch_s": c, "decode_epoch_s": d, "speedup": d / c if c > 0 else math.inf,
        "cached_runs_s": cached_s, "decode_runs_s": decode_s, "cache_hit_is_mmap": hit, "identical_pixels": same,
        "store_batches_epoch_s": store_s, "load_1m": loads,
    }


def measure_teacher_cache(pd: PerfData, epochs: int = 1, repeats: int = 3, method: str = "kd") -> dict[str, Any]:
    """``method``'s training time with ``teacher_cache`` off and on (alternating)."""
    if methods.get(method).teacher_augmented:
        raise ValueError(f"method {method!r} needs augmented teacher inputs; the teacher cache does not apply")
    off, on = [], []
    loads = [_load()]
    profile_on = pd.profile.replace(teacher_cache=True)
    profile_off = pd.profile.replace(teacher_cache=False)
    for r in range(repeats):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            t = harness_run(pd, method, epochs, profile=profile_on if flag else profile_off)
            (on if flag else off).append(t)
        loads.append(_load())
    t_off, t_on = _median([t.seconds for t in off]), _median([t.seconds for t in on])
    build = _median([cache_build_s(pd, profile_on) for _ in range(repeats)])
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
        "images_per_s_off": _median([t.images_per_s for t in off]),
        "images_per_s_on": _median([t.images_per_s for t in on]),
        "images": off[0].images, "off": [t.as_dict() for t in off], "on": [t.as_dict() for t in on],
        "load_1m": loads,
    }


def cache_build_s(pd: PerfData, profile: Profile, seed: int = 0) -> float:
    """Seconds to compute the teacher-output cache of ``pd``'s teacher pool once."""
    acc = _accelerator(profile)
    torch.manual_seed(seed)
    teacher = create_backbone(profile.teacher_backbone, pd.bundle.num_classes).to(acc.device).eval()
    t0 = time.perf_counter()
    cache = TeacherOutputCache(teacher, pd.data, profile)
    if cache.logits.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


PRECISION_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "no", "channels_last": False},
    "fp32+channels_last": {"precision": "no", "channels_last": True},
    "bf16": {"precision": "bf16", "channels_last": False},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}

_PRECISION_PROBE = r"""
import json, sys
from benchmark.perf import precision_probe
print(json.dumps(precision_probe(**json.loads(sys.argv[1])), default=float))
"""


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
    acc = _accelerator(prof)
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
    loads = [_load()]
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
                    proc = subprocess.run([sys.executable, "-c", _PRECISION_PROBE, json.dumps(spec)],
                                          capture_output=True, text=True, check=False)
                    if proc.returncode != 0:
                        raise RuntimeError(f"precision probe {method}/{variant} failed:\n{proc.stderr[-3000:]}")
                    runs[method][variant].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            loads.append(_load())
    out: dict[str, Any] = {"profile": prof.name, "dataset": f"{dataset}-synthetic", "epochs": epochs,
                           "repeats": repeats, "overrides": overrides or {}, "load_1m": loads, "methods": {}}
    for method, by_variant in runs.items():
        table = {}
        for variant, rs in by_variant.items():
            table[variant] = {**rs[0], "images_per_s": _median([r["images_per_s"] for r in rs]),
                              "runs": [r["images_per_s"] for r in rs]}
        base = table.get("fp32", {}).get("images_per_s")
        for row in table.values():
            row["speedup"] = row["images_per_s"] / base if base else None
        out["methods"][method] = table
    return out


_THREAD_PROBE = r"""
import json, os, sys, time
import torch, torch.nn.functional as F
from benchmark.models.backbones import create_backbone
batch, size, budget = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.manual_seed(0)
m = create_backbone("kdbench_cnn4", 2).model
opt = torch.optim.Adam(m.parameters(), 1e-3)
x, y = torch.rand(batch, 3, size, size), torch.randint(0, 2, (batch,))
def step():
    loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
step(); step()
times, t_end = [], time.perf_counter() + budget
while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 30):
    t0 = time.perf_counter(); step(); times.append(time.perf_counter() - t0)
times.sort()
print(json.dumps({"threads": torch.get_num_threads(), "steps": len(times),
                  "images_per_s": batch / times[len(times) // 2], "load_1m": os.getloadavg()[0]}))
"""

THREAD_SETTINGS: dict[str, dict[str, str | None]] = {
    "default": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": None},
    "one_thread": {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "1"},
}


def measure_threads(
    batch: int = 32, image_size: int = 32, budget_s: float = 5.0, repeats: int = 2,
    settings: dict[str, dict[str, str | None]] | None = None,
) -> dict[str, Any]:
    """A bare student step's images/s in fresh processes under each OpenMP setting
    (settings alternate; median over ``repeats``)."""
    settings = settings or THREAD_SETTINGS
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in settings}
    for _ in range(repeats):
        for name, overrides in settings.items():
            env = dict(os.environ)
            for k, v in overrides.items():
                if v is None:
                    env.pop(k, None)
                else:
                    env[k] = v
            proc = subprocess.run(
                [sys.executable, "-c", _THREAD_PROBE, str(batch), str(image_size), str(budget_s)],
                env=env, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"thread probe {name!r} failed:\n{proc.stderr[-2000:]}")
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    workers = max(1, os.cpu_count() or 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    runs["one_thread_workers"] = []
    for _ in range(repeats):
        procs = [subprocess.Popen([sys.executable, "-c", _THREAD_PROBE, str(batch), str(image_size), str(budget_s)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        outs = [p.communicate() for p in procs]
        if any(p.returncode != 0 for p in procs):
            raise RuntimeError("parallel thread probe failed:\n" + "\n".join(e[-2000:] for _, e in outs))
        each = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
        runs["one_thread_workers"].append({"threads": 1, "processes": workers, "load_1m": each[0]["load_1m"],
                                           "images_per_s": sum(r["images_per_s"] for r in each)})
    settings = {**settings, "one_thread_workers": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
                                                   "processes": str(workers)}}
    out: dict[str, Any] = {"batch": batch, "image_size": image_size, "settings": {}}
    for name, rs in runs.items():
        out["settings"][name] = {
            "env": {k: v for k, v in settings[name].items() if v is not None},
            "threads": rs[0]["threads"],
            "images_per_s": _median([r["images_per_s"] for r in rs]),
            "runs": rs,
        }
    return out


# ----------------------------------------------------------------------------- report


def run_all(
    sections: Sequence[str] = DEFAULT_SECTIONS, profile: str | Profile = "cpu", dataset: str = "ih_polyp",
    epochs: int = 1, repeats: int = 3, augment: bool = True, decode_files: int = 1500, decode_file_size: int = 64,
    matmul_n: int = 2048, log: Callable[[str], None] | None = None, overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every requested section, in order; returns the JSON-able result."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown perf section(s) {sorted(unknown)}; sections: {', '.join(SECTIONS)}")
    prof = get_profile(profile) if isinstance(profile, str) else profile
    prof = prof.replace(**(overrides or {}))
    result: dict[str, Any] = {"machine": machine_state(), "profile": prof.name, "dataset": f"{dataset}-synthetic",
                              "synthetic": True, "overrides": overrides or {}}
    pd = None
    if {"throughput", "flops", "teacher_cache"} & set(sections):
        log(f"[perf] rendering the synthetic {dataset} twin ({prof.image_size} px, scale {prof.data_scale})")
        pd = perf_data(prof, dataset)
    started = time.perf_counter()
    if "throughput" in sections or "flops" in sections:
        log("[perf] throughput: harness vs bare loop")
        result["throughput"] = measure_throughput(pd, epochs=epochs, repeats=repeats, augment=augment)
    if "flops" in sections:
        log("[perf] flops: student step vs matmul")
        result["flops"] = measure_flops(pd, result["throughput"], matmul_n)
    if "decode" in sections:
        log("[perf] decode cache vs decoding files")
        result["decode"] = measure_decode_cache(n_files=decode_files, file_size=decode_file_size,
                                                image_size=prof.image_size, repeats=repeats,
                                                batch_size=prof.batch_size)
    if "teacher_cache" in sections:
        log("[perf] teacher-output cache")
        result["teacher_cache"] = measure_teacher_cache(pd, epochs=epochs, repeats=repeats)
    if "threads" in sections:
        log("[perf] OpenMP thread settings")
        result["threads"] = measure_threads(image_size=prof.image_size, batch=prof.batch_size)
    if "precision" in sections:
        log(f"[perf] precision: fp32 / bf16, with and without channels-last ({prof.name} profile)")
        result["precision"] = measure_precision(prof, dataset=dataset, epochs=epochs)
    result["wall_s"] = time.perf_counter() - started
    result["machine_after"] = machine_state()
    return result


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of the headline figures."""
    rows: list[tuple[str, str, str]] = []
    tp = result.get("throughput")
    if tp:
        aug = "augmentation on in both" if tp["augment"] else "no augmentation in either"
        for method, m in tp["methods"].items():
            loads = f"{min(m['load_1m']):.1f}-{max(m['load_1m']):.1f}"
            rows.append((f"{method}: harness / bare loop images/s ({aug}), median of pair ratios",
                         f"{m['harness_images_per_s']:.1f} / {m['bare_images_per_s']:.1f} -> {m['ratio']:.3f}",
                         loads))
            rows.append((f"{method}: bare / harness median full-batch step time",
                         f"{1e3 * m['bare_median_step_s']:.0f} / {1e3 * m['harness_median_step_s']:.0f} ms = "
                         f"{m['step_ratio']:.3f}", loads))
    fl = result.get("flops")
    if fl:
        for method, m in fl["methods"].items():
            rows.append((f"{method}: achieved GFLOP/s (harness) vs {fl['matmul_n']}^2 matmul",
                         f"{m['harness']['gflops']:.1f} vs {fl['matmul_gflops']:.1f} "
                         f"({100 * m['harness']['fraction_of_matmul']:.0f}%)",
                         f"{min(fl['load_1m']):.1f}-{max(fl['load_1m']):.1f}"))
    dc = result.get("decode")
    if dc:
        rows.append((f"epoch data access, {dc['files']} PNG {dc['file_size']} px -> {dc['image_size']} px: "
                     "cache / decode s",
                     f"{dc['cached_epoch_s']:.3f} / {dc['decode_epoch_s']:.3f} ({dc['speedup']:.0f}x faster)",
                     f"{min(dc['load_1m']):.1f}-{max(dc['load_1m']):.1f}"))
        rows.append(("epoch of batches from the in-memory uint8 store (s)", f"{dc['store_batches_epoch_s']:.3f}",
                     ""))
    tc = result.get("teacher_cache")
    if tc:
        rows.append((f"{tc['method']} train_s, teacher cache off / on",
                     f"{tc['train_s_off']:.1f} / {tc['train_s_on']:.1f} s (saves {100 * tc['saving']:.0f}%)",
                     f"{min(tc['load_1m']):.1f}-{max(tc['load_1m']):.1f}"))
        rows.append((f"  same, extrapolated to the profile's {tc['profile_epochs']} epochs (cache built once in "
                     f"{tc['cache_build_s']:.2f} s)", f"saves {100 * tc['projected_saving_at_profile_epochs']:.0f}%",
                     ""))
    th = result.get("threads")
    if th:
        for name, s in th["settings"].items():
            loads = [r["load_1m"] for r in s["runs"]]
            env = ",".join(f"{k}={v}" for k, v in s["env"].items()) or "OpenMP defaults"
            rows.append((f"bare step images/s, {name} ({env}, {s['threads']} threads)", f"{s['images_per_s']:.1f}",
                         f"{min(loads):.1f}-{max(loads):.1f}"))
    pr = result.get("precision")
    if pr:
        for method, table in pr["methods"].items():
            for variant, row in table.items():
                applied = "" if row["effective_precision"] == row["precision"] else " (bf16 not applied: no GPU)"
                rows.append((f"{method}: training images/s, {variant}{applied}, {row['backbone']} "
                             f"{row['image_size']} px, batch {row['batch_size']}, {row['device']}",
                             f"{row['images_per_s']:.1f} ({row['speedup']:.2f}x fp32)" if row["speedup"] else
                             f"{row['images_per_s']:.1f}",
                             f"{min(pr['load_1m']):.1f}-{max(pr['load_1m']):.1f}"))
    width = max((len(r[0]) for r in rows), default=10)
    vwidth = max((len(r[1]) for r in rows), default=10)
    m = result.get("machine", {})
    lines = [f"kdbench perf, profile {result.get('profile')}, SYNTHETIC {result.get('dataset')}; "
             f"{m.get('cpus')} CPUs, {m.get('torch_threads')} torch threads, OMP_WAIT_POLICY "
             f"{m.get('omp_wait_policy')}, torch {m.get('torch')}",
             f"{'measurement'.ljust(width)}  {'value'.ljust(vwidth)}  load (1 min)",
             f"{'-' * width}  {'-' * vwidth}  ------------"]
    lines += [f"{a.ljust(width)}  {b.ljust(vwidth)}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the full result as JSON to this file")
    p.add_argument("--only", help=f"comma list of sections ({', '.join(SECTIONS)}); "
                                  f"default: {', '.join(DEFAULT_SECTIONS)}")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--dataset", default="ih_polyp", help="synthetic twin to train on (default ih_polyp)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per timed run (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats per comparison (default 3)")
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train without augmentation in both the harness and the bare loop")
    p.add_argument("--decode-files", type=int, default=1500)
    p.add_argument("--decode-file-size", type=int, default=64)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--data-scale", type=float, help="fraction of the paper's split sizes to render (default: the "
                                                    "profile's; e.g. 0.2 for a quicker paper-profile measurement)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",")] if args.only else list(DEFAULT_SECTIONS)
    overrides = {"data_scale": args.data_scale} if args.data_scale is not None else None
    result = run_all(sections, args.profile, args.dataset, args.epochs, args.repeats, args.augment,
                     args.decode_files, args.decode_file_size, args.matmul_n, overrides=overrides)
    print(format_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
