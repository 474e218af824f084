"""PaGKD as the official code (github.com/Huster-Hq/PaGKD, commit 7b211f1) trains it.

What runs in the released ``train.py`` / ``models/model_stu.py`` (read from the code; see
the suite's research notes), with its crash bugs fixed and generalised from 3 hard-coded
classes to any number. Use ``pagkd`` for the paper's design; this variant exists so a
table can show what the released code itself does.

How it differs from ``pagkd`` (the paper's design as implemented in :mod:`methods.pagkd`)
---------------------------------------------------------------------------------------
====================  ==============================================  ==============================================
item                  ``pagkd``                                       ``pagkd-released``
====================  ==============================================  ==============================================
projections           1x1 conv per network to d = 128                 same (student ``conv_embedd``, teacher
                                                                      ``embed_layer``), no bias
LR-QFormer            T = 1 decoder block: query self-attention,      one ``nn.MultiheadAttention(128, 16)``:
                      cross-attention, FFN, LayerNorms, residuals     cross-attention only, no FFN/LN/residual
position embedding    2-D sine-cosine + image-in-group index          scalar per-image "identity" code added to all
                                                                      channels: sin(0.1 (j + 0.1)) for the first
                                                                      class present, U(0, 1) draws seeded 42, 57
                                                                      (then 72, 87, ...) for the others; no
                                                                      spatial position
set similarity        mean over queries of cosine of same-index       features L2-normalised over the 12-query axis
                      queries, in [-1, 1]                             per channel, summed over queries and channels,
                                                                      divided by 20 (range +-6.4)
contrastive loss      symmetric InfoNCE (WLI and NBI anchors),        WLI anchors only; candidates = all 2C - 1 other
                      tau = 20/128, mean over anchors                 sets; "softmax + 1" denominator
                                                                      (1 + sum exp); tau = 1; summed over classes
set classification    none                                            CE of a linear head on the query-averaged
                                                                      prototype set, target = its class
weights               pro 1, den 1                                    0.001 (pro + set_cls), den 1
CAM labels            CAM -> PAR -> 0.3/0.7 (methods._dense)          same pipeline (Grad-CAM = CAM for GAP heads)
relation              {0, -inf}: same non-ambiguous label open        multiplicative: 1 same label, 0.5 if either
                                                                      pixel is ambiguous, -1e9 fill if different
dense attention       one joint attention over the group's            image-to-image: each query image attends to
                      L_c = N_c h w tokens, learned W_q/W_k to d/4,   each key image of the group separately
                      1/sqrt(d/4) scale                               (N_c^2 pairs), raw features, no scale
fully blocked rows    output 0, left out of the loss                  uniform average over the key image (-1e9)
reconstruction loss   L2 on channel-standardised tokens, mean over    1 - cosine of whole flattened maps, mean over
                      open rows, both directions summed               image pairs, summed over classes and both
                                                                      directions; targets not detached
index bookkeeping     consistent                                      ``original_indexing=True`` reproduces the
                                                                      code: pair (m, n) uses the relation of (n, m)
                                                                      and the target of query image n
missing class         loss over the classes present                   group terms skipped unless every class is in
                                                                      the batch
true pairs            nothing special                                 extra ADD term on twin rows (image-level
                                                                      relation attention, 1 - cos, both
                                                                      directions); ``paired_add=False`` drops it
warm-up               5/200 of the epochs, scaled (shared rule)        same rule (code: ``epoch > 5`` of 199)
====================  ==============================================  ==============================================

Bugs of the released code fixed here (as ``deviations`` states)
---------------------------------------------------------------
* ``Resnet_att.forward`` reads ``self.lb_token`` but the parameter is ``lb_token1``
  (AttributeError): the queries are one parameter here.
* ``cam()`` is called with 4 arguments but takes 3 (TypeError), and writes the
  ground-truth logits in place into column 0 of the student's logits: CAMs are computed
  from the features and the linear head, without touching the logits.
* ``generate_identity`` calls ``torch.manual_seed(42/57)`` in every forward pass, resetting
  the global RNG (data order and augmentation repeat): the draws use a local generator.
* Hard-coded 3 classes (``idx0..idx2``, ``[0,0,1,1,2,2]``, seed list of length 2):
  generalised to C classes (identity seeds 42 + 15 k).
* ``train_teacher.py`` imports modules that exist only in the ADD repository: the suite
  trains the teacher itself.
* Empty checkpoint paths (student "raw student" and teacher): the suite provides a trained
  NBI teacher; the student starts as every other method's does.

Other departures forced by the suite's one-step-per-batch harness: the ADD step on true
pairs is a term of the same optimiser step (the code makes a separate step on a separate
paired loader), and in the ``all`` regime the group terms use every row of the class-balanced
batch (paired and unpaired); the code's weighted sampler is class-balanced only in
expectation, the suite's ``group`` sampler exactly.

Cost: the image-to-image attention holds N_c^2 (h w)^2 logits per class, the same count as
``pagkd``'s joint L_c^2 = (N_c h w)^2; see :mod:`methods.pagkd` for the ``paper`` profile's
memory arithmetic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL, Regime

from ._dense import masked_attention, relation_mask, relation_weight
from .base import Batch, Distiller, DistillerContext, Outputs
from .pagkd import Units, cam_pseudo_labels, feature_tokens, group_units, warmup_epochs
from .registry import register

# The code's fill value for masked logits (finite, so a fully masked row averages uniformly).
_CODE_MASK_FILL = -1e9
# Above this many pair logits (n^2 Lq Lk) :func:`pairwise_group_loss` takes the direct form,
# whose attention chunks (2**24 fp32 logits = 64 MiB per n^2-sized tensor).
_FACTORED_LIMIT = 2**24
_COS_EPS = 1e-8
# Seeds of the per-image identity codes for the 2nd, 3rd, ... class present (code: [42, 57]).
_IDENTITY_SEED0, _IDENTITY_SEED_STEP = 42, 15


def identity_codes(sizes: list[int]) -> list[Tensor]:
    """The released code's per-image scalar codes for each group (``generate_identity``)."""
    codes = []
    for k, n in enumerate(sizes):
        if k == 0:
            codes.append(torch.sin((torch.arange(n, dtype=torch.float32) + 0.1) * 0.1))
        else:
            gen = torch.Generator().manual_seed(_IDENTITY_SEED0 + _IDENTITY_SEED_STEP * (k - 1))
            codes.append(torch.rand(n, generator=gen))
    return codes


