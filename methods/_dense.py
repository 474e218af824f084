"""Dense (pixel-level) distillation pieces shared by ADD and PaGKD's GKD-Den.

One implementation of each step of the CAM -> refinement -> pseudo-label -> relation
mask -> masked cross-attention pipeline that both methods run:

* :func:`class_activation_map` -- the ground-truth-class CAM of a GAP + linear head.
* :func:`pixel_adaptive_refinement` -- AFA's pixel-adaptive refinement (PAR).
* :func:`dual_threshold_labels` -- background / lesion / ambiguous pseudo-labels.
* :func:`relation_mask` (and :func:`relation_weight`) -- which pixel pairs may attend.
* :func:`masked_attention` -- softmax(q k^T * scale + mask) v without NaN on blocked rows.

Everything is batched on tensors (no Python loop over images) and device-agnostic.
Sources: Ru et al., "Learning Affinity from Attention: End-to-End Weakly-Supervised
Semantic Segmentation with Transformers", CVPR 2022 (PAR, Sec. 3.3); Hu et al., "Holistic
White-Light Polyp Classification via Alignment-Free Dense Distillation of Auxiliary
Optical Chromoendoscopy", MICCAI 2025 (ADD: CAM, thresholds, relation mask, cross
attention); the PaGKD paper (AAAI 2026, GKD-Den: relation matrix in {0, -inf}, SRCA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

AMBIGUOUS: int = -1
"""Label of pixels that are neither confident background nor confident lesion."""

_EPS = 1e-8

# The 8 neighbours of a pixel in the row-major order of AFA's one-hot 3x3 kernels.
_NEIGHBOURS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

# Above this many attention logits (batch x Lq x Lk) :func:`masked_attention` chunks the
# query rows by itself when no ``chunk_size`` is given (2**27 fp32 logits = 512 MiB).
_AUTO_CHUNK_ELEMENTS = 2**27


# --------------------------------------------------------------------------------------
# Class activation maps
# --------------------------------------------------------------------------------------
def class_activation_map(features: Tensor, classifier_weight: Tensor, labels: Tensor) -> Tensor:
    """Class activation map of each row's class, ReLU'd and min-max normalised to [0, 1].

    Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016,
    Eq. (2): M_c(x, y) = sum_d w_{c,d} f_d(x, y).

    ADD and the released PaGKD code compute Grad-CAM (Selvaraju et al., ICCV 2017) of the
    ground-truth logit on the last map. For a head that is global average pooling followed
    by a linear layer -- every backbone of this suite -- d logit_c / d f_d(x, y) =
    w_{c,d} / (h w), so the Grad-CAM channel weights are w_{c,d} / (h w) and Grad-CAM equals
    this CAM times the positive constant 1 / (h w); after the min-max normalisation both
    are identical. The map is differentiable in ``features`` and ``classifier_weight``
    (the pipeline only thresholds it, so callers usually detach it).

    Args:
        features: ``(B, d, h, w)`` last feature map (the one pooled into the embedding).
        classifier_weight: ``(C, d)`` weight of the linear head.
        labels: ``(B,)`` class whose map each row gets (the ground truth in ADD/PaGKD).

    Returns:
        ``(B, h, w)`` maps in [0, 1]; a constant map (e.g. all zero after the ReLU) maps to 0.
    """
    if features.dim() != 4:
        raise ValueError(f"class_activation_map: features must be (B, d, h, w), got {tuple(features.shape)}")
    if classifier_weight.dim() != 2 or classifier_weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"class_activation_map: classifier weight {tuple(classifier_weight.shape)} does not match "
            f"feature width {features.shape[1]}; pass the head that consumes these features"
        )
    weight = classifier_weight[labels.long()].to(features.dtype)  # (B, d)
    cam = F.relu(torch.einsum("bd,bdhw->bhw", weight, features))
    flat = cam.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    high = flat.max(dim=1).values[:, None, None]
    return (cam - low) / (high - low).clamp_min(_EPS)


# --------------------------------------------------------------------------------------
# Pixel-adaptive refinement
# --------------------------------------------------------------------------------------
def _neighbour_index(height: int, width: int, dilations: tuple[int, ...], device: torch.device) -> Tensor:
    """``(K, h*w)`` flat index of every pixel's K = 8 * len(dilations) neighbours.

    Out-of-image neighbours are clamped to the border, which is what AFA's replicate
    padding followed by a dilated one-hot convolution computes.
    """
    rows = torch.arange(height, device=device)[:, None].expand(height, width)
    cols = torch.arange(width, device=device)[None, :].expand(height, width)
    index = []
    for d in dilations:
        for dy, dx in _NEIGHBOURS:
            r = (rows + dy * d).clamp(0, height - 1)
            c = (cols + dx * d).clamp(0, width - 1)
            index.append((r * width + c).flatten())
    return torch.stack(index)


def _gather_neighbours(x: Tensor, index: Tensor) -> Tensor:
    """``(B, C, h, w)`` -> ``(B, C, K, h*w)`` values of the K neighbours of every pixel."""
    return x.flatten(2)[:, :, index]


def _position_distances(dilations: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(K,)`` distance of each neighbour: d for axis neighbours, d*sqrt(2) for diagonals."""
    unit = torch.tensor([math.hypot(dy, dx) for dy, dx in _NEIGHBOURS], device=device, dtype=dtype)
    return torch.cat([unit * d for d in dilations])


