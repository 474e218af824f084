"""PaGKD: pairing-free group-level knowledge distillation (NBI teacher -> WLI student).

Hu, Wang, Guo, Li, Wang, "Pairing-free Group-level Knowledge Distillation for Robust
Gastrointestinal Lesion Classification in White-Light Endoscopy", AAAI 2026
(arXiv:2601.09209); code: github.com/Huster-Hq/PaGKD.

Groups
------
The ``group`` sampler gives class-balanced batches: every class in every batch with the
same number of rows, and row ``i`` of the teacher side has the class of row ``i`` of the
student side. So the WLI group of class c is G_c^WLI = {student rows with y == c} and the
NBI group is G_c^NBI = {teacher rows with y == c}. Each group's last feature maps
F_c^mod in R^{N_c x d x h x w} are projected to a common width d (``width``, 128 as in the
released code: a 1x1 convolution per network, owned by the distiller) and flattened into
one token sequence of length L_c = N_c * h * w. Losses are computed over the classes
present in the batch (any number of classes, a missing class simply forms no group).

GKD-Pro (group-level prototype distillation)
--------------------------------------------
* LR-QFormer: N_q = 12 learnable lesion queries Q in R^{N_q x d}, shared across classes
  and modalities; ``blocks`` (T) standard transformer decoder blocks (Vaswani et al. 2017):
  query self-attention, cross-attention from the queries to the group's tokens plus a
  positional embedding E_pos, feed-forward, each with a residual and a post-LayerNorm
  (the BERT-style layout of BLIP-2's Q-Former). E_pos = fixed 2-D sine-cosine of the
  spatial position + 1-D sine-cosine of the image's index within the group (so the
  attention knows which tokens belong to one image, the role of the released code's
  per-image "identity" code). Output: the group's prototype set P_c^mod in R^{N_q x d}.
  T defaults to 1: the released code has exactly one attention layer and the available
  summary of the paper gives no value.
* Set similarity: s(A, B) = (1/N_q) sum_t cos(A_t, B_t) (same-index queries).
* Group contrastive loss (symmetric InfoNCE): for each WLI anchor P_c^W the positive is
  P_c^N and the negatives are the prototype sets of every other class in both modalities;
  the same with NBI anchors; L_pro = mean over both modalities and all anchors of
  -log softmax_candidates(s / tau)[positive]. Default tau = 20/128 = 0.15625: the released
  code's similarity is a sum of 128 cosines divided by 20 (range +-6.4) at tau = 1, so
  this tau gives our mean cosine the same logit range.

GKD-Den (group-level dense distillation)
----------------------------------------
* CAMs of the ground-truth class for the WLI group (student head) and the NBI group
  (teacher head), pixel-adaptive refinement (AFA, 10 iterations, dilations 1/2/4/8), dual
  thresholds 0.3/0.7 into background / lesion / ambiguous -- all from
  :mod:`methods._dense` and without gradient (the labels are discrete).
* Relation matrix R_c in {0, -inf}^{L_c x L_c}: 0 where a query and a key token carry the
  same non-ambiguous label, -inf otherwise.
* SRCA: A = softmax(R_c + (F^a W_q)(F^b W_k)^T / sqrt(d/4)) with learned W_q, W_k: d -> d/4;
  the reconstruction of modality a from modality b is A F^b (values are the features
  themselves, no value projection). One SRCA module serves both directions.
* Bidirectional consistency: L_den = L2(F^NBI <- WLI) + L2(F^WLI <- NBI), each the mean
  squared error over the channels, averaged over the query tokens that have at least one
  open key. Tokens whose row the mask blocks entirely (ambiguous pixels, or a label absent
  from the other modality's group) reconstruct nothing and are left out -- never NaN.

Loss and schedule
-----------------
L = L_cls + lambda_pro L_pro + lambda_den L_den, lambda = 1 (the paper's unweighted sum;
change with ``--weight pro=...``). Warm-up: the released code trains 199 epochs and adds
the distillation terms from (1-based) epoch 6, i.e. after 5 cross-entropy-only epochs. The
suite scales this: ``warmup = floor(5/200 * num_epochs + 0.5)`` cross-entropy-only epochs,
at least 1 when ``num_epochs >= 10`` (so the student's CAMs come from a classifier that has
seen the data), 0 for shorter runs (``smoke``); the ``warmup_epochs`` option overrides it.
Only the student is used at test time; the projections, queries, LR-QFormer and SRCA are
training-only modules of the distiller.

Implementation choices the paper leaves open (documented in ``deviations``)
---------------------------------------------------------------------------
* Before SRCA the projected tokens of each modality are standardised per channel over the
  batch's tokens (zero mean, unit variance, no affine). Both projections are trained, so a
  plain L2 loss could be driven to zero by shrinking them; standardised targets keep the
  loss on the scale of the features' structure.
* Heads: 16 (the released code's ``nn.MultiheadAttention(128, 16)``), FFN 4 d, no dropout.

Memory (``paper`` profile: ResNet-50, 448 px -> 14 x 14 last map, batch 24, 3 classes)
------------------------------------------------------------------------------------------
Groups of N_c = 8 images, so L_c = 8 * 196 = 1568 tokens per group and modality, d = 128.
* SRCA logits/probabilities: 1568^2 = 2.46 M entries per group and direction; in fp32
  9.8 MB, with the additive mask (9.8 MB) and the saved probabilities about 30 MB; times
  3 groups x 2 directions ~ 0.18 GB. :func:`methods._dense.masked_attention` uses
  ``scaled_dot_product_attention`` and chunks query rows above 2^27 logits, so even groups
  of 64 images (L_c = 12544, 157 M logits per group) stay within a few GB.
* LR-QFormer: 12 queries x 1568 keys x 16 heads x 6 prototype sets ~ 1.8 M logits
  (7 MB); the tokens themselves 6 x 1568 x 128 floats = 4.8 MB.
* CAM + PAR run on the 14 x 14 grid without gradient: 48 images x 3 x 32 neighbours x 196
  = 0.9 M floats.
* The backbones dominate: ResNet-50 training activations at 448 px are ~4x those at
  224 px, roughly 0.2 GB per image in bf16, ~5 GB for 24 images; the frozen teacher runs
  under ``no_grad``; weights + Adam state ~0.4 GB. In all well under 20 GB, so the
  ``paper`` profile fits one 80 GB GPU with a wide margin; PaGKD's own modules add < 1 GB.

Ablations (each a registered method; ``pagkd-ablations`` runs them all)
-----------------------------------------------------------------------
``pagkd-none`` (both modules off, same group batches), ``pagkd-pro`` (GKD-Pro only),
``pagkd-den`` (GKD-Den only), ``pagkd-avgpool`` (prototype = average of the group's tokens
instead of the LR-QFormer; GKD-Pro only, as in the paper's 83.5 -> 78.3 row),
``pagkd-plainattn`` (cross-attention without the relation mask; GKD-Den only, as in the
paper's 85.0 -> 83.2 row), ``pagkd-unidir`` (only the NBI <- WLI reconstruction, which is
the direction that carries NBI knowledge into the WLI features; both modules),
``pagkd-image`` (image level: every pseudo-pair is its own group; both modules),
``pagkd-image-pro`` and ``pagkd-image-den`` (image level, one module). The set also runs
``pagkd-released`` (the official code's behaviour, :mod:`methods.pagkd_released`), the
variant beside which the paper's method is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL, Regime

from ._dense import (
    AMBIGUOUS,
    class_activation_map,
    dual_threshold_labels,
    masked_attention,
    pixel_adaptive_refinement,
    relation_mask,
)
from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import Ablations, register, register_ablations, register_method_set

PAPER = (
    "Hu et al., Pairing-free Group-level Knowledge Distillation, AAAI 2026 (arXiv:2601.09209): "
    "L = L_cls + L_pro (GKD-Pro: LR-QFormer prototypes, symmetric group contrastive) "
    "+ L_den (GKD-Den: CAM relation matrix, SRCA, bidirectional L2 reconstruction)"
)

# The released code adds distillation after 5 cross-entropy-only epochs out of 200.
_CODE_WARMUP_EPOCHS = 5
_CODE_EPOCHS = 200


def warmup_epochs(num_epochs: int) -> int:
    """Cross-entropy-only epochs before PaGKD's distillation terms switch on.

    The released code runs 199 epochs and distils from 1-based epoch 6 (``epoch > 5``).
    Scaled to the run: ``floor(5/200 * num_epochs + 0.5)``, at least 1 when
    ``num_epochs >= 10``; 200 epochs -> 5, 12 (``cpu``) -> 1, 2 (``smoke``) -> 0.
    """
    scaled = math.floor(_CODE_WARMUP_EPOCHS / _CODE_EPOCHS * num_epochs + 0.5)
    return max(scaled, 1) if num_epochs >= 10 else scaled


# --------------------------------------------------------------------------------------
# Groups ("units"): which batch rows form each group
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Units:
    """Partition of the batch rows into groups, padded to the largest group.

    Attributes:
        rows: ``(U, n)`` batch row of each slot (0 in padded slots).
        valid: ``(U, n)`` True for real slots.
        classes: ``(U,)`` class of each group.
    """

    rows: Tensor
    valid: Tensor
    classes: Tensor

    @property
    def count(self) -> int:
        return int(self.rows.shape[0])

    def pack(self, x: Tensor) -> Tensor:
        """``(B, L, ...)`` per-row tokens -> ``(U, n, L, ...)`` per-group tokens."""
        return x[self.rows]

    def pack_labels(self, labels: Tensor) -> Tensor:
        """``(B, L)`` pixel labels -> ``(U, n * L)``, padded slots AMBIGUOUS (always blocked)."""
        packed = labels[self.rows].masked_fill(~self.valid[..., None], AMBIGUOUS)
        return packed.flatten(1)

    def token_valid(self, tokens_per_image: int) -> Tensor:
        """``(U, n * L)`` True for tokens of real slots."""
        return self.valid.repeat_interleave(tokens_per_image, dim=1)


def group_units(y: Tensor) -> Units:
    """One group per class present in ``y`` (sorted by class), members in row order."""
    classes, unit_of_row, counts = torch.unique(y, sorted=True, return_inverse=True, return_counts=True)
    order = torch.argsort(unit_of_row, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    unit_sorted = unit_of_row[order]
    slot = torch.arange(y.numel(), device=y.device) - starts[unit_sorted]
    n = int(counts.max()) if counts.numel() else 0
    rows = torch.zeros(classes.numel(), n, dtype=torch.long, device=y.device)
    valid = torch.zeros(classes.numel(), n, dtype=torch.bool, device=y.device)
    rows[unit_sorted, slot] = order
    valid[unit_sorted, slot] = True
    return Units(rows=rows, valid=valid, classes=classes)


def image_units(y: Tensor) -> Units:
    """Image level: every row (one WLI image and its same-class NBI partner) is a group."""
    b = y.numel()
    rows = torch.arange(b, device=y.device)[:, None]
    return Units(rows=rows, valid=torch.ones(b, 1, dtype=torch.bool, device=y.device), classes=y.clone())


def make_units(y: Tensor, level: str) -> Units:
    if level == "group":
        return group_units(y)
    if level == "image":
        return image_units(y)
    raise ValueError(f"PaGKD option level must be 'group' or 'image', got {level!r}")


def feature_tokens(x: Tensor) -> Tensor:
    """``(B, d, h, w)`` -> ``(B, h*w, d)``."""
    return x.flatten(2).transpose(1, 2)


# --------------------------------------------------------------------------------------
# Positional embedding
# --------------------------------------------------------------------------------------
def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """Transformer sine-cosine embedding (Vaswani et al. 2017, Sec. 3.5): ``(P,) -> (P, dim)``."""
    if dim % 2:
        raise ValueError(f"sine-cosine embedding needs an even width, got {dim}")
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=positions.device) / dim)
    angle = positions.float()[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1)


def group_position_embedding(num_images: int, height: int, width: int, dim: int, *, device: torch.device,
                             spatial: bool = True, image: bool = True) -> Tensor:
    """E_pos of a group: ``(num_images, height*width, dim)``.

    Spatial part: the 2-D sine-cosine embedding (half the channels for the row, half for
    the column). Image part: the 1-D sine-cosine embedding of the image's index in the group.
    """
    if dim % 4:
        raise ValueError(f"PaGKD width must be a multiple of 4 (2-D positions, SRCA d/4), got {dim}")
    pos = torch.zeros(num_images, height * width, dim, device=device)
    if spatial:
        rows = torch.arange(height, device=device).repeat_interleave(width)
        cols = torch.arange(width, device=device).repeat(height)
        pos = pos + torch.cat([sincos_1d(rows, dim // 2), sincos_1d(cols, dim // 2)], dim=1)[None]
    if image:
        pos = pos + sincos_1d(torch.arange(num_images, device=device), dim)[:, None, :]
    return pos


# --------------------------------------------------------------------------------------
# GKD-Pro: prototypes and the group contrastive loss
# --------------------------------------------------------------------------------------
class LRQFormer(nn.Module):
    """Lesion-aware query transformer: N_q shared queries read one group's tokens.

    ``blocks`` decoder blocks (query self-attention, cross-attention to tokens + E_pos,
    FFN; residual + post-LayerNorm each). Tokens are LayerNorm'd before E_pos is added.
    The same module (queries and weights) serves every class and both modalities.
    """

    def __init__(self, width: int, num_queries: int = 12, blocks: int = 1, heads: int = 16,
                 ffn_ratio: int = 4, *, spatial_position: bool = True, image_position: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"PaGKD: width {width} is not divisible by heads {heads}; change option width or heads")
        self.queries = nn.Parameter(torch.randn(num_queries, width) * 0.02)
        self.token_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            nn.TransformerDecoderLayer(
                width, heads, dim_feedforward=ffn_ratio * width, dropout=0.0, activation="gelu", batch_first=True
            )
            for _ in range(blocks)
        )
        self.spatial_position = spatial_position
        self.image_position = image_position

    def forward(self, tokens: Tensor, valid: Tensor, grid: tuple[int, int]) -> Tensor:
        """``tokens (U, n, h*w, d)``, ``valid (U, n)`` real images -> prototypes ``(U, N_q, d)``."""
        u, n, length, d = tokens.shape
        pos = group_position_embedding(n, grid[0], grid[1], d, device=tokens.device,
                                       spatial=self.spatial_position, image=self.image_position)
        memory = (self.token_norm(tokens) + pos.to(tokens.dtype)).reshape(u, n * length, d)
        padding = ~valid.repeat_interleave(length, dim=1)  # True = ignore
        queries = self.queries.to(tokens.dtype).unsqueeze(0).expand(u, -1, -1)
        for block in self.blocks:
            queries = block(queries, memory, memory_key_padding_mask=padding)
        return queries


class AveragePrototypes(nn.Module):
    """Ablation ``pagkd-avgpool``: the prototype is the mean of the group's tokens (N_q = 1)."""

    def forward(self, tokens: Tensor, valid: Tensor, grid: tuple[int, int]) -> Tensor:
        weight = valid.to(tokens.dtype)[:, :, None, None]
        total = (tokens * weight).sum(dim=(1, 2))
        count = weight.sum(dim=(1, 2)) * tokens.shape[2]
        return (total / count.clamp_min(1.0)).unsqueeze(1)


