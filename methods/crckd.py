"""CRCKD: categorical relation-preserving contrastive knowledge distillation.

Xing, Hou, Li, Yuan, Li & Meng, "Categorical Relation-Preserving Contrastive Knowledge
Distillation for Medical Image Classification", MICCAI 2021 (arXiv:2107.03225); released
code hathawayxxh/CRCKD. The teacher is the mean teacher (an exponential moving average
of the student's weights, Tarvainen & Valpola 2017), and the student learns from it
through three terms besides the class-weighted cross-entropy:

* **consistency** (mean-teacher loss): KL(p_teacher || p_student) between the logits,
  with the sigmoid ramp-up ``exp(-5 (1 - e/L)^2)`` of Laine & Aila (2017) over the first
  ``L`` epochs (the released code: 30 of 80).
* **CCD** (class-guided contrastive distillation, the paper's Sec. 2.2): the CRD-style
  NCE objective of Tian et al. (ICLR 2020, Eq. 18) with two memory banks of 128-d
  embeddings. Each student embedding is contrasted with P same-class entries of the
  teacher bank (its own entry first) against K other-class entries, and symmetrically
  each teacher embedding with the student bank; tau = 0.07, bank momentum 0.5.
* **CRP** (categorical relation preserving, Sec. 2.3): the batch's similarities to the
  class centroids of each bank (mean of the ReLU'd bank entries of a class) form a
  relation distribution; L = KL(softmax(f_t c_t^T / tau) || softmax(f_s c_s^T / tau)),
  centroids and teacher side detached.

Schedule of the released code (``train_CRCKD.py``): CCD from the first epoch;
consistency and CRP from epoch 20 of 80 (``begin_ema``), scaled here to the run's epochs.

``crckd`` is the faithful same-modality method. ``crckd-nbi`` keeps every term but
replaces the mean teacher by the suite's frozen teacher (the NBI network in the
cross-modal regimes), whose input is the batch's teacher-side image.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL, Regime

from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import register

_EPS = 1e-7


# --------------------------------------------------------------------------------------
# Small pieces, each testable on its own
# --------------------------------------------------------------------------------------
def sigmoid_rampup(current: float, length: float) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = clip(current / length, 0, 1)``; 1 when ``length <= 0``."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(current / length, 0.0), 1.0)
    return float(math.exp(-5.0 * phase * phase))


def inverse_frequency_weights(labels: Tensor, num_classes: int) -> Tensor:
    """``N / n_c`` per class (the released ``CLASS_WEIGHT``); 0 for a class with no images."""
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / counts.clamp_min(1), torch.zeros_like(counts))
    return weights.float()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """One mean-teacher update; returns the rate ``alpha`` used.

    ``alpha = min(1 - 1/(step + 1), decay)`` (the true average over the first steps, as
    the released ``update_ema_variables``); ``ema = alpha * ema + (1 - alpha) * model``
    for every parameter and floating-point buffer (BatchNorm statistics); integer
    buffers are copied.
    """
    alpha = min(1.0 - 1.0 / (step + 1), decay)
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.mul_(alpha).add_(p.detach().to(e.dtype), alpha=1.0 - alpha)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        if e.dtype.is_floating_point:
            e.mul_(alpha).add_(b.detach().to(e.dtype), alpha=1.0 - alpha)
        else:
            e.copy_(b)
    return alpha


def random_rot_flip(x: Tensor) -> Tensor:
    """Each image flipped vertically with probability 1/2, then rotated by k*90 degrees,
    k uniform in 0..3 (the released ``transforms_for_rot``). Square images only."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"random_rot_flip needs square images, got {tuple(x.shape[-2:])}")
    b = x.shape[0]
    flip = torch.rand(b, device=x.device) < 0.5
    turns = torch.randint(0, 4, (b,), device=x.device)
    out = torch.where(flip[:, None, None, None], x.flip(-2), x)
    rotated = out.clone()
    for k in range(1, 4):
        rows = turns == k
        if rows.any():
            rotated[rows] = torch.rot90(out[rows], k, dims=(-2, -1))
    return rotated


