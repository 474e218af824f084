"""``python -m benchmark.perf``: the requested sections in one run, a table and a JSON file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..settings.profiles import Profile, get_profile
from .data import perf_data
from .decode import measure_decode_cache
from .flops import measure_flops
from .machine import machine_state
from .precision import measure_precision
from .table import format_table
from .teacher_cache import measure_teacher_cache
from .threads import measure_threads
from .throughput import measure_throughput

DESCRIPTION = "Speed of the harness on one machine, measured in one run and reported as ratios."
SECTIONS = ("throughput", "flops", "decode", "teacher_cache", "threads", "precision")
# what runs without --only: the CPU-side figures; ``precision`` is asked for by name (on a GPU)
DEFAULT_SECTIONS = SECTIONS[:-1]


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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.perf", description=DESCRIPTION)
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