def set_similarity(a: Tensor, b: Tensor) -> Tensor:
    """``(U, N_q, d), (V, N_q, d) -> (U, V)``: mean over t of cos(a[u, t], b[v, t])."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    return torch.einsum("utd,vtd->uv", a, b) / a.shape[1]


def _anchored_infonce(cross: Tensor, same: Tensor, other_class: Tensor) -> Tensor:
    """Per-anchor -log p(positive): positive ``cross[u, u]``; negatives ``cross[u, v]`` and
    ``same[u, v]`` for groups v of another class. Shapes ``(U, U)``; returns ``(U,)``."""
    eye = torch.eye(cross.shape[0], dtype=torch.bool, device=cross.device)
    neg_inf = torch.finfo(cross.dtype).min
    logits = torch.cat([cross.masked_fill(~(eye | other_class), neg_inf), same.masked_fill(~other_class, neg_inf)], 1)
    return torch.logsumexp(logits, dim=1) - cross.diagonal()


def group_contrastive_loss(wli: Tensor, nbi: Tensor, classes: Tensor, temperature: float,
                           symmetric: bool = True) -> Tensor:
    """GKD-Pro's group contrastive loss on prototype sets ``(U, N_q, d)`` of U groups.

    For anchor P_u^WLI: positive P_u^NBI (same group, other modality); negatives every
    prototype set (both modalities) of a group of another class; groups of the same class
    other than u (image level) are neither. Symmetric: the mean of the WLI-anchored and the
    NBI-anchored losses. With a single class there is no negative and the loss is 0.
    """
    other_class = classes[:, None] != classes[None, :]
    with torch.autocast(device_type=wli.device.type, enabled=False):  # float32 logits: tau amplifies rounding
        wli, nbi = wli.float(), nbi.float()
        s_wn = set_similarity(wli, nbi) / temperature
        loss_w = _anchored_infonce(s_wn, set_similarity(wli, wli) / temperature, other_class)
        if not symmetric:
            return loss_w.mean()
        loss_n = _anchored_infonce(s_wn.t(), set_similarity(nbi, nbi) / temperature, other_class)
        return 0.5 * (loss_w.mean() + loss_n.mean())


# --------------------------------------------------------------------------------------
# GKD-Den: pseudo-labels, SRCA and the reconstruction loss
# --------------------------------------------------------------------------------------
@torch.no_grad()
def cam_pseudo_labels(features: Tensor, classifier_weight: Tensor, labels: Tensor, image: Tensor, *,
                      low: float = 0.3, high: float = 0.7, num_iter: int = 10,
                      dilations: tuple[int, ...] = (1, 2, 4, 8)) -> Tensor:
    """Ground-truth-class CAM -> PAR -> dual thresholds: ``(B, h*w)`` in {-1, 0, 1}.

    Runs in float32 with autocast off (thresholds on bf16 CAMs would move pixels across
    0.3/0.7, and the antialiased resize of PAR has no bf16 CPU kernel)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        cam = class_activation_map(features.detach().float(), classifier_weight.detach().float(), labels)
        refined = pixel_adaptive_refinement(image.float(), cam, num_iter=num_iter, dilations=dilations)
    return dual_threshold_labels(refined, low=low, high=high).flatten(1)


