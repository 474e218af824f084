"""RKD: relational knowledge distillation (distance and angle potentials)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, Outputs
from .registry import register


def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``(B, B)`` Euclidean distances ``||x_i - x_j||``: exactly 0 for equal rows (the diagonal
    included), as in the paper. Squared distances are clamped at ``eps`` before the square root
    only so the gradient stays finite; the clamped value of an equal pair is masked back to 0
    (without the mask an equal pair would count as a positive distance of ``sqrt(eps)``)."""
    diff = x.unsqueeze(0) - x.unsqueeze(1)
    squared = diff.pow(2).sum(dim=2)
    return squared.clamp(min=eps).sqrt() * (squared > 0).to(x.dtype)


def mean_normalised_distances(x: Tensor) -> Tensor:
    """Pairwise distances divided by their mean ``mu`` over the ``B (B - 1)`` pairs ``i != j``,
    equal rows' zeros included (Park et al., Sec. 3.2, the distance-wise potential
    ``psi_D(t_i, t_j) = ||t_i - t_j|| / mu``). A single row, or rows all equal (``mu = 0``),
    has nothing to relate: the distances, all 0, are returned as they are."""
    dist = pairwise_distances(x)
    rows = x.shape[0]
    if rows < 2:
        return dist
    mu = dist.sum() / (rows * (rows - 1))
    if mu.item() == 0.0:
        return dist
    return dist / mu


def triplet_angles(x: Tensor) -> Tensor:
    """``(B, B, B)`` cosines ``<e_ij, e_ik>`` with ``e_ij = (x_j - x_i) / ||x_j - x_i||``
    (Park et al., the angle-wise potential); degenerate triplets (``j == i`` or ``k == i``) are 0."""
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # diff[i, j] = x_j - x_i
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2))


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Smooth-L1 between mean-normalised distance matrices, mean over all ``B^2`` entries
    (Park et al., RKD-D); the teacher side carries no gradient."""
    with torch.no_grad():
        target = mean_normalised_distances(teacher.detach().flatten(1))
    return F.smooth_l1_loss(mean_normalised_distances(student.flatten(1)), target)


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Smooth-L1 between triplet-angle tensors, mean over all ``B^3`` entries
    (Park et al., RKD-A); the teacher side carries no gradient."""
    with torch.no_grad():
        target = triplet_angles(teacher.detach().flatten(1))
    return F.smooth_l1_loss(triplet_angles(student.flatten(1)), target)


@register("rkd")
class RKD(Distiller):
    """Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019: the student's
    pooled embeddings reproduce the teacher's mean-normalised pairwise distances
    (distance-wise RKD-D) and triplet angles (angle-wise RKD-A), Sec. 3.2, both with the Huber
    (smooth-L1, delta = 1) loss.

    Defaults follow the paper and RepDistiller / mdistiller: w_d = 25, w_a = 50, CE 1.
    Reductions match the authors' code: a mean over every entry of the ``B x B`` and
    ``B x B x B`` tensors, degenerate (diagonal) entries included. Memory grows as
    ``B^2 D`` for the angle term.

    Unpaired data: row ``i`` of the teacher batch is the class-matched NBI pseudo-pair of
    student row ``i``, so distances and angles between rows of different classes carry the
    teacher's class geometry, while within-class relations are those of other lesions of
    the same class (noise the student is asked to match).
    """

    summary: ClassVar[str] = "RKD: match the teacher's pairwise distances and triplet angles"
    paper: ClassVar[str] = "Park, Kim, Lu & Cho, CVPR 2019, Sec. 3.2 (RKD-D and RKD-A losses, Huber/smooth-L1)"
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "distance": 25.0, "angle": 50.0}
    deviations: ClassVar[str] = (
        "On unpaired rows the teacher's relations are computed on the class-matched NBI "
        "pseudo-pairs (re-drawn each epoch): between-class distances and angles carry the "
        "teacher's class geometry, within-class ones come from other lesions of the same class."
    )
    teacher_augmented: ClassVar[bool] = False

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        return {
            "ce": F.cross_entropy(s.logits, batch.y),
            "distance": rkd_distance_loss(s.embedding, t.embedding),
            "angle": rkd_angle_loss(s.embedding, t.embedding),
        }