def released_set_similarity(a: Tensor, b: Tensor, divisor: float = 20.0) -> Tensor:
    """``(U, N_q, d), (V, N_q, d) -> (U, V)``: normalise over the query axis per channel,
    sum of elementwise products over queries and channels, divided by ``divisor``."""
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    return torch.einsum("utd,vtd->uv", a, b) / divisor


def released_contrastive_loss(wli: Tensor, nbi: Tensor, temperature: float = 1.0, divisor: float = 20.0) -> Tensor:
    """``set_loss`` of the released code for U classes (one group each).

    Sets are stacked [W_0, N_0, W_1, N_1, ...]; for each WLI anchor W_k the candidates are
    the other 2U - 1 sets and p = exp(s(W_k, N_k)/tau) / (1 + sum_candidates exp(s/tau));
    the loss is -sum_k log p_k.
    """
    sets = torch.stack([wli, nbi], dim=1).flatten(0, 1).float()  # (2U, N_q, d)
    with torch.autocast(device_type=sets.device.type, enabled=False):
        sim = released_set_similarity(sets, sets, divisor) / temperature
    u = wli.shape[0]
    anchors = torch.arange(u, device=wli.device) * 2
    rows = sim[anchors]  # (U, 2U)
    not_self = torch.ones_like(rows, dtype=torch.bool)
    not_self[torch.arange(u), anchors] = False
    log_denominator = torch.logsumexp(
        torch.cat([torch.zeros(u, 1, device=rows.device, dtype=rows.dtype),
                   rows.masked_fill(~not_self, float("-inf"))], dim=1),
        dim=1,
    )
    positive = rows[torch.arange(u), anchors + 1]
    return (log_denominator - positive).sum()


def relation_reconstruction_loss(query: Tensor, key: Tensor, query_labels: Tensor, key_labels: Tensor,
                                 confuse_value: float = 0.5) -> Tensor:
    """Per-item ``1 - cos`` of the released code's relation attention (``Den``/``Den1``).

    ``query (P, Lq, c)`` is reconstructed from ``key (P, Lk, c)``: logits q k^T (no scale)
    times the relation (1 same label, ``confuse_value`` if either pixel is ambiguous), set
    to -1e9 where the labels differ, softmax over keys, times the keys. Returns ``(P,)``.
    """
    mask = relation_mask(query_labels, key_labels, ambiguous=0.0).clamp_min(_CODE_MASK_FILL)
    weight = relation_weight(query_labels, key_labels, ambiguous=confuse_value)
    rec = masked_attention(query, key, key, mask, scale=1.0, logit_scale=weight)
    return 1.0 - F.cosine_similarity(rec.flatten(1).float(), query.flatten(1).float(), dim=1, eps=1e-8)