class SRCA(nn.Module):
    """Semantic relation cross-attention: Rec(a <- b) = softmax(R + (F^a W_q)(F^b W_k)^T / sqrt(d/4)) F^b."""

    def __init__(self, width: int) -> None:
        super().__init__()
        if width % 4:
            raise ValueError(f"PaGKD width must be a multiple of 4 (SRCA projects to d/4), got {width}")
        self.w_q = nn.Linear(width, width // 4, bias=False)
        self.w_k = nn.Linear(width, width // 4, bias=False)
        self.scale = 1.0 / math.sqrt(width // 4)

    def forward(self, query_feats: Tensor, key_feats: Tensor, mask: Tensor | None) -> Tensor:
        """``query_feats (U, Lq, d)``, ``key_feats (U, Lk, d)``, additive/bool ``mask`` -> ``(U, Lq, d)``."""
        q, k = self.w_q(query_feats), self.w_k(key_feats)
        return masked_attention(q, k, key_feats.to(q.dtype), mask, scale=self.scale)


def standardise_channels(tokens: Tensor, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per channel over all tokens of the batch: ``(B, L, d)``."""
    x = tokens.float()
    mean = x.mean(dim=(0, 1), keepdim=True)
    var = x.var(dim=(0, 1), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)


def masked_mse(reconstruction: Tensor, target: Tensor, rows: Tensor) -> Tensor:
    """Mean over the selected rows (``rows (U, L)`` bool) of the per-token mean squared error."""
    err = (reconstruction - target).pow(2).mean(dim=-1)
    used = rows.to(err.dtype)
    return (err * used).sum() / used.sum().clamp_min(1.0)


DIRECTIONS = ("both", "nbi_from_wli", "wli_from_nbi")


# --------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------
@register("pagkd")
class PaGKD(Distiller):
    """PaGKD as the paper describes it (see the module docstring for every equation)."""

    summary: ClassVar[str] = "PaGKD: group-level prototype (LR-QFormer) + dense (SRCA) distillation, pairing-free"
    paper: ClassVar[str] = PAPER
    regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    main_regimes: ClassVar[frozenset[str]] = frozenset({Regime.UNPAIRED, Regime.ALL})
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "pro": 1.0, "den": 1.0}
    deviations: ClassVar[str] = (
        "Projected tokens are standardised per channel over the batch before SRCA so the L2 loss cannot "
        "be lowered by shrinking the trained projections. Positional embedding = fixed 2-D sine-cosine + "
        "image-in-group index; T = 1 block, 16 heads (released code's width/heads); tau = 20/128 (the "
        "released code's logit range). Warm-up scaled from 5 of 200 epochs (at least 1 from 10 epochs). "
        "Groups come from a class-balanced sampler with a fixed group size (the code's sampler is balanced "
        "only in expectation and skips batches missing a class); losses use the classes present. "
        "Reconstruction loss averaged over tokens with at least one open key (fully masked rows skipped). "
        "CAMs are refined on the feature grid (see methods._dense)."
    )
    sampler: ClassVar[str] = "group"
    teacher_augmented: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {
        "width": 128,
        "num_queries": 12,
        "blocks": 1,
        "heads": 16,
        "ffn_ratio": 4,
        "temperature": 20.0 / 128.0,
        "use_pro": True,
        "use_den": True,
        "prototypes": "qformer",
        "relation_mask": True,
        "directions": "both",
        "level": "group",
        "cam_low": 0.3,
        "cam_high": 0.7,
        "par_iterations": 10,
        "par_dilations": (1, 2, 4, 8),
        "warmup_epochs": None,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        o = self.opts
        self._validate_options()
        self.use_pro = bool(o["use_pro"])
        self.use_den = bool(o["use_den"])
        self.level = str(o["level"])
        self.warmup = warmup_epochs(ctx.num_epochs) if o["warmup_epochs"] is None else int(o["warmup_epochs"])
        if not (self.use_pro or self.use_den):
            return
        if ctx.teacher is None:
            raise ValueError(f"method {self.name!r} needs a teacher (an NBI network); none was given")
        width = int(o["width"])
        self.student_proj = nn.Conv2d(ctx.student.feature_channels[-1], width, 1, bias=False)
        self.teacher_proj = nn.Conv2d(ctx.teacher.feature_channels[-1], width, 1, bias=False)
        if self.use_pro:
            if o["prototypes"] == "qformer":
                self.prototype_head: nn.Module = LRQFormer(
                    width, int(o["num_queries"]), int(o["blocks"]), int(o["heads"]), int(o["ffn_ratio"])
                )
            else:
                self.prototype_head = AveragePrototypes()
        if self.use_den:
            self.srca = SRCA(width)

    def _validate_options(self) -> None:
        o = self.opts
        problems = []
        if o["prototypes"] not in ("qformer", "avgpool"):
            problems.append(f"prototypes must be 'qformer' or 'avgpool', got {o['prototypes']!r}")
        if o["directions"] not in DIRECTIONS:
            problems.append(f"directions must be one of {DIRECTIONS}, got {o['directions']!r}")
        if o["level"] not in ("group", "image"):
            problems.append(f"level must be 'group' or 'image', got {o['level']!r}")
        if int(o["width"]) < 4 or int(o["width"]) % 4:
            problems.append(f"width must be a positive multiple of 4, got {o['width']}")
        elif int(o["width"]) % int(o["heads"]):
            problems.append(f"width ({o['width']}) must be divisible by heads ({o['heads']})")
        for key in ("num_queries", "blocks", "heads", "ffn_ratio"):
            if int(o[key]) < 1:
                problems.append(f"{key} must be at least 1, got {o[key]}")
        if float(o["temperature"]) <= 0:
            problems.append(f"temperature must be positive, got {o['temperature']}")
        if not 0.0 <= float(o["cam_low"]) <= float(o["cam_high"]) <= 1.0:
            problems.append(f"need 0 <= cam_low <= cam_high <= 1, got {o['cam_low']}, {o['cam_high']}")
        if o["warmup_epochs"] is not None and int(o["warmup_epochs"]) < 0:
            problems.append(f"warmup_epochs must be >= 0 or None, got {o['warmup_epochs']}")
        if problems:
            raise ValueError(f"method {self.name!r}: " + "; ".join(problems) + " (fix the method's options)")

    # -- the loss ------------------------------------------------------------------------
    def distilling(self, batch: Batch) -> bool:
        """Whether the distillation terms are on for this batch (after the warm-up)."""
        return (self.use_pro or self.use_den) and batch.epoch >= self.warmup

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(s.logits, batch.y)}
        if not self.distilling(batch):
            return terms
        if t is None or not t.features:
            raise RuntimeError(
                f"method {self.name!r} needs the teacher's feature maps; run it with a teacher and without "
                "the teacher-output cache"
            )
        units = make_units(batch.y, self.level)
        s_map = self.student_proj(s.features[-1])
        t_map = self.teacher_proj(t.features[-1].detach())
        if self.use_pro:
            terms["pro"] = self.prototype_loss(s_map, t_map, units)
        if self.use_den:
            terms["den"] = self.dense_loss(s, t, s_map, t_map, batch, units)
        return terms

    def prototype_loss(self, s_map: Tensor, t_map: Tensor, units: Units) -> Tensor:
        """GKD-Pro: prototype sets of every group in both modalities, symmetric contrastive loss."""
        proto_w = self.prototype_head(units.pack(feature_tokens(s_map)), units.valid, tuple(s_map.shape[-2:]))
        proto_n = self.prototype_head(units.pack(feature_tokens(t_map)), units.valid, tuple(t_map.shape[-2:]))
        return group_contrastive_loss(proto_w, proto_n, units.classes, float(self.opts["temperature"]))

    def dense_loss(self, s: Outputs, t: Outputs, s_map: Tensor, t_map: Tensor, batch: Batch, units: Units) -> Tensor:
        """GKD-Den: SRCA reconstructions in the chosen directions, L2 consistency."""
        o = self.opts
        w_tok = units.pack(standardise_channels(feature_tokens(s_map))).flatten(1, 2)  # (U, n*hw_s, d)
        n_tok = units.pack(standardise_channels(feature_tokens(t_map))).flatten(1, 2)
        w_valid = units.token_valid(s_map.shape[-2] * s_map.shape[-1])
        n_valid = units.token_valid(t_map.shape[-2] * t_map.shape[-1])
        if o["relation_mask"]:
            kw = {"low": float(o["cam_low"]), "high": float(o["cam_high"]), "num_iter": int(o["par_iterations"]),
                  "dilations": tuple(int(d) for d in o["par_dilations"])}
            if s.classifier is None or t.classifier is None:
                raise RuntimeError(f"method {self.name!r} needs both networks' linear heads for CAMs")
            w_lab = units.pack_labels(
                cam_pseudo_labels(s.features[-1], s.classifier.weight, batch.y, batch.student_pixels, **kw))
            n_lab = units.pack_labels(
                cam_pseudo_labels(t.features[-1], t.classifier.weight, batch.y, batch.teacher_pixels, **kw))
            mask_nw: Tensor | None = relation_mask(n_lab, w_lab)
            mask_wn: Tensor | None = relation_mask(w_lab, n_lab)
            rows_n = n_valid & ~torch.isneginf(mask_nw).all(dim=-1)
            rows_w = w_valid & ~torch.isneginf(mask_wn).all(dim=-1)
        else:
            mask_nw, mask_wn = w_valid[:, None, :], n_valid[:, None, :]  # bool: True = may attend
            rows_n, rows_w = n_valid, w_valid
        loss = torch.zeros((), device=s_map.device)
        if o["directions"] in ("both", "nbi_from_wli"):
            loss = loss + masked_mse(self.srca(n_tok, w_tok, mask_nw).float(), n_tok, rows_n)
        if o["directions"] in ("both", "wli_from_nbi"):
            loss = loss + masked_mse(self.srca(w_tok, n_tok, mask_wn).float(), w_tok, rows_w)
        return loss


# --------------------------------------------------------------------------------------
# Ablations (the paper's Tables: modules, LR-QFormer, SRCA, direction, level)
# --------------------------------------------------------------------------------------
# Every variant keeps PaGKD's weights for "ce", "pro" and "den" (a term the variant does not
# compute contributes nothing), so ``use_pro``/``use_den`` can be switched from a config.


@register("pagkd-none")
class PaGKDNone(PaGKD):
    """Ablation: neither module -- cross-entropy on PaGKD's class-balanced group batches."""

    summary: ClassVar[str] = "PaGKD ablation: neither GKD-Pro nor GKD-Den (CE on the same group batches)"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "use_pro": False, "use_den": False}
    needs_teacher: ClassVar[bool] = False


@register("pagkd-pro")
class PaGKDPro(PaGKD):
    """Ablation: GKD-Pro only."""

    summary: ClassVar[str] = "PaGKD ablation: GKD-Pro only"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "use_den": False}


@register("pagkd-den")
class PaGKDDen(PaGKD):
    """Ablation: GKD-Den only."""

    summary: ClassVar[str] = "PaGKD ablation: GKD-Den only"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "use_pro": False}


@register("pagkd-avgpool")
class PaGKDAvgPool(PaGKD):
    """Ablation: GKD-Pro with the LR-QFormer replaced by average pooling of the group's tokens."""

    summary: ClassVar[str] = "PaGKD ablation: GKD-Pro with average pooling instead of the LR-QFormer"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "use_den": False, "prototypes": "avgpool"}


