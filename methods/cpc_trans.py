"""CPC-Trans: cross-modal representation consistency (global tokens + class-token attention)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import WITH_TWINS

from .add import cosine_distance
from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import register


class ClassTokenAttention(nn.Module):
    """CPC-Trans's added attention module ("SAM"): a class token queries the patch tokens
    of the last feature map and the head-averaged attention weights are the map.

    Ma et al., MICCAI 2022: ``nn.MultiheadAttention(embed, heads, dropout=0.1)`` with the
    backbone's CLS token as the query over its own patch tokens; the output is discarded
    and only the ``(B, N_patches)`` attention map is used. A CNN has no CLS token; its
    analogue, the globally pooled feature that feeds the classifier, is the query here.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, class_token: Tensor, feature_map: Tensor) -> Tensor:
        """``(B, d)``, ``(B, d, h, w)`` -> ``(B, h, w)`` attention of the class token."""
        b, _, h, w = feature_map.shape
        patches = feature_map.flatten(2).transpose(1, 2)
        _, weights = self.attention(class_token[:, None, :], patches, patches, need_weights=True)
        return weights.view(b, h, w)


def _heads(dim: int, requested: int) -> int:
    heads = int(requested) if requested else max(1, dim // 64)
    if dim % heads:
        raise ValueError(f"cpc-trans: num_heads={heads} does not divide the token width {dim}; set option num_heads")
    return heads


def fixed_width_map(d_in: int, d_out: int, seed: int = 0) -> Tensor:
    """``(d_out, d_in)`` random matrix with orthonormal rows (``d_out <= d_in``) or columns
    (``d_out > d_in``), drawn from a local generator: a width map that keeps angles as far
    as the widths allow and is the same in every run."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(max(d_in, d_out), min(d_in, d_out), generator=g))
    return q.t().contiguous() if d_out <= d_in else q.contiguous()


def attention_map_distance(a: Tensor, b: Tensor) -> Tensor:
    """Per-row 1 - cos between two attention maps, ``b`` resized to ``a``'s grid if needed."""
    if a.shape[-2:] != b.shape[-2:]:
        b = F.interpolate(b[:, None], size=a.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return cosine_distance(a, b)


@register("cpc-trans")
class CPCTrans(Distiller):
    """Ma et al., "Toward Clinically Assisted Colorectal Polyp Recognition via Structured
    Cross-Modal Representation Consistency", MICCAI 2022; code WeijieMax/CPC-Trans.

    Consistency terms of the paper (code ``utils/utils.py``), between the WLI student and
    the frozen NBI teacher of the same row:

    * CGA (global alignment): 1 - cos(g^W, g^N) of the two modalities' global tokens,
      weight 1. Global token = the pooled embedding that feeds the classifier (the CNN's
      CLS token); the teacher's is the fixed target. When the two widths agree (ResNet-50
      both sides, and the suite's profiles) the student's token is compared as it is, as
      in the original, which has no map between the modalities. When they differ, the
      student's token goes through a *fixed* width map (:func:`fixed_width_map`: a seeded
      random matrix with orthonormal rows or columns, a buffer, never trained), so that
      only the student can lower the term: a trained map could absorb the alignment by
      itself while the student stays unchanged.
    * SAM (attention consistency): 1 - cos(a^W, a^N) of the two class-token-to-patch
      attention maps, weight 0.3 (the code's ``norm_coff``). The maps come from the
      attention module the paper adds (:class:`ClassTokenAttention`); as in the code one
      module serves both modalities (``share_attention=True``: the student's tokens pass
      through the same fixed width map as for CGA when the widths differ);
      ``share_attention=False`` gives one module
      per side. The teacher's map is resized to the student's grid when they differ.

    L = CE(WLI) + CGA + 0.3 SAM.

    How this differs from the paper: the original trains ONE ViT-S/16 on both modalities
    jointly (CE on WLI and on NBI, no frozen teacher) and uses its WLI head at test. Here
    the NBI side is the suite's frozen, separately trained teacher and only the WLI student
    (plus the attention module) learns; the shared-weight training is
    ``cpc-trans-shared``. The backbones are the profile's CNNs, not a ViT.

    Regimes: ``paired`` and ``all``. On ``all`` the unpaired rows carry class-matched NBI
    pseudo-pairs: CGA uses every row (a class-level alignment of global tokens), SAM is
    restricted to true-twin rows (``batch.twin``) because the attention maps of different
    lesions are not comparable; ``sam_on_pseudo_pairs=True`` uses every row for SAM too.
    """

    summary: ClassVar[str] = (
        "CPC-Trans: global-token (CGA) + class-token attention (SAM) consistency, frozen NBI teacher"
    )
    paper: ClassVar[str] = (
        "Ma et al., MICCAI 2022, Sec. 2 (CGA: 1 - cos of the modalities' global tokens, weight 1; SAM: 1 - cos of "
        "class-token attention maps, weight 0.3); code WeijieMax/CPC-Trans"
    )
    regimes: ClassVar[frozenset[str]] = WITH_TWINS
    main_regimes: ClassVar[frozenset[str]] = WITH_TWINS
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "cga": 1.0, "sam": 0.3}
    deviations: ClassVar[str] = (
        "Frozen NBI teacher and a trained WLI student instead of one shared ViT trained on both modalities "
        "(that variant is cpc-trans-shared); CNN backbones, so the global token is the pooled embedding and the "
        "attention module's query is that embedding. Equal widths: no map between the tokens (as the original). "
        "Different widths: a fixed, untrained random semi-orthogonal width map student->teacher, so the alignment "
        "can only fall through the student. On 'all', SAM uses true twins only (option sam_on_pseudo_pairs), "
        "CGA every row."
    )
    options: ClassVar[dict[str, Any]] = {
        "num_heads": 0,
        "dropout": 0.1,
        "share_attention": True,
        "sam_on_pseudo_pairs": False,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("cpc-trans needs a teacher (an NBI network); none was given")
        d_s, d_t = ctx.student.embedding_dim, ctx.teacher.embedding_dim
        if ctx.student.feature_channels[-1] != d_s or ctx.teacher.feature_channels[-1] != d_t:
            raise ValueError("cpc-trans expects the last feature map to be what is pooled into the embedding")
        # Fixed (buffer, not a parameter): a trained map could lower CGA without the student.
        self.register_buffer("width_map", fixed_width_map(d_s, d_t) if d_s != d_t else None, persistent=False)
        dropout = float(self.opts["dropout"])
        self.teacher_attention = ClassTokenAttention(d_t, _heads(d_t, self.opts["num_heads"]), dropout)
        self.student_attention: ClassTokenAttention | None = None
        if not self.opts["share_attention"]:
            self.student_attention = ClassTokenAttention(d_s, _heads(d_s, self.opts["num_heads"]), dropout)

    def to_teacher_width(self, tokens: Tensor) -> Tensor:
        """Student tokens ``(..., d_s)`` -> the teacher's width (unchanged when equal)."""
        if self.width_map is None:
            return tokens
        return tokens @ self.width_map.t().to(tokens.dtype)

    def _student_map(self, s: Outputs) -> Tensor:
        fmap = s.features[-1]
        if self.student_attention is not None:
            return self.student_attention(s.embedding, fmap)
        mapped = self.to_teacher_width(fmap.movedim(1, -1)).movedim(-1, 1)
        return self.teacher_attention(self.to_teacher_width(s.embedding), mapped)

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        out = {
            "ce": F.cross_entropy(s.logits, batch.y),
            "cga": cosine_distance(self.to_teacher_width(s.embedding), t.embedding.detach()).mean(),
        }
        rows = torch.ones_like(batch.twin, dtype=torch.bool) if self.opts["sam_on_pseudo_pairs"] else batch.twin.bool()
        if bool(rows.any()):
            a_s = self._student_map(s)[rows]
            a_t = self.teacher_attention(t.embedding.detach(), t.features[-1].detach())[rows]
            out["sam"] = attention_map_distance(a_s, a_t).mean()
        return out


@register("cpc-trans-shared")
class CPCTransShared(Distiller):
    """CPC-Trans as published: one backbone trained on both modalities.

    Ma et al., MICCAI 2022: the same network (here the student backbone) sees the WLI
    image and its NBI twin (``batch.teacher_x``, through :meth:`student_forward`);
    L = CE(WLI) + CE(NBI) + CGA + 0.3 SAM with CGA = 1 - cos of the two passes' global
    tokens (pooled embeddings) and SAM = 1 - cos of their class-token-to-patch attention
    maps from one shared attention module (:class:`ClassTokenAttention`), exactly the
    shared-weight structure of the code. There is no pretrained teacher
    (``needs_teacher = False``); the WLI pass's head is used at test (the network has one
    head for both modalities, as the ViT in the code).

    Differences from the paper: CNN backbone instead of ViT-S/16 (pooled embedding as
    the CLS token); the backbone's BatchNorm statistics are accumulated over both
    modalities (the ViT uses LayerNorm); the suite's optimiser and schedule.

    Regimes: ``paired`` and ``all``. On ``all`` the NBI pass of an unpaired row is a
    class-matched pseudo-pair: CE(NBI) and CGA use every row, SAM true twins only unless
    ``sam_on_pseudo_pairs=True``.
    """

    summary: ClassVar[str] = "CPC-Trans shared-weight: one network on WLI and NBI, CE on both + CGA + SAM"
    paper: ClassVar[str] = (
        "Ma et al., MICCAI 2022, Sec. 2 (shared encoder, CE on both modalities, CGA weight 1, SAM weight 0.3); "
        "code WeijieMax/CPC-Trans"
    )
    regimes: ClassVar[frozenset[str]] = WITH_TWINS
    main_regimes: ClassVar[frozenset[str]] = WITH_TWINS
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "ce_nbi": 1.0, "cga": 1.0, "sam": 0.3}
    deviations: ClassVar[str] = (
        "CNN backbone instead of ViT-S/16 (pooled embedding as CLS token, BatchNorm statistics shared by both "
        "modalities); on 'all', SAM uses true twins only (option sam_on_pseudo_pairs)."
    )
    needs_teacher: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {"num_heads": 0, "dropout": 0.1, "sam_on_pseudo_pairs": False}

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        d = ctx.student.embedding_dim
        self.attention = ClassTokenAttention(d, _heads(d, self.opts["num_heads"]), float(self.opts["dropout"]))

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if batch.teacher_x is None:
            raise ValueError("cpc-trans-shared needs the NBI images of the batch (batch.teacher_x)")
        n = self.student_forward(batch.teacher_x)
        out = {
            "ce": F.cross_entropy(s.logits, batch.y),
            "ce_nbi": F.cross_entropy(n.logits, batch.y),
            "cga": cosine_distance(s.embedding, n.embedding).mean(),
        }
        rows = torch.ones_like(batch.twin, dtype=torch.bool) if self.opts["sam_on_pseudo_pairs"] else batch.twin.bool()
        if bool(rows.any()):
            a_w = self.attention(s.embedding, s.features[-1])[rows]
            a_n = self.attention(n.embedding, n.features[-1])[rows]
            out["sam"] = attention_map_distance(a_w, a_n).mean()
        return out