def pixel_adaptive_refinement(
    image: Tensor,
    cam: Tensor,
    num_iter: int = 10,
    dilations: tuple[int, ...] = (1, 2, 4, 8),
    *,
    rgb_scale: float = 0.3,
    position_weight: float = 0.0,
) -> Tensor:
    """Refine CAMs by propagating them along local colour affinities (AFA's PAR).

    Ru et al., CVPR 2022, Sec. 3.3 ("Pixel-Adaptive Refinement"), as released in AFA/ToCo:
    for pixel i and each of its K = 8 * len(dilations) neighbours j (8-neighbourhoods at
    every dilation; out-of-image neighbours clamped to the border = replicate padding)

        kappa_ij = -mean_rgb( |I_i - I_j| / (sigma_i + 1e-8) / rgb_scale )^2,
        a_ij     = softmax_j(kappa_ij) + position_weight * softmax_j(kappa^pos_ij),

    with sigma_i the (unbiased) standard deviation of i's K neighbour intensities per
    channel and kappa^pos_ij = -(|p_i - p_j| / (std_j |p_i - p_j| + 1e-8) / rgb_scale)^2.
    The CAM is then propagated ``num_iter`` times: M_i <- sum_j a_ij M_j.

    Defaults are those of ADD ("PSR") and the released PaGKD code: 10 iterations,
    dilations (1, 2, 4, 8), rgb_scale 0.3 and *no* position term (they compute it and never
    add it); AFA itself uses position_weight 0.01 and dilations (1, 2, 4, 8, 12, 24).

    Grid: the image is resized (bilinear, antialiased) to the CAM's grid and refinement
    runs there. ADD and released PaGKD instead upsample the CAM to half the input image
    (224 px at 448) and resize the result back to the 14x14 map; at the feature grid the
    same dilations cover a wider image area. The affinities are invariant to a per-channel
    affine intensity change (differences divided by a local std), so mean/std-normalised
    inputs give the same result as the raw [0, 1] RGB the official code uses.

    Gradients flow through the propagation (and the image) unless the caller runs it
    under ``torch.no_grad()``.

    Args:
        image: ``(B, 3, H, W)`` images (any channel count).
        cam: ``(B, h, w)`` or ``(B, K, h, w)`` maps to refine.
        num_iter: propagation steps.
        dilations: neighbourhood dilations.
        rgb_scale: AFA's w1 (0.3).
        position_weight: AFA's w2 (0.01 in AFA; 0 in ADD and PaGKD).

    Returns:
        The refined maps, same shape as ``cam``.
    """
    if cam.dim() not in (3, 4):
        raise ValueError(f"pixel_adaptive_refinement: cam must be (B, h, w) or (B, K, h, w), got {tuple(cam.shape)}")
    if image.dim() != 4 or image.shape[0] != cam.shape[0]:
        raise ValueError(
            f"pixel_adaptive_refinement: image must be (B, C, H, W) with the CAM's batch size; "
            f"got image {tuple(image.shape)} and cam {tuple(cam.shape)}"
        )
    if not dilations or any(int(d) < 1 for d in dilations):
        raise ValueError(f"pixel_adaptive_refinement: dilations must be positive integers, got {dilations}")
    squeeze = cam.dim() == 3
    maps = cam.unsqueeze(1) if squeeze else cam
    b, _, h, w = maps.shape
    img = image.to(maps.dtype)
    if img.shape[-2:] != (h, w):
        img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    dilations = tuple(int(d) for d in dilations)
    index = _neighbour_index(h, w, dilations, maps.device)  # (K, hw)

    neighbours = _gather_neighbours(img, index)  # (B, C, K, hw)
    centre = img.flatten(2).unsqueeze(2)  # (B, C, 1, hw)
    sigma = neighbours.std(dim=2, keepdim=True)
    kappa = -(((neighbours - centre).abs() / (sigma + _EPS) / rgb_scale) ** 2)
    affinity = kappa.mean(dim=1, keepdim=True).softmax(dim=2)  # (B, 1, K, hw)
    if position_weight:
        dist = _position_distances(dilations, maps.device, maps.dtype)
        pos = -((dist / (dist.std() + _EPS) / rgb_scale) ** 2)
        affinity = affinity + position_weight * pos.softmax(dim=0)[None, None, :, None]

    flat = maps.flatten(2)  # (B, K', hw)
    for _ in range(num_iter):
        flat = (flat[:, :, index] * affinity).sum(dim=2)
    out = flat.view(b, -1, h, w)
    return out.squeeze(1) if squeeze else out


