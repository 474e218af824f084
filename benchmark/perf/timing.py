"""What one timed run measured: images, seconds, steps and the time of each full-size step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .machine import median


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
        return median(self.step_s)

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
