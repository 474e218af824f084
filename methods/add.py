"""ADD: alignment-free dense distillation from an NBI teacher into a WLI student."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import WITH_TWINS

from ._dense import (
    class_activation_map,
    dual_threshold_labels,
    masked_attention,
    pixel_adaptive_refinement,
    relation_mask,
)
from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import register


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-row 1 - cos between flattened rows (``CosineEmbeddingLoss`` with target 1)."""
    return 1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-8)


def warmup_epoch(fraction: float, num_epochs: int) -> int:
    """First (zero-based) epoch of distillation: ``round(fraction * num_epochs)``."""
    return round(float(fraction) * int(num_epochs))


def dense_pseudo_labels(
    out: Outputs, image: Tensor, labels: Tensor, *, low: float, high: float, num_iter: int, dilations: tuple[int, ...]
) -> Tensor:
    """``(B, h*w)`` background/lesion/ambiguous labels of ``out``'s last map for the
    ground-truth class: CAM -> pixel-adaptive refinement on ``image`` -> dual thresholds.
    Label maps carry no gradient (they only select which pixel pairs may attend)."""
    if out.classifier is None:
        raise ValueError("dense distillation needs Outputs.classifier (the linear head) to compute CAMs")
    with torch.no_grad():
        cam = class_activation_map(out.features[-1].detach().float(), out.classifier.weight.detach().float(), labels)
        cam = pixel_adaptive_refinement(image.detach().float(), cam, num_iter=num_iter, dilations=dilations)
        return dual_threshold_labels(cam, low=low, high=high).flatten(1)


def tokens(feature_map: Tensor) -> Tensor:
    """``(B, d, h, w)`` -> ``(B, h*w, d)``."""
    return feature_map.flatten(2).transpose(1, 2)