# --------------------------------------------------------------------------------------
# Pseudo-labels and relation masks
# --------------------------------------------------------------------------------------
def dual_threshold_labels(cam: Tensor, low: float = 0.3, high: float = 0.7) -> Tensor:
    """Background (0) where ``cam < low``, lesion (1) where ``cam > high``, else -1 (ambiguous).

    ADD (Hu et al., MICCAI 2025) and PaGKD's dual thresholds theta_l = 0.3, theta_h = 0.7.
    The official code (ToCo's ``refine_cams_with_bkg``) thresholds *before* refining: it
    refines the two-channel maps softmax([theta, CAM]) (whose lesion channel is
    sigmoid(CAM - theta), monotone and near-linear on [0, 1]) and takes the argmax. Here the
    CAM is refined once and then thresholded, which agrees except near the thresholds.

    Args:
        cam: ``(..., h, w)`` maps, normally in [0, 1].

    Returns:
        long tensor of the same shape with values in {-1, 0, 1}.
    """
    if not low <= high:
        raise ValueError(f"dual_threshold_labels: need low <= high, got low={low}, high={high}")
    labels = torch.full(cam.shape, AMBIGUOUS, dtype=torch.long, device=cam.device)
    labels[cam < low] = 0
    labels[cam > high] = 1
    return labels


def _pair_labels(labels_q: Tensor, labels_k: Tensor) -> tuple[Tensor, Tensor]:
    if labels_q.dim() != labels_k.dim() or labels_q.dim() not in (1, 2):
        raise ValueError(
            "relation mask: labels must both be flat (L,) or batched (B, L); "
            f"got {tuple(labels_q.shape)} and {tuple(labels_k.shape)} (flatten the (h, w) grid first)"
        )
    lq = labels_q.unsqueeze(-1)  # (..., Lq, 1)
    lk = labels_k.unsqueeze(-2)  # (..., 1, Lk)
    same = lq == lk
    ambiguous = (lq < 0) | (lk < 0)
    return same, ambiguous


def relation_mask(labels_q: Tensor, labels_k: Tensor, ambiguous: float = float("-inf")) -> Tensor:
    """Additive attention mask from pixel pseudo-labels (semantic relation matrix).

    PaGKD (AAAI 2026), GKD-Den: R in {0, -inf}^{Lq x Lk}, 0 where the query and key
    positions carry the same non-ambiguous label, -inf otherwise. ADD's SRG (Hu et al.,
    MICCAI 2025) is the same set of open pairs (relation 1 for the same label, 0 -- masked --
    for different labels *and* for any pair with an ambiguous pixel).

    ``ambiguous`` is the additive value for every pair in which either pixel is ambiguous
    (label < 0); the default -inf masks them out, as ADD and the PaGKD paper do. Note on
    the released PaGKD code (``label_to_aff_mask_cross``/``cross1`` with confuse value 0.5,
    then ``Den``/``Den1``): its relation value is *multiplicative* -- the logits are
    multiplied by R in {1, 0.5} and set to -1e9 where R = 0, so pairs involving an ambiguous
    pixel stay open with their logit halved. An additive mask cannot express that; reproduce
    it with ``masked_attention(q, k, v, relation_mask(lq, lk, ambiguous=0.0),
    logit_scale=relation_weight(lq, lk, ambiguous=0.5), scale=1.0)``.

    Args:
        labels_q: ``(Lq,)`` or ``(B, Lq)`` labels of the query positions (flattened grid).
        labels_k: ``(Lk,)`` or ``(B, Lk)`` labels of the key positions.
        ambiguous: additive value for pairs involving an ambiguous pixel.

    Returns:
        float ``(Lq, Lk)`` or ``(B, Lq, Lk)`` mask.
    """
    same, amb = _pair_labels(labels_q, labels_k)
    zero = torch.zeros((), dtype=torch.float32, device=same.device)
    mask = torch.where(same, zero, torch.full_like(zero, float("-inf")))
    return torch.where(amb, torch.full_like(zero, float(ambiguous)), mask)