class Embed(nn.Module):
    """Linear projection to the contrastive space, L2-normalised (CRD's ``Embed``)."""

    def __init__(self, dim_in: int, dim_out: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1).float()), dim=1)


class ClassIndex(nn.Module):
    """Positions of one training pool grouped by class, for drawing bank entries.

    :meth:`sample` returns, for each anchor, P positions of its class (its own first)
    followed by K positions of other classes, drawn without replacement. P and K are
    capped by what the pool holds: P by the smallest class, K by the fewest other-class
    images of any class.
    """

    def __init__(self, labels: Tensor, num_classes: int, num_pos: int, num_neg: int) -> None:
        super().__init__()
        labels = torch.as_tensor(labels, dtype=torch.long).cpu()
        counts = torch.bincount(labels, minlength=num_classes)
        present = counts[counts > 0]
        if len(present) < 2:
            raise ValueError("class-guided contrastive distillation needs images of at least two classes")
        order = torch.argsort(labels, stable=True)
        offsets = torch.zeros(num_classes + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        pos_in_class = torch.empty_like(labels)
        pos_in_class[order] = torch.arange(len(labels)) - offsets[labels[order]]
        self.num_pos = int(min(num_pos, int(present.min())))
        self.num_neg = int(min(num_neg, int((len(labels) - present).min())))
        self.register_buffer("labels", labels, persistent=False)
        self.register_buffer("order", order, persistent=False)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("pos_in_class", pos_in_class, persistent=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def class_members(self, c: int) -> Tensor:
        return self.order[self.offsets[c] : self.offsets[c + 1]]

    def class_others(self, c: int) -> Tensor:
        return torch.cat([self.order[: self.offsets[c]], self.order[self.offsets[c + 1] :]])

    def sample(self, anchors: Tensor) -> Tensor:
        """``(B, P + K)`` pool positions for anchor positions ``anchors`` ``(B,)``."""
        anchors = anchors.long()
        out = torch.empty(len(anchors), self.num_pos + self.num_neg, dtype=torch.long, device=anchors.device)
        anchor_labels = self.labels[anchors]
        for c in torch.unique(anchor_labels).tolist():
            rows = torch.nonzero(anchor_labels == c).flatten()
            members, others = self.class_members(c), self.class_others(c)
            # Random scores pick a subset without replacement; the anchor's own entry gets
            # a score above every draw, so topk puts it in column 0.
            scores = torch.rand(len(rows), len(members), device=anchors.device)
            scores[torch.arange(len(rows), device=anchors.device), self.pos_in_class[anchors[rows]]] = 2.0
            pos = members[scores.topk(self.num_pos, dim=1).indices]
            neg_scores = torch.rand(len(rows), len(others), device=anchors.device)
            neg = others[neg_scores.topk(self.num_neg, dim=1).indices]
            out[rows] = torch.cat([pos, neg], dim=1)
        return out


class ContrastBank(nn.Module):
    """One memory bank of L2-normalised embeddings with its NCE normalising constant Z.

    Initialised uniform in ``[-1/sqrt(d/3), 1/sqrt(d/3)]`` as the released ``ContrastMemory``;
    ``Z`` is set from the first batch it scores (mean score times bank size) and then fixed.
    """

    def __init__(self, size: int, dim: int, momentum: float) -> None:
        super().__init__()
        stdv = 1.0 / math.sqrt(dim / 3)
        self.momentum = momentum
        self.register_buffer("memory", torch.rand(size, dim).mul_(2 * stdv).add_(-stdv))
        self.register_buffer("z", torch.tensor(-1.0))

    def __len__(self) -> int:
        return int(self.memory.shape[0])

    def scores(self, anchors: Tensor, positions: Tensor, temperature: float) -> Tensor:
        """``exp(<bank[positions[b, j]], anchors[b]> / tau) / Z``, shape ``(B, P + K)``."""
        weight = self.memory[positions].detach()  # (B, P+K, d)
        out = torch.exp(torch.bmm(weight, anchors.float().unsqueeze(2)).squeeze(2) / temperature)
        if float(self.z) < 0:
            self.z.fill_(float(out.detach().mean()) * len(self))
        return out / self.z

    @torch.no_grad()
    def update(self, positions: Tensor, values: Tensor) -> None:
        """``bank[i] = normalise(m * bank[i] + (1 - m) * v)`` for each row."""
        mixed = self.memory[positions] * self.momentum + values.detach().float() * (1.0 - self.momentum)
        self.memory.index_copy_(0, positions, F.normalize(mixed, dim=1))

    def centroids(self, index: ClassIndex, num_classes: int) -> Tensor:
        """``(C, d)`` mean of the ReLU'd entries of each class (the released ``anchor_type=center``)."""
        sums = torch.zeros(num_classes, self.memory.shape[1], device=self.memory.device)
        sums.index_add_(0, index.labels, F.relu(self.memory))
        counts = torch.bincount(index.labels, minlength=num_classes).clamp_min(1)
        return sums / counts[:, None]


def nce_loss(scores: Tensor, num_pos: int, bank_size: int) -> Tensor:
    """CRD's NCE loss (Tian et al. 2020, Eq. 18) with P positives per anchor.

    With ``m = K`` noise samples and noise probability ``Pn = 1/N``:
    ``h(x) = x / (x + m Pn)``; loss = -mean_b[ mean_p log h(x_bp) + sum_k log(1 - h(x_bk)) ]
    (the released ``ContrastLoss``: the P positives are averaged, the K negatives summed).
    """
    num_neg = scores.shape[1] - num_pos
    noise = num_neg / float(bank_size)
    pos = scores[:, :num_pos]
    neg = scores[:, num_pos:]
    log_d1 = torch.log(pos / (pos + noise + _EPS))
    log_d0 = torch.log(noise / (neg + noise + _EPS))
    return -(log_d1.mean(dim=1) + log_d0.sum(dim=1)).mean()


def relation_kl(f_s: Tensor, anchors_s: Tensor, f_t: Tensor, anchors_t: Tensor, temperature: float) -> Tensor:
    """CRP: KL(softmax(f_t a_t^T / tau) || softmax(f_s a_s^T / tau)), batch mean.

    Anchors are L2-normalised and detached; the teacher side is a fixed target.
    """
    rel_s = f_s @ F.normalize(anchors_s.detach(), dim=1).t() / temperature
    rel_t = (f_t @ F.normalize(anchors_t.detach(), dim=1).t() / temperature).detach()
    return F.kl_div(F.log_softmax(rel_s, dim=1), F.softmax(rel_t, dim=1), reduction="batchmean")


def softmax_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(softmax(z_t) || softmax(z_s)) summed over classes, mean over rows (the released
    ``softmax_kl_loss`` summed and divided by the batch size); the target is detached."""
    target = F.softmax(teacher_logits.detach().float(), dim=1)
    return F.kl_div(F.log_softmax(student_logits.float(), dim=1), target, reduction="batchmean")


# --------------------------------------------------------------------------------------
# The methods
# --------------------------------------------------------------------------------------
class _CRCKDBase(Distiller):
    """Shared losses of ``crckd`` and ``crckd-nbi``; subclasses say where the teacher is."""

    paper: ClassVar[str] = (
        "Xing et al., MICCAI 2021, arXiv:2107.03225: mean-teacher consistency, CCD (Sec. 2.2; NCE of "
        "Tian et al. 2020 Eq. 18 with class-guided positives/negatives), CRP (Sec. 2.3)"
    )
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "consistency": 1.0, "ccd": 0.1, "crp": 1.0}
    options: ClassVar[dict[str, Any]] = {
        "feat_dim": 128,
        "nce_p": 20,
        "nce_k": 4096,
        "nce_t": 0.07,
        "nce_m": 0.5,
        "start_fraction": 0.25,
        "rampup_fraction": 0.375,
        "weighted_ce": True,
    }

    shared_pool: ClassVar[bool] = False
    """``True`` when teacher and student embeddings index the same pool (the mean teacher)."""

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        o = self.opts
        dim = int(o["feat_dim"])
        teacher_spec = ctx.student if self.shared_pool or ctx.teacher is None else ctx.teacher
        self.embed_s = Embed(ctx.student.embedding_dim, dim)
        self.embed_t = Embed(teacher_spec.embedding_dim, dim)
        p, k = int(o["nce_p"]), int(o["nce_k"])
        self.index_s = ClassIndex(ctx.student_labels, ctx.num_classes, p, k)
        self.index_t = self.index_s if self.shared_pool else ClassIndex(ctx.teacher_labels, ctx.num_classes, p, k)
        self.bank_s = ContrastBank(len(self.index_s), dim, float(o["nce_m"]))
        self.bank_t = ContrastBank(len(self.index_t), dim, float(o["nce_m"]))
        weights = (
            inverse_frequency_weights(torch.as_tensor(ctx.student_labels), ctx.num_classes)
            if o["weighted_ce"]
            else torch.ones(ctx.num_classes)
        )
        self.register_buffer("class_weight", weights, persistent=False)

    # -- schedule -------------------------------------------------------------------------
    def start_epoch(self, num_epochs: int) -> int:
        """First epoch of the consistency and CRP terms (the released 20 of 80, scaled)."""
        return round(float(self.opts["start_fraction"]) * num_epochs)

    def rampup(self, epoch: int, num_epochs: int) -> float:
        return sigmoid_rampup(epoch, float(self.opts["rampup_fraction"]) * num_epochs)

    # -- teacher side ---------------------------------------------------------------------
    def teacher_side(self, t: Outputs | None, batch: Batch) -> tuple[Outputs, Tensor]:
        """The teacher's outputs for the batch and their positions in the teacher bank."""
        raise NotImplementedError

    # -- losses ---------------------------------------------------------------------------
    def ccd_and_crp(self, f_s: Tensor, f_t: Tensor, s_pos: Tensor, t_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Both CCD directions and CRP; updates the banks (after reading them) in training."""
        tau = float(self.opts["nce_t"])
        sample_t = self.index_t.sample(t_pos)
        sample_s = sample_t if self.index_t is self.index_s else self.index_s.sample(s_pos)
        # Student anchors against the teacher bank, teacher anchors against the student bank.
        out_s = self.bank_t.scores(f_s, sample_t, tau)
        out_t = self.bank_s.scores(f_t, sample_s, tau)
        ccd = nce_loss(out_s, self.index_t.num_pos, len(self.bank_t)) + nce_loss(
            out_t, self.index_s.num_pos, len(self.bank_s)
        )
        if self.training:
            self.bank_s.update(s_pos, f_s)
            self.bank_t.update(t_pos, f_t)
        c = self.ctx.num_classes
        crp = relation_kl(f_s, self.bank_s.centroids(self.index_s, c), f_t, self.bank_t.centroids(self.index_t, c), tau)
        return ccd, crp

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        t_out, t_pos = self.teacher_side(t, batch)
        ce = F.cross_entropy(s.logits, batch.y, weight=self.class_weight.to(s.logits.dtype))
        f_s = self.embed_s(s.embedding)
        f_t = self.embed_t(t_out.embedding.detach())
        ccd, crp = self.ccd_and_crp(f_s, f_t, batch.index, t_pos)
        terms = {"ce": ce, "ccd": ccd}
        if batch.epoch >= self.start_epoch(batch.num_epochs):
            ramp = self.rampup(batch.epoch, batch.num_epochs)
            terms["consistency"] = ramp * softmax_kl(s.logits, t_out.logits)
            terms["crp"] = crp
        return terms


_SCHEDULE_NOTE = (
    "Schedule as released, scaled to the run: CCD from the first epoch; consistency and CRP from "
    "25% of the epochs (20 of 80), consistency ramped up by exp(-5(1-e/L)^2) over 37.5% of the epochs "
    "(30 of 80); the returned consistency term already carries the ramp. The released code multiplies "
    "the CCD term by --CCD_b4_weight twice once epoch 20 is reached (0.1 x 0.1 = 0.01 effective, 0.1 "
    "before); the suite uses the paper's weight 0.1 throughout. The 128-d linear heads take the "
    "backbone's pooled embedding (the released DenseNet-121 adds a 128-d fc before its classifier). "
    "P = 20 positives and K = 4096 negatives are capped by the pool (smallest class; fewest "
    "other-class images). Class-weighted cross-entropy (N/n_c) as released."
)


@register("crckd")
class CRCKD(_CRCKDBase):
    """Faithful CRCKD: the mean teacher (EMA of the student, decay 0.99) supervises it.

    The EMA copy is built in :meth:`bind` (frozen, eval mode), updated after every
    optimiser step, and sees the student's batch after a random 90-degree rotation and
    vertical flip per image, as the released ``transforms_for_rot``. Both memory banks
    index the student pool (``batch.index``).
    """

    summary: ClassVar[str] = "CRCKD: mean teacher + class-guided contrastive (two banks) + categorical relation KD"
    regimes: ClassVar[frozenset[str]] = frozenset({Regime.SAME})
    main_regimes: ClassVar[frozenset[str]] = frozenset({Regime.SAME})
    needs_teacher: ClassVar[bool] = False
    transforms_inputs: ClassVar[bool] = True  # the mean teacher sees a rotated/flipped student image
    shared_pool: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {**_CRCKDBase.options, "ema_decay": 0.99}
    deviations: ClassVar[str] = (
        _SCHEDULE_NOTE + " The EMA also averages BatchNorm statistics and runs in eval mode (the released "
        "EMA model runs in train mode and keeps its own batch statistics). The EMA input is the harness's "
        "augmented student view with a random rot90/flip; the released code draws a second independent "
        "affine augmentation before it."
    )

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        super().bind(student, teacher)
        self.ema = copy.deepcopy(student)
        self.ema.requires_grad_(False)
        self.ema.eval()

    def student_parameters(self) -> list[nn.Parameter]:
        ema = {id(p) for p in self.ema.parameters()} if hasattr(self, "ema") else set()
        return [p for p in super().student_parameters() if id(p) not in ema]

    @torch.no_grad()
    def teacher_forward(self, x: Tensor) -> Outputs:
        if not hasattr(self, "ema"):
            raise RuntimeError("crckd: bind() must be called before training (it builds the mean teacher)")
        self.ema.eval()
        return self.ema(x).detach()

    def teacher_side(self, t: Outputs | None, batch: Batch) -> tuple[Outputs, Tensor]:
        return self.teacher_forward(random_rot_flip(batch.student_x)), batch.index

    def after_step(self, batch: Batch) -> None:
        ema_update(self.ema, self.student, float(self.opts["ema_decay"]), batch.step)


@register("crckd-nbi")
class CRCKDFrozenTeacher(_CRCKDBase):
    """CRCKD with the suite's frozen teacher in place of the mean teacher.

    The teacher embeds the batch's teacher-side image (the NBI twin on paired rows, a
    same-class NBI pseudo-pair otherwise); the teacher bank indexes the teacher pool
    (``batch.teacher_index``) with the teacher pool's labels, the student bank the
    student pool. CCD and CRP are class-level and need no pairs. The consistency term is
    kept: on twins it is the mean-teacher loss across modalities, on pseudo-pairs it
    matches the teacher's prediction for a same-class image (as Hinton KD does there).
    """

    summary: ClassVar[str] = (
        "CRCKD with the frozen NBI teacher instead of the mean teacher (class-guided terms need no pairs)"
    )
    regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    needs_teacher: ClassVar[bool] = True
    teacher_augmented: ClassVar[bool] = False
    deviations: ClassVar[str] = (
        "Cross-modal variant (not in the paper): the frozen NBI teacher replaces the EMA teacher, so no "
        "EMA update and no rot90/flip of the teacher input. Teacher bank over the NBI pool with NBI labels. "
        "The consistency term compares with the teacher's logits on the class-matched pseudo-pair on "
        "unpaired rows. " + _SCHEDULE_NOTE
    )

    def teacher_side(self, t: Outputs | None, batch: Batch) -> tuple[Outputs, Tensor]:
        if t is None:
            raise RuntimeError("crckd-nbi needs the frozen teacher's outputs (needs_teacher=True)")
        return t, batch.teacher_index
