"""Speed of the harness on the ``cpu`` profile (pytest-benchmark; kept out of the default run).

    .venv/bin/python -m pytest tests/perf -o addopts="" -m perf -p no:cacheprovider

(``-o addopts=""`` clears the default ``--benchmark-skip -m "not perf"``.)

Data: the SYNTHETIC ``ih_polyp`` twin at the ``cpu`` profile's image size and data scale,
``all`` regime. Cases:

- harness ``fit`` vs the bare PyTorch loop of :mod:`benchmark.perf` (same model, batch,
  data and augmentation), alternating, three pairs per method; the target is a median
  ratio of at least 0.9 of the bare loop's images per second;
- a ``kd`` run with the teacher-output cache off and on;
- one epoch's data access for 1,500 PNG files (64 px, decoded to 32 px): the decode
  cache's memory map against decoding every file; and one epoch of batches from the
  in-memory uint8 store;
- the float32 2048 x 2048 matrix multiply (the machine's practical ceiling).

The machine's 1-minute load average is stored in each case's ``extra_info``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import perf
from benchmark.training.inputs import ImageStore
from datasets.base import LoadOptions
from datasets.images import load_images

pytestmark = pytest.mark.perf

TARGET_RATIO = 0.9


@pytest.fixture(scope="module")
def cpu_data() -> perf.PerfData:
    return perf.perf_data("cpu", "ih_polyp")


@pytest.fixture(scope="module")
def png_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path]:
    root = tmp_path_factory.mktemp("perf-png")
    paths = perf.write_png_files(root / "png", 1500, file_size=64)
    load_images(paths, LoadOptions(image_size=32, cache_dir=root / "cache"))  # build the cache once
    return paths, root / "cache"


@pytest.mark.parametrize("method", ["baseline", "kd"])
def test_harness_keeps_up_with_the_bare_loop(benchmark, cpu_data: perf.PerfData, method: str) -> None:
    benchmark.group = "harness vs bare loop (cpu profile, 1 epoch each, 3 alternating pairs)"
    result = benchmark.pedantic(perf.measure_throughput, args=(cpu_data, [method]), kwargs={"repeats": 3},
                                rounds=1, iterations=1)
    m = result["methods"][method]
    benchmark.extra_info.update({
        "ratio": round(m["ratio"], 3), "harness_images_per_s": round(m["harness_images_per_s"], 1),
        "bare_images_per_s": round(m["bare_images_per_s"], 1), "load_1m": m["load_1m"],
        "augment": result["augment"],
    })
    assert m["images_harness"] == m["images_bare"] == m["images_expected"]
    assert m["ratio"] >= TARGET_RATIO, (
        f"{method}: harness reaches {m['ratio']:.3f} of the bare loop's images/s (per-pair ratios {m['ratios']}, "
        f"load {m['load_1m']})"
    )


@pytest.mark.parametrize("cache", [False, True], ids=["teacher-cache-off", "teacher-cache-on"])
def test_kd_run_with_and_without_teacher_cache(benchmark, cpu_data: perf.PerfData, cache: bool) -> None:
    benchmark.group = "kd run, 1 epoch (train_s incl. computing the cache)"
    profile = cpu_data.profile.replace(teacher_cache=cache)
    timings: list[perf.Timing] = []

    def one() -> None:
        timings.append(perf.harness_run(cpu_data, "kd", 1, profile=profile))

    benchmark.pedantic(one, rounds=3, iterations=1)
    benchmark.extra_info.update({
        "train_s": [round(t.seconds, 2) for t in timings],
        "images_per_s": [round(t.images_per_s, 1) for t in timings], "load_1m": perf.machine_state()["load_1m"],
    })
    assert all(t.images == timings[0].images > 0 for t in timings)


@pytest.mark.parametrize("source", ["mmap-cache", "decode-files"])
def test_epoch_data_access(benchmark, png_files: tuple[list[Path], Path], source: str) -> None:
    paths, cache_dir = png_files
    benchmark.group = "one epoch's data access, 1500 PNG files 64 px -> 32 px"
    options = LoadOptions(image_size=32, cache_dir=cache_dir if source == "mmap-cache" else None)

    def epoch() -> np.ndarray:
        images, _, _ = load_images(paths, options)
        return np.array(images)  # every row read

    images = benchmark.pedantic(epoch, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["load_1m"] = perf.machine_state()["load_1m"]
    assert images.shape == (1500, 32, 32, 3)


def test_epoch_of_batches_from_the_uint8_store(benchmark, cpu_data: perf.PerfData) -> None:
    benchmark.group = "one epoch of augmented batches from the in-memory store"
    store: ImageStore = cpu_data.store
    generator = torch.Generator().manual_seed(0)
    pool = cpu_data.data.student_pool
    batch = cpu_data.profile.batch_size

    def epoch() -> int:
        n = 0
        for start in range(0, len(pool), batch):
            n += store.batch(pool[start : start + batch], "none", True, generator).shape[0]
        return n

    assert benchmark.pedantic(epoch, rounds=10, iterations=1, warmup_rounds=1) == len(pool)


def test_matmul_ceiling(benchmark) -> None:
    benchmark.group = "float32 2048^2 matmul (practical ceiling)"
    gflops = benchmark.pedantic(perf.matmul_gflops, kwargs={"n": 2048, "repeats": 5}, rounds=1, iterations=1)
    benchmark.extra_info.update({"gflops": round(gflops, 1), "load_1m": perf.machine_state()["load_1m"]})
    assert gflops > 0