def pairwise_group_loss(query: Tensor, key: Tensor, query_labels: Tensor, key_labels: Tensor,
                        confuse_value: float = 0.5, original_indexing: bool = True) -> Tensor:
    """``Den_set`` for one class group of n images: every (query image, key image) pair.

    ``query (n, Lq, c)``, ``key (n, Lk, c)``, labels ``(n, L)``. Pair (m, j) reconstructs
    query image m from key image j. With ``original_indexing`` the released code's
    broadcasting is reproduced: the relation is taken from (key image m, query image j) and
    the cosine target is query image j; otherwise relation (m, j) and target m. Mean over
    the n^2 pairs of 1 - cos.

    Computed without forming the n^2 reconstructions ``rec = A K_j`` (``A`` the pair's
    attention): ``<rec, T> = sum(A * T K_j^T)`` and ``|rec|^2 = sum(A * A K_j K_j^T)``, so
    every n^2-sized tensor is ``(Lq, Lk)`` per pair instead of ``(Lq, c)``. Algebraically the
    direct form (:func:`_pairwise_group_loss_direct`, used above ``_FACTORED_LIMIT`` logits,
    where it chunks the attention); the two agree to float rounding in value and gradient (tested).
    """
    n, lq, _ = query.shape
    lk = key.shape[1]
    if n * n * lq * lk > _FACTORED_LIMIT:
        return _pairwise_group_loss_direct(query, key, query_labels, key_labels, confuse_value, original_indexing)
    if original_indexing:  # pair (m, j): relation of (key image m, query image j)
        lab_q, lab_k = query_labels.unsqueeze(0), key_labels.unsqueeze(1)
    else:
        lab_q, lab_k = query_labels.unsqueeze(1), key_labels.unsqueeze(0)
    lab_q = lab_q.expand(n, n, lq).reshape(n * n, lq)
    lab_k = lab_k.expand(n, n, lk).reshape(n * n, lk)
    mask = relation_mask(lab_q, lab_k, ambiguous=0.0).clamp_min(_CODE_MASK_FILL).unflatten(0, (n, n))
    weight = relation_weight(lab_q, lab_k, ambiguous=confuse_value).unflatten(0, (n, n))
    scores = torch.einsum("mqc,jkc->mjqk", query, key)  # q_m k_j^T: (n, n, Lq, Lk)
    attention = _at_least_float32((scores * weight.to(scores.dtype) + mask.to(scores.dtype)).softmax(dim=-1))
    q, k = _at_least_float32(query), _at_least_float32(key)
    if original_indexing:  # target q_j: T K_j^T = q_j k_j^T, the same for every m
        target_keys = torch.einsum("jqc,jkc->jqk", q, k).unsqueeze(0)
        target_sq = q.square().sum(dim=(1, 2)).unsqueeze(0)
    else:  # target q_m: T K_j^T is the pair's own scores
        target_keys = _at_least_float32(scores)
        target_sq = q.square().sum(dim=(1, 2)).unsqueeze(1)
    dot = (attention * target_keys).sum(dim=(2, 3))
    key_gram = torch.einsum("jkc,jlc->jkl", k, k)
    rec_sq = (torch.einsum("mjqk,jkl->mjql", attention, key_gram) * attention).sum(dim=(2, 3))
    # F.cosine_similarity's rule: each norm clamped at eps = 1e-8 before dividing
    cos = dot / (rec_sq.clamp_min(0.0).sqrt().clamp_min(_COS_EPS) * target_sq.sqrt().clamp_min(_COS_EPS))
    return (1.0 - cos).mean()


