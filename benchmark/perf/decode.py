"""Section ``decode``: one epoch's data access through the decode cache against decoding
every file, and an epoch of batches from the in-memory uint8 store."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets.base import LoadOptions
from datasets.images import load_images

from ..training.inputs import ImageStore
from .machine import load_1m, median


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
        loads = [load_1m()]
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
            loads.append(load_1m())
        same = bool(np.array_equal(np.asarray(first), rows))
        store_s = median([_store_epoch_s(rows, batch_size, True) for _ in range(repeats)])
    c, d = median(cached_s), median(decode_s)
    return {
        "files": n_files, "file_size": file_size, "image_size": image_size, "images": int(rows.shape[0]),
        "cache_build_s": build_s, "cached_epoch_s": c, "decode_epoch_s": d, "speedup": d / c if c > 0 else math.inf,
        "cached_runs_s": cached_s, "decode_runs_s": decode_s, "cache_hit_is_mmap": hit, "identical_pixels": same,
        "store_batches_epoch_s": store_s, "load_1m": loads,
    }