@register("pagkd-plainattn")
class PaGKDPlainAttn(PaGKD):
    """Ablation: GKD-Den with plain cross-attention (no relation mask, so no CAMs either)."""

    summary: ClassVar[str] = "PaGKD ablation: GKD-Den with plain cross-attention instead of SRCA's relation mask"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "use_pro": False, "relation_mask": False}


@register("pagkd-unidir")
class PaGKDUnidirectional(PaGKD):
    """Ablation: only the NBI <- WLI reconstruction (NBI knowledge into the WLI features)."""

    summary: ClassVar[str] = "PaGKD ablation: unidirectional (NBI<-WLI) dense reconstruction"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "directions": "nbi_from_wli"}


@register("pagkd-image")
class PaGKDImage(PaGKD):
    """Ablation: image level -- every class-matched pseudo-pair is its own group."""

    summary: ClassVar[str] = "PaGKD ablation: image-level (groups of one pseudo-pair), both modules"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "level": "image"}


@register("pagkd-image-pro")
class PaGKDImagePro(PaGKD):
    """Ablation: image-level GKD-Pro only."""

    summary: ClassVar[str] = "PaGKD ablation: image-level GKD-Pro only"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "level": "image", "use_den": False}


@register("pagkd-image-den")
class PaGKDImageDen(PaGKD):
    """Ablation: image-level GKD-Den only."""

    summary: ClassVar[str] = "PaGKD ablation: image-level GKD-Den only"
    options: ClassVar[dict[str, Any]] = {**PaGKD.options, "level": "image", "use_pro": False}