def _pairwise_group_loss_direct(query: Tensor, key: Tensor, query_labels: Tensor, key_labels: Tensor,
                                confuse_value: float = 0.5, original_indexing: bool = True) -> Tensor:
    """:func:`pairwise_group_loss` in the released code's form: the n^2 reconstructions by
    masked attention, then ``1 - F.cosine_similarity`` of the flattened maps."""
    n = query.shape[0]
    m_idx = torch.arange(n, device=query.device).repeat_interleave(n)  # m of pair (m, j)
    j_idx = torch.arange(n, device=query.device).repeat(n)  # j of pair (m, j)
    q = query[m_idx]
    k = key[j_idx]
    if original_indexing:
        lab_q, lab_k, target = query_labels[j_idx], key_labels[m_idx], query[j_idx]
    else:
        lab_q, lab_k, target = query_labels[m_idx], key_labels[j_idx], query[m_idx]
    mask = relation_mask(lab_q, lab_k, ambiguous=0.0).clamp_min(_CODE_MASK_FILL)
    weight = relation_weight(lab_q, lab_k, ambiguous=confuse_value)
    rec = masked_attention(q, k, k, mask, scale=1.0, logit_scale=weight)
    cos = F.cosine_similarity(_at_least_float32(rec.flatten(1)), _at_least_float32(target.flatten(1)), dim=1,
                              eps=_COS_EPS)
    return (1.0 - cos).mean()


def _at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32, or kept in float64 (the losses are computed at least in float32)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class ReleasedQFormer(nn.Module):
    """The released ``Resnet_att`` prototype branch: 12 x 128 queries, one multi-head
    cross-attention (16 heads), a linear set classifier on the query-averaged set."""

    def __init__(self, width: int, num_queries: int, heads: int, num_classes: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"pagkd-released: width {width} is not divisible by heads {heads}")
        self.queries = nn.Parameter(torch.randn(num_queries, width))
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.set_classifier = nn.Linear(width, num_classes)

    def forward(self, tokens: Tensor, valid: Tensor, codes: list[Tensor]) -> Tensor:
        """``tokens (U, n, L, d)``, ``valid (U, n)``, per-group codes -> prototypes ``(U, N_q, d)``."""
        u, n, length, d = tokens.shape
        code = torch.zeros(u, n, dtype=tokens.dtype, device=tokens.device)
        for k, c in enumerate(codes):
            code[k, : c.numel()] = c.to(device=tokens.device, dtype=tokens.dtype)
        memory = (tokens + code[:, :, None, None]).reshape(u, n * length, d)
        padding = ~valid.repeat_interleave(length, dim=1)
        queries = self.queries.to(tokens.dtype).unsqueeze(0).expand(u, -1, -1)
        out, _ = self.attention(queries, memory, memory, key_padding_mask=padding, need_weights=False)
        return out


