"""PKT: probabilistic knowledge transfer (cosine-kernel conditional probabilities)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, Outputs
from .registry import register


def cosine_conditional_probabilities(x: Tensor, eps: float) -> Tensor:
    """Row-normalised cosine kernel: ``P[i, j] = K(x_i, x_j) / sum_k K(x_i, x_k)`` with
    ``K(a, b) = (cos(a, b) + 1) / 2``, the diagonal included.

    Rows are scaled by ``1 / (||x_i|| + eps)`` and a zero row stays zero, as in the
    authors' code, so an all-zero embedding gives a uniform kernel of 1/2 rather than NaN.
    """
    norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
    unit = torch.nan_to_num(x / (norm + eps), nan=0.0)
    kernel = (unit @ unit.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """``mean_{i,j} p_ij * log((p_ij + eps) / (q_ij + eps))`` with ``p`` the teacher's and
    ``q`` the student's conditional probabilities (:func:`cosine_conditional_probabilities`).

    The mean runs over all ``B^2`` entries (not a sum over ``j``), exactly as the authors'
    ``cosine_similarity_loss``; the large default weight (30000) compensates.
    """
    with torch.no_grad():
        p_teacher = cosine_conditional_probabilities(teacher.detach().flatten(1), eps)
    q_student = cosine_conditional_probabilities(student.flatten(1), eps)
    return (p_teacher * torch.log((p_teacher + eps) / (q_student + eps))).mean()


@register("pkt")
class PKT(Distiller):
    """Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge
    Transfer", ECCV 2018, Sec. 3: the batch's pairwise cosine similarities, mapped to
    [0, 1] and normalised per row into conditional probabilities, are matched with
    KL(teacher || student) on the pooled penultimate embeddings.

    Defaults follow RepDistiller / mdistiller: loss weight 30000, CE weight 1,
    ``eps = 1e-7`` as in the authors' ``cosine_similarity_loss``. The embeddings of the
    two networks may differ in width; only the B x B similarity matrices are compared.

    Unpaired data: row ``i`` of the teacher's similarity matrix comes from the
    class-matched NBI pseudo-pair of student row ``i``, so the student copies how the
    teacher relates images of these classes, not how it relates these very lesions.
    Between-class structure is preserved; within-class structure is that of other lesions.
    """

    summary: ClassVar[str] = "PKT: match the teacher's cosine-kernel conditional probabilities (KL)"
    paper: ClassVar[str] = (
        "Passalis & Tefas, ECCV 2018, Sec. 3 (cosine-kernel conditional probabilities, KL divergence)"
    )
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "pkt": 30000.0}
    deviations: ClassVar[str] = (
        "On unpaired rows the teacher's similarity matrix is computed on the class-matched NBI "
        "pseudo-pairs (re-drawn each epoch), so the student matches class-level relations while "
        "within-class relations come from other lesions; on paired rows it is the true twins'."
    )
    teacher_augmented: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {"eps": 1e-7}

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        return {
            "ce": F.cross_entropy(s.logits, batch.y),
            "pkt": pkt_loss(s.embedding, t.embedding, float(self.opts["eps"])),
        }
