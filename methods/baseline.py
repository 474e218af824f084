"""Student-only baseline: the WLI network trained with cross-entropy alone."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, Outputs
from .registry import register


@register("baseline")
class Baseline(Distiller):
    """Cross-entropy on the student's own images; no teacher, no distillation.

    In every regime it trains on the student-side images of that regime's data, so it
    is the reference each method is compared with in its (dataset, regime) cell.
    """

    summary: ClassVar[str] = "student alone, cross-entropy on WLI images (the reference)"
    paper: ClassVar[str] = "supervised cross-entropy; no distillation"
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0}
    needs_teacher: ClassVar[bool] = False

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        return {"ce": F.cross_entropy(s.logits, batch.y)}
