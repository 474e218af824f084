"""Speed of the harness on one machine, measured in one run and reported as ratios.

    python -m benchmark.perf --out perf.json            # every section, cpu profile
    python -m benchmark.perf --only throughput,flops    # some sections
    python -m benchmark.perf --profile paper --only precision --data-scale 0.2   # on a GPU

Sections (each a module here with one ``measure_*`` function, usable from tests and notebooks):

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

Beside the sections: :mod:`.data` (the rendered twin and its training pools),
:mod:`.run_setup` (pools, distiller context and accelerator, built as the runner builds
them), :mod:`.loops` (the harness run and the bare loop), :mod:`.probe` (a probe function
run in a fresh process), :mod:`.cli` (``run_all`` and the command line) and :mod:`.table`.
"""

from __future__ import annotations

from .cli import DEFAULT_SECTIONS, SECTIONS, main, run_all
from .data import PerfData, expected_images, perf_data, render_twin
from .decode import measure_decode_cache, write_png_files
from .flops import matmul_gflops, measure_flops
from .loops import bare_augment, bare_run, harness_run
from .machine import machine_state
from .precision import PRECISION_VARIANTS, measure_precision, precision_probe
from .table import format_table
from .teacher_cache import cache_build_s, measure_teacher_cache
from .threads import THREAD_SETTINGS, measure_threads, thread_probe
from .throughput import measure_throughput
from .timing import StepClock, Timing

__all__ = [
    "DEFAULT_SECTIONS", "PRECISION_VARIANTS", "SECTIONS", "THREAD_SETTINGS", "PerfData", "StepClock", "Timing",
    "bare_augment", "bare_run", "cache_build_s", "expected_images", "format_table", "harness_run", "machine_state",
    "main", "matmul_gflops", "measure_decode_cache", "measure_flops", "measure_precision", "measure_teacher_cache",
    "measure_threads", "measure_throughput", "perf_data", "precision_probe", "render_twin", "run_all",
    "thread_probe", "write_png_files",
]
