"""CRD: contrastive representation distillation with two momentum memory banks."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, DistillerContext, Outputs
from .registry import register

NCE_EPS = 1e-7


class Embed(nn.Module):
    """Linear projection to the contrast space followed by L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), p=2, dim=1)


def nce_loss(scores: Tensor, n_data: int, eps: float = NCE_EPS) -> Tensor:
    """Tian et al., Eq. 18 as in the authors' ``ContrastLoss``.

    ``scores`` is ``(B, 1 + K)`` with the positive in column 0, each entry
    ``exp(<v, m> / tau) / Z``; the noise distribution is uniform over the ``n_data`` rows
    of the bank, ``P_n = 1 / n_data``. Returns
    ``-(sum_i log h(pos_i) + sum_{i,k} log(1 - h(neg_ik))) / B`` with
    ``h(x) = x / (x + K P_n)``.
    """
    batch, negatives = scores.shape[0], scores.shape[1] - 1
    noise = negatives / float(n_data)
    positive, negative = scores[:, 0], scores[:, 1:]
    log_d1 = torch.log(positive / (positive + noise + eps))
    log_d0 = torch.log(noise / (negative + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / batch


def sample_other_class_rows(bank_labels: Tensor, anchor_labels: Tensor, k: int) -> Tensor:
    """``(B, k)`` distinct bank rows per anchor, uniformly among rows of another class
    (random keys, same-class rows masked, top-k). ``k`` must not exceed the number of
    other-class rows of any anchor's class."""
    keys = torch.rand(anchor_labels.shape[0], bank_labels.shape[0], device=bank_labels.device)
    keys = keys.masked_fill(bank_labels.unsqueeze(0) == anchor_labels.unsqueeze(1), -1.0)
    return keys.topk(k, dim=1).indices


def negatives_available(bank_labels: Tensor, anchor_labels: Tensor) -> int:
    """The fewest other-class bank rows over the anchor pool's classes."""
    classes = anchor_labels.unique()
    if classes.numel() == 0:
        return 0
    return min(int((bank_labels != c).sum()) for c in classes.tolist())


@torch.no_grad()
def momentum_update(bank: Tensor, rows: Tensor, values: Tensor, momentum: float) -> None:
    """``bank[r] <- normalise(momentum * bank[r] + (1 - momentum) * v)`` for the given rows
    only; a row that occurs more than once in ``rows`` takes the mean of its values."""
    unique, inverse = rows.unique(return_inverse=True)
    values = values.detach().to(bank.dtype)
    summed = torch.zeros(unique.shape[0], bank.shape[1], dtype=bank.dtype, device=bank.device)
    summed.index_add_(0, inverse, values)
    counts = torch.zeros(unique.shape[0], dtype=bank.dtype, device=bank.device)
    counts.index_add_(0, inverse, torch.ones_like(inverse, dtype=bank.dtype))
    mixed = momentum * bank[unique] + (1.0 - momentum) * summed / counts.unsqueeze(1)
    bank[unique] = F.normalize(mixed, p=2, dim=1)


@register("crd")
class CRD(Distiller):
    """Tian, Krishnan & Isola, "Contrastive Representation Distillation", ICLR 2020:
    NCE between student and teacher embeddings (Eq. 18), both directions, with negatives
    drawn from momentum memory banks.

    Mechanics follow the authors' code (RepDistiller ``crd/``): linear heads to 128-d with
    L2 normalisation for both networks (the teacher's head is trained; the teacher is
    not), a student bank and a teacher bank of 128-d rows initialised uniformly in
    ``+-1/sqrt(128/3)``, temperature 0.07, momentum 0.5, loss weight 0.8 with CE 1,
    negatives drawn without replacement from rows of *other classes*, and the NCE
    normalisation constant ``Z = mean(exp(s/tau)) * N`` estimated once, on the first
    batch, per direction. We keep that NCE form (not the softmax-contrastive variant) so
    the loss scale and its weight 0.8 mean what they mean in the paper's tables.

    Differences forced by this setting: the two networks see different image pools, so
    the student bank has one row per student training image (``batch.index``) and the
    teacher bank one per teacher image (``batch.teacher_index``), and ``P_n = 1/N`` uses
    the size of the bank contrasted against. The number of negatives is
    ``min(nce_k, fewest other-class rows of any class)``, so it never exceeds what exists.
    Banks are updated in :meth:`after_step`, after the optimiser step, from the detached
    embeddings of the batch (as the authors' update also uses pre-step embeddings).

    Unpaired data: the positive of a student anchor is the teacher-bank row of its
    class-matched NBI pseudo-pair (re-drawn each epoch), and symmetrically for a teacher
    anchor; on twin rows that is the true twin (the paper's "exact" mode), otherwise a
    random same-class image (its "relax" mode). Negatives are always other-class rows.
    """

    summary: ClassVar[str] = "CRD: NCE contrast between student and teacher embeddings with memory banks"
    paper: ClassVar[str] = "Tian, Krishnan & Isola, ICLR 2020, Eq. 18 (NCE with memory banks, both directions)"
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "crd": 0.8}
    deviations: ClassVar[str] = (
        "Two pools: the student bank is keyed by WLI training index and the teacher bank by NBI "
        "index. Positives are class-defined: the other bank's row of the row's twin, or on "
        "unpaired rows of its class-matched pseudo-pair (a random same-class image, the paper "
        "code's 'relax' mode); negatives are other-class rows. K = min(16384, fewest "
        "other-class rows), never more than exist. NCE with Z estimated on the first batch, "
        "as in the authors' code."
    )
    teacher_augmented: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5}

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("crd needs a teacher; the run has none")
        dim = int(self.opts["feat_dim"])
        self.embed_s = Embed(ctx.student.embedding_dim, dim)
        self.embed_t = Embed(ctx.teacher.embedding_dim, dim)
        student_labels = torch.as_tensor(ctx.student_labels, dtype=torch.long).reshape(-1)
        teacher_labels = torch.as_tensor(ctx.teacher_labels, dtype=torch.long).reshape(-1)
        for pool, labels, size in (
            ("student", student_labels, ctx.num_student_train),
            ("teacher", teacher_labels, ctx.num_teacher_train),
        ):
            if labels.numel() != size:
                raise ValueError(
                    f"crd: {pool}_labels has {labels.numel()} entries but num_{pool}_train is {size}; "
                    "the context must carry one label per training image of that pool"
                )
        self.register_buffer("student_labels", student_labels, persistent=False)
        self.register_buffer("teacher_labels", teacher_labels, persistent=False)
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("student_bank", torch.rand(ctx.num_student_train, dim) * 2 * stdv - stdv)
        self.register_buffer("teacher_bank", torch.rand(ctx.num_teacher_train, dim) * 2 * stdv - stdv)
        # NCE normalisation constants per direction; negative until set on the first batch.
        self.register_buffer("z_student_anchor", torch.tensor(-1.0))
        self.register_buffer("z_teacher_anchor", torch.tensor(-1.0))
        nce_k = int(self.opts["nce_k"])
        # Student anchors draw negatives from the teacher bank, and vice versa.
        self.k_student_anchor = min(nce_k, negatives_available(teacher_labels, student_labels))
        self.k_teacher_anchor = min(nce_k, negatives_available(student_labels, teacher_labels))
        if min(self.k_student_anchor, self.k_teacher_anchor) < 1:
            raise ValueError(
                "crd needs negatives of another class in both pools, but a pool holds a single class; "
                "check the dataset's training split or use a method without a contrastive bank"
            )
        self._pending: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    def _check_rows(self, rows: Tensor, labels: Tensor, y: Tensor, field: str) -> None:
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= labels.shape[0]):
            raise IndexError(
                f"crd: batch.{field} holds {int(rows.min())}..{int(rows.max())} but its pool has "
                f"{labels.shape[0]} images; the harness must index the pool the context describes"
            )
        if not torch.equal(labels[rows], y):
            raise ValueError(
                f"crd: the labels of batch.{field} rows differ from batch.y; batches must be class-matched"
            )

    def _contrast(
        self, anchor: Tensor, bank: Tensor, bank_labels: Tensor, positives: Tensor, y: Tensor, k: int, z: Tensor
    ) -> Tensor:
        """NCE of ``anchor`` rows against their positive bank rows and ``k`` negatives."""
        negatives = sample_other_class_rows(bank_labels, y, k)
        rows = torch.cat([positives.unsqueeze(1), negatives], dim=1)
        keys = bank[rows]  # (B, 1 + k, D); buffers carry no gradient
        # exp(1 / 0.07) ~ 1.6e6 overflows float16: score in float32 whatever the autocast.
        with torch.autocast(device_type=anchor.device.type, enabled=False):
            similarity = torch.einsum("bkd,bd->bk", keys.float(), anchor.float())
            scores = torch.exp(similarity / float(self.opts["nce_t"]))
        if float(z) < 0:
            z.fill_(float(scores.detach().mean()) * bank.shape[0])
        return nce_loss(scores / float(z), n_data=bank.shape[0])

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        device = self.student_bank.device
        index = batch.index.to(device=device, dtype=torch.long)
        teacher_index = batch.teacher_index.to(device=device, dtype=torch.long)
        y = batch.y.to(device=device, dtype=torch.long)
        self._check_rows(index, self.student_labels, y, "index")
        self._check_rows(teacher_index, self.teacher_labels, y, "teacher_index")

        v_s = self.embed_s(s.embedding)
        v_t = self.embed_t(t.embedding.detach())
        # Student anchor vs teacher bank: the positive is the row's twin or pseudo-pair.
        loss_s = self._contrast(
            v_s, self.teacher_bank, self.teacher_labels, teacher_index, y, self.k_student_anchor, self.z_student_anchor
        )
        # Teacher anchor vs student bank: the positive is the student image of the row.
        loss_t = self._contrast(
            v_t, self.student_bank, self.student_labels, index, y, self.k_teacher_anchor, self.z_teacher_anchor
        )
        if torch.is_grad_enabled():
            self._pending.append((index, v_s.detach(), teacher_index, v_t.detach()))
        return {"ce": F.cross_entropy(s.logits, batch.y), "crd": loss_s + loss_t}

    def after_step(self, batch: Batch) -> None:
        """Momentum-update the bank rows of the batch's images (and only those)."""
        momentum = float(self.opts["nce_m"])
        for index, v_s, teacher_index, v_t in self._pending:
            momentum_update(self.student_bank, index, v_s, momentum)
            momentum_update(self.teacher_bank, teacher_index, v_t, momentum)
        self._pending.clear()