def relation_weight(labels_q: Tensor, labels_k: Tensor, ambiguous: float = 0.5) -> Tensor:
    """Multiplicative relation values of the released PaGKD code: 1 same label, 0 different,
    ``ambiguous`` (its "confuse value", 0.5) for pairs involving an ambiguous pixel; ADD's
    released code uses 0 there. Shapes as :func:`relation_mask`. Use as ``logit_scale`` of
    :func:`masked_attention` together with ``relation_mask(..., ambiguous=0.0)``.
    """
    same, amb = _pair_labels(labels_q, labels_k)
    weight = same.to(torch.float32)
    return torch.where(amb, torch.full_like(weight, float(ambiguous)), weight)


# --------------------------------------------------------------------------------------
# Masked attention
# --------------------------------------------------------------------------------------
def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype == torch.bool:  # SDPA convention: True = may attend
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float, logit_scale: Tensor | None) -> Tensor:
    """One block of query rows; ``mask`` already has its blocked rows opened."""
    if logit_scale is None:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale * logit_scale.to(q.dtype)
    if mask is not None:
        logits = logits + mask
    return torch.matmul(logits.softmax(dim=-1), v)


def masked_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None,
    scale: float | None = None,
    *,
    chunk_size: int | None = None,
    logit_scale: Tensor | None = None,
) -> Tensor:
    """softmax(q k^T * scale + mask) v over the last two dimensions, batched.

    The attention of ADD's cross-modal reconstruction and of PaGKD's SRCA (Vaswani et al.,
    NeurIPS 2017, Eq. 1, with an additive mask). Rows that the mask blocks entirely (every
    entry -inf, e.g. a lesion pixel of one image with no lesion pixel in the other) output
    zeros, with zero (finite) gradient; a plain softmax would give NaN there, and the
    official code's -1e9 fill gives a uniform average over all keys instead.

    Args:
        q: ``(..., Lq, d)`` queries.
        k: ``(..., Lk, d)`` keys.
        v: ``(..., Lk, dv)`` values.
        mask: additive float mask broadcastable to ``(..., Lq, Lk)`` (0 open, -inf
            blocked), a bool mask (True = may attend) or ``None``.
        scale: logit scale; ``None`` gives 1/sqrt(d). ADD and the released PaGKD code use
            1.0 (no scaling); the PaGKD paper's SRCA uses 1/sqrt(d/4) with d/4-wide q, k.
        chunk_size: process at most this many query rows at a time (each chunk is
            recomputed in the backward pass, so peak memory is one chunk's attention).
            ``None`` chunks automatically when batch x Lq x Lk exceeds 2**27 logits.
        logit_scale: optional per-pair multiplicative factor on the scaled logits,
            broadcastable to ``(..., Lq, Lk)`` (the released PaGKD relation values; see
            :func:`relation_weight`). Uses an explicit softmax instead of
            ``scaled_dot_product_attention``.

    Returns:
        ``(..., Lq, dv)``.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"masked_attention: shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit "
            "(need q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv))"
        )
    lq, lk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)

    blocked: Tensor | None = None
    if mask is not None:
        mask = _as_additive(mask, q.dtype)
        if mask.dim() < 2:
            raise ValueError(f"masked_attention: mask must be (..., Lq, Lk), got {tuple(mask.shape)}")
        blocked = torch.isneginf(mask).all(dim=-1, keepdim=True)  # (..., Lq or 1, 1)
        mask = mask.masked_fill(blocked, 0.0)

    batch = math.prod(torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])) if q.dim() > 2 else 1
    if chunk_size is None and batch * lq * lk > _AUTO_CHUNK_ELEMENTS:
        chunk_size = max(1, _AUTO_CHUNK_ELEMENTS // max(1, batch * lk))
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"masked_attention: chunk_size must be >= 1, got {chunk_size}")

    if chunk_size is None or chunk_size >= lq:
        out = _attend(q, k, v, mask, scale, logit_scale)
    else:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        pieces = []
        for start in range(0, lq, chunk_size):
            rows = slice(start, min(start + chunk_size, lq))
            m = mask[..., rows, :] if mask is not None and mask.shape[-2] == lq else mask
            ls = logit_scale[..., rows, :] if logit_scale is not None and logit_scale.shape[-2] == lq else logit_scale
            if needs_grad:
                piece = checkpoint(_attend, q[..., rows, :], k, v, m, scale, ls, use_reentrant=False)
            else:
                piece = _attend(q[..., rows, :], k, v, m, scale, ls)
            pieces.append(piece)
        out = torch.cat(pieces, dim=-2)

    if blocked is not None:
        out = out.masked_fill(blocked, 0.0)
    return out