@register("add")
class ADD(Distiller):
    """Hu et al., "Holistic White-Light Polyp Classification via Alignment-Free Dense
    Distillation of Auxiliary Optical Chromoendoscopy", MICCAI 2025 (arXiv 2505.19319);
    official code Huster-Hq/ADD ``train.py``.

    Per image pair (WLI student image, NBI teacher image of the same row):

    1. Embeddings: 1x1 convs (no bias) map the student's and the frozen teacher's last
       feature maps to 128-d, F^W and F^N (the student's lives inside its ResNet and the
       teacher's is a separate trainable ``embed_layer`` in the code; both are owned here).
    2. Pseudo-labels: the ground-truth-class CAM of each network (Grad-CAM in the code,
       which equals the CAM up to scale for a GAP + linear head), refined by PAR on the
       network's own input image (10 iterations, dilations 1, 2, 4, 8) and split by the
       thresholds 0.3 / 0.7 into background, lesion and ambiguous (``methods._dense``).
    3. Semantic relation mask (SRG, "Eq. 2.2" in the code's comments): a pair (NBI pixel i, WLI pixel j) may attend
       iff both carry the same confident label; pairs with an ambiguous pixel are masked
       (the code's confuse value 0).
    4. ADD cross-attention ("Eq. 2.1" in the code's comments): NBI pixels query WLI pixels,
       Rec^N = softmax(F^N F^W^T + M) F^W (no 1/sqrt(d) scaling in the code), and the
       loss is 1 - cos(vec Rec^N, vec F^N) over the whole flattened map; bidirectional
       ("Bi-A"): also WLI pixels querying NBI pixels. Targets are not detached, as in the
       code, so both embeddings receive gradient from both directions.
    5. Logit alignment: 1 - cos(z_teacher, z_student) with the teacher's logits detached.

    L = CE + logit + [epoch >= warm-up] (add_nbi + add_wli), all weights 1. The code runs
    the dense terms for epochs 16..199 of 199 (``epoch > 15``); here they start at
    ``round(warmup_fraction * num_epochs)`` with ``warmup_fraction = 15/199``.

    Regimes: ``paired`` (true twins, as the paper) and ``all``. On ``all`` the unpaired
    rows carry class-matched NBI pseudo-pairs; by default (``pseudo_pairs=True``) every
    term uses them too -- ADD is alignment-free, and on pseudo-pairs it is exactly PaGKD's
    image-level variant -- and ``pseudo_pairs=False`` restricts the logit and dense terms
    to true-twin rows (``batch.twin``). It does not run on ``unpaired`` alone.
    """

    summary: ClassVar[str] = "ADD: CAM-masked bidirectional NBI<->WLI pixel cross-attention + logit cosine"
    paper: ClassVar[str] = (
        "Hu et al., MICCAI 2025 (arXiv 2505.19319), ADD cross-attention with 1 - cos reconstruction, "
        "bidirectional, and the semantic relation mask (Eq. 2.1 / 2.2 as the code's comments cite them); "
        "code Huster-Hq/ADD"
    )
    regimes: ClassVar[frozenset[str]] = WITH_TWINS
    main_regimes: ClassVar[frozenset[str]] = WITH_TWINS
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "logit": 1.0, "add_nbi": 1.0, "add_wli": 1.0}
    deviations: ClassVar[str] = (
        "CAM instead of Grad-CAM (identical after min-max normalisation for a GAP + linear head). PAR runs at the "
        "CAM's grid on the resized image and refines the CAM before thresholding (the code refines the two "
        "thresholded softmax maps on the half-resolution image). Rows of the attention that the relation mask "
        "blocks entirely reconstruct to zero instead of the code's uniform average (-1e9 fill). Both 128-d "
        "embeddings are trained by the student's optimiser (the code uses a second Adam with the same settings "
        "for the teacher's). The warm-up (code: epoch 16 of 199) is scaled to the run's epochs. On the 'all' "
        "regime the unpaired rows use their class-matched pseudo-pair (option pseudo_pairs)."
    )
    teacher_augmented: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {
        "embed_dim": 128,
        "low": 0.3,
        "high": 0.7,
        "par_iterations": 10,
        "par_dilations": (1, 2, 4, 8),
        "attention_scale": 1.0,
        "warmup_fraction": 15 / 199,
        "pseudo_pairs": True,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("ADD needs a teacher (an NBI network); none was given")
        dim = int(self.opts["embed_dim"])
        self.student_embed = nn.Conv2d(ctx.student.feature_channels[-1], dim, 1, bias=False)
        self.teacher_embed = nn.Conv2d(ctx.teacher.feature_channels[-1], dim, 1, bias=False)

    def _rows(self, batch: Batch) -> Tensor:
        if self.opts["pseudo_pairs"]:
            return torch.ones_like(batch.twin, dtype=torch.bool)
        return batch.twin.bool()

    def dense_losses(self, s: Outputs, t: Outputs, batch: Batch, rows: Tensor) -> dict[str, Tensor]:
        """The two ADD reconstruction terms on the selected rows."""
        assert batch.teacher_x is not None
        kw = {
            "low": float(self.opts["low"]),
            "high": float(self.opts["high"]),
            "num_iter": int(self.opts["par_iterations"]),
            "dilations": tuple(self.opts["par_dilations"]),
        }
        y = batch.y[rows]
        s_sel = Outputs(s.logits[rows], s.embedding[rows], [s.features[-1][rows]], s.classifier)
        t_sel = Outputs(t.logits[rows], t.embedding[rows], [t.features[-1][rows]], t.classifier)
        labels_w = dense_pseudo_labels(s_sel, batch.student_pixels[rows], y, **kw)
        labels_n = dense_pseudo_labels(t_sel, batch.teacher_pixels[rows], y, **kw)
        f_w = tokens(self.student_embed(s.features[-1][rows]))  # (b, Lw, 128)
        f_n = tokens(self.teacher_embed(t.features[-1][rows].detach()))  # (b, Ln, 128)
        scale = float(self.opts["attention_scale"])
        rec_n = masked_attention(f_n, f_w, f_w, relation_mask(labels_n, labels_w), scale=scale)
        rec_w = masked_attention(f_w, f_n, f_n, relation_mask(labels_w, labels_n), scale=scale)
        return {"add_nbi": cosine_distance(rec_n, f_n).mean(), "add_wli": cosine_distance(rec_w, f_w).mean()}

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        out = {"ce": F.cross_entropy(s.logits, batch.y)}
        rows = self._rows(batch)
        if not bool(rows.any()):
            return out
        out["logit"] = cosine_distance(s.logits[rows], t.logits[rows].detach()).mean()
        if batch.epoch >= warmup_epoch(self.opts["warmup_fraction"], batch.num_epochs):
            out.update(self.dense_losses(s, t, batch, rows))
        return out
