"""SAMD (reconstruction): match the student's class-activation attention to the teacher's."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from datasets.regimes import WITH_TWINS

from ._dense import class_activation_map
from .add import cosine_distance
from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import register


def semantic_attention(out: Outputs, labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, h, w)`` ground-truth-class CAM of ``out`` (ReLU, min-max normalised to [0, 1],
    ``methods._dense.class_activation_map``) resized (bilinear) to ``size``."""
    if out.classifier is None:
        raise ValueError("samd needs Outputs.classifier (the linear head) to compute class-activation maps")
    cam = class_activation_map(out.features[-1], out.classifier.weight, labels)
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return cam


@register("samd")
class SAMD(Distiller):
    """SAMD, as reconstructed here -- NOT a reimplementation of a published method.

    The paper behind "SAMD" could not be identified. The PaGKD paper (AAAI 2026) lists it
    among the paired cross-modal baselines with a one-line description (semantic attention
    distillation); this class is a reconstruction from that line alone and carries no
    claim of fidelity to any paper: its numbers must not be cited as "SAMD".

    What it does: for each row, the student's class-activation attention on the WLI image
    and the frozen teacher's on the NBI twin, both for the ground-truth class, are
    computed as CAMs of the last feature map (ReLU, min-max normalised per image,
    ``methods._dense.class_activation_map``), the teacher's resized (bilinear) to the
    student's grid, and matched with 1 - cos over the flattened maps (term ``samd``,
    weight 1), plus CE. The gradient reaches the student's last map and head (the CAM is
    differentiable); the teacher's map is a fixed target.

    Regimes: ``paired`` and ``all``. The term compares the spatial attention of two images
    of the same lesion, so on ``all`` it is restricted to true-twin rows (``batch.twin``);
    unpaired rows (class-matched pseudo-pairs) contribute CE only unless
    ``pseudo_pairs=True``.
    """

    summary: ClassVar[str] = "SAMD (reconstruction, no fidelity claim): match WLI/NBI ground-truth-class CAMs"
    paper: ClassVar[str] = (
        "reconstruction from the one-line description of 'SAMD' in the PaGKD paper (AAAI 2026); the original "
        "paper was not identified; no claim of fidelity"
    )
    regimes: ClassVar[frozenset[str]] = WITH_TWINS
    main_regimes: ClassVar[frozenset[str]] = WITH_TWINS
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "samd": 1.0}
    deviations: ClassVar[str] = (
        "Reconstruction from a one-line description in the PaGKD paper; the original SAMD paper was not "
        "identified and nothing here claims fidelity to it. Loss form (1 - cos of min-max normalised "
        "ground-truth-class CAMs on the student's grid), weight 1 and twin-only use on 'all' are choices of "
        "this suite."
    )
    teacher_augmented: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"pseudo_pairs": False}

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("samd needs a teacher (an NBI network); none was given")

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        out = {"ce": F.cross_entropy(s.logits, batch.y)}
        rows = torch.ones_like(batch.twin, dtype=torch.bool) if self.opts["pseudo_pairs"] else batch.twin.bool()
        if bool(rows.any()):
            size = tuple(s.features[-1].shape[-2:])
            a_s = semantic_attention(s, batch.y, size)[rows]
            with torch.no_grad():  # the teacher's map is a fixed target
                a_t = semantic_attention(t.detach(), batch.y, size)[rows]
            out["samd"] = cosine_distance(a_s, a_t).mean()
        return out