@register("pagkd-released")
class PaGKDReleased(Distiller):
    """PaGKD as the released code trains it (crash bugs fixed); see the module docstring."""

    summary: ClassVar[str] = (
        "PaGKD as the official code runs it (one attention layer, + ADD on pairs); its prototype (pro) and "
        "set-classifier (set_cls) terms weigh 0.001 against CE 1, so only the dense (den) and ADD terms distil"
    )
    paper: ClassVar[str] = (
        "Hu et al., AAAI 2026 (arXiv:2601.09209), official code github.com/Huster-Hq/PaGKD @7b211f1: "
        "train.py set_loss/Den_set/pair_loss, models/model_stu.py Resnet_att"
    )
    regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    main_regimes: ClassVar[frozenset[str]] = frozenset({Regime.UNPAIRED, Regime.ALL})
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "pro": 0.001, "set_cls": 0.001, "den": 1.0, "add": 1.0}
    deviations: ClassVar[str] = (
        "Weights as released: pro and set_cls 0.001 (the prototype branch barely trains the student), den and "
        "add 1. Crash bugs fixed: lb_token/lb_token1 name mismatch; cam() argument count and its in-place write "
        "into the logits; global torch.manual_seed(42/57) in every forward replaced by a local generator; "
        "3 hard-coded classes generalised to C (identity seeds 42+15k); teacher script importing ADD "
        "modules and empty checkpoint paths replaced by the suite's teacher. The ADD step on true pairs "
        "is a term of the same optimiser step (twin rows of the batch) instead of a separate step on a "
        "paired loader; group terms use every row of exactly class-balanced batches. The off-diagonal "
        "index mismatch of Den_set is kept (original_indexing=True). CAMs are refined on the feature grid."
    )
    sampler: ClassVar[str] = "group"
    teacher_augmented: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {
        "width": 128,
        "num_queries": 12,
        "heads": 16,
        "temperature": 1.0,
        "similarity_divisor": 20.0,
        "confuse_value": 0.5,
        "original_indexing": True,
        "paired_add": True,
        "cam_low": 0.3,
        "cam_high": 0.7,
        "par_iterations": 10,
        "par_dilations": (1, 2, 4, 8),
        "warmup_epochs": None,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        o = self.opts
        if ctx.teacher is None:
            raise ValueError("method 'pagkd-released' needs a teacher (an NBI network); none was given")
        if float(o["temperature"]) <= 0 or float(o["similarity_divisor"]) <= 0:
            raise ValueError("pagkd-released: options temperature and similarity_divisor must be positive")
        width = int(o["width"])
        self.student_embed = nn.Conv2d(ctx.student.feature_channels[-1], width, 1, bias=False)
        nn.init.kaiming_normal_(self.student_embed.weight, mode="fan_out", nonlinearity="relu")  # ResNet init
        self.teacher_embed = nn.Conv2d(ctx.teacher.feature_channels[-1], width, 1, bias=False)
        self.qformer = ReleasedQFormer(width, int(o["num_queries"]), int(o["heads"]), ctx.num_classes)
        self.warmup = warmup_epochs(ctx.num_epochs) if o["warmup_epochs"] is None else int(o["warmup_epochs"])

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        terms = {"ce": F.cross_entropy(s.logits, batch.y)}
        if batch.epoch < self.warmup:
            return terms
        if t is None or not t.features or s.classifier is None or t.classifier is None:
            raise RuntimeError(
                "method 'pagkd-released' needs the teacher's feature maps and both linear heads; run it with a "
                "teacher and without the teacher-output cache"
            )
        units = group_units(batch.y)
        all_classes = units.count == self.ctx.num_classes
        twins = batch.twin.bool()
        run_add = bool(self.opts["paired_add"]) and bool(twins.any())
        if not (all_classes or run_add):
            return terms
        o = self.opts
        w_tok = feature_tokens(self.student_embed(s.features[-1]))  # (B, hw, d)
        n_tok = feature_tokens(self.teacher_embed(t.features[-1].detach()))
        kw = {"low": float(o["cam_low"]), "high": float(o["cam_high"]), "num_iter": int(o["par_iterations"]),
              "dilations": tuple(int(d) for d in o["par_dilations"])}
        w_lab = cam_pseudo_labels(s.features[-1], s.classifier.weight, batch.y, batch.student_pixels, **kw)
        n_lab = cam_pseudo_labels(t.features[-1], t.classifier.weight, batch.y, batch.teacher_pixels, **kw)
        confuse = float(o["confuse_value"])
        if all_classes:
            terms.update(self._group_terms(w_tok, n_tok, w_lab, n_lab, units))
        if run_add:
            terms["add"] = (
                relation_reconstruction_loss(n_tok[twins], w_tok[twins], n_lab[twins], w_lab[twins], confuse).mean()
                + relation_reconstruction_loss(w_tok[twins], n_tok[twins], w_lab[twins], n_lab[twins], confuse).mean()
            )
        return terms

    def _group_terms(self, w_tok: Tensor, n_tok: Tensor, w_lab: Tensor, n_lab: Tensor,
                     units: Units) -> dict[str, Tensor]:
        o = self.opts
        sizes = units.valid.sum(dim=1).tolist()
        codes = identity_codes(sizes)
        proto_w = self.qformer(units.pack(w_tok), units.valid, codes)
        proto_n = self.qformer(units.pack(n_tok), units.valid, codes)
        pro = released_contrastive_loss(proto_w.float(), proto_n.float(), float(o["temperature"]),
                                        float(o["similarity_divisor"]))
        sets = torch.stack([proto_w, proto_n], dim=1).flatten(0, 1)
        set_cls = F.cross_entropy(self.qformer.set_classifier(sets.mean(dim=1)), units.classes.repeat_interleave(2))
        confuse, original = float(o["confuse_value"]), bool(o["original_indexing"])
        den = torch.zeros((), device=w_tok.device)
        for k in range(units.count):
            rows = units.rows[k][units.valid[k]]
            den = den + pairwise_group_loss(n_tok[rows], w_tok[rows], n_lab[rows], w_lab[rows], confuse, original)
            den = den + pairwise_group_loss(w_tok[rows], n_tok[rows], w_lab[rows], n_lab[rows], confuse, original)
        return {"pro": pro, "set_cls": set_cls, "den": den}
