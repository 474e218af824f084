"""Section ``throughput``: the harness's training images/s against the bare loop's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .data import PerfData, expected_images
from .loops import bare_run, harness_run
from .machine import load_1m, median
from .timing import Timing


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
        loads = [load_1m()]
        for r in range(repeats):
            # alternate which goes first so a load change hits both sides alike
            order = [("h", harness_run), ("b", bare_run)] if r % 2 == 0 else [("b", bare_run), ("h", harness_run)]
            for tag, fn in order:
                (harness if tag == "h" else bare).append(fn(pd, method, epochs))
            loads.append(load_1m())
        ratios = [h.images_per_s / b.images_per_s for h, b in zip(harness, bare, strict=True)]
        h_step = median([x for t in harness for x in t.step_s])
        b_step = median([x for t in bare for x in t.step_s])
        out["methods"][method] = {
            "harness_images_per_s": median([t.images_per_s for t in harness]),
            "bare_images_per_s": median([t.images_per_s for t in bare]),
            "ratio": median(ratios),
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