ABLATIONS: tuple[str, ...] = (
    "baseline",
    "pagkd",
    "pagkd-none",
    "pagkd-pro",
    "pagkd-den",
    "pagkd-avgpool",
    "pagkd-plainattn",
    "pagkd-unidir",
    "pagkd-image",
    "pagkd-image-pro",
    "pagkd-image-den",
    "pagkd-released",
)
register_method_set("pagkd-ablations", ABLATIONS)
register_ablations("pagkd", Ablations(
    title="PaGKD",
    modules=("GKD-Pro", "GKD-Den"),
    by_modules={(False, False): "baseline", (True, False): "pagkd-pro", (False, True): "pagkd-den",
                (True, True): "pagkd"},
    # CE on the same group batches: isolates the modules from the sampler
    modules_off="pagkd-none",
    modules_note="The paper's first ablation shape (neither / Pro / Den / both).",
    levels={"image-level": ("pagkd-image-pro", "pagkd-image-den", "pagkd-image"),
            "group-level": ("pagkd-pro", "pagkd-den", "pagkd")},
    level_columns=("Pro", "Den", "joint"),
    levels_note="Image-level: groups of one class-matched pseudo-pair (`pagkd-image*`); group-level: "
                "same-class groups (`pagkd-pro`, `pagkd-den`, `pagkd`).",
    components={
        "pagkd-avgpool": ("LR-QFormer replaced by average pooling", "pagkd-pro"),
        "pagkd-plainattn": ("SRCA replaced by plain cross-attention (no relation mask)", "pagkd-den"),
        "pagkd-unidir": ("NBI->WLI reconstruction only (not bidirectional)", "pagkd"),
        "pagkd-released": ("the released code's behaviour", "pagkd"),
    },
))
