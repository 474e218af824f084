"""Hinton knowledge distillation (soft targets at temperature T)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, Outputs
from .registry import register


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), summed over classes, mean over rows.

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015),
    Eq. (2) with the T^2 gradient-scale factor of their Sec. 2.
    """
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
    return kl * temperature**2


@register("kd")
class HintonKD(Distiller):
    """Hinton et al., arXiv:1503.02531 (NIPS 2014 DL workshop): L = 0.1 CE + 0.9 T^2 KL.

    Defaults follow mdistiller / RepDistiller: T = 4, CE weight 0.1, KD weight 0.9.

    Unpaired data: the teacher's soft targets come from the class-matched pseudo-pair in
    the same batch row (a same-class NBI image re-drawn every epoch), so the student
    matches the teacher's distribution for its class rather than for its own lesion.
    On paired rows the target is the true NBI twin's.
    """

    summary: ClassVar[str] = "Hinton KD: match the teacher's temperature-softened logits"
    paper: ClassVar[str] = "Hinton, Vinyals & Dean 2015, arXiv:1503.02531, Eq. 2 (T^2-scaled KL)"
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 0.1, "kd": 0.9}
    deviations: ClassVar[str] = (
        "On unpaired rows the soft target is the teacher's output on a same-class NBI "
        "pseudo-pair (re-drawn each epoch), not on the student's own lesion."
    )
    teacher_augmented: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {"temperature": 4.0}

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        return {
            "ce": F.cross_entropy(s.logits, batch.y),
            "kd": kd_loss(s.logits, t.logits, float(self.opts["temperature"])),
        }
