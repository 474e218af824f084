"""SSD-KD: self-supervised diverse knowledge distillation.

Wang, Wang, Cai, Lee, Miao & Wang, "SSD-KD: A Self-supervised Diverse Knowledge
Distillation Method for Lightweight Skin Lesion Classification Using Dermoscopic
Images", Medical Image Analysis 84 (2023) 102693 (arXiv:2203.11490); released code
enkiwang/Portable-Skin-Lesion-Diagnosis (``experiment/isic/isic_ssd_kd.py``,
``kd_losses/ssd_kd.py``).

Every image enters both networks in four rotations (0, 90, 180, 270 degrees), laid out
sample-major: row ``4 b + r`` is image ``b`` rotated ``r`` quarter turns. Before the
student trains, a two-layer projection head on the frozen teacher's pooled feature
learns to tell which original each rotated view came from (cosine similarities of the
3B rotated views to the B originals, cross-entropy over the originals). The student
then minimises (weights as released):

* ``ce`` (0.1): class-weighted cross-entropy on the 0-degree view;
* ``kd`` (0.9): Hinton KD at T = 4 on the 0-degree view;
* ``tf`` (2.7): transformation KD at T = 4 on the rotated views, keeping the views whose
  label the teacher ranks first plus a ratio (1.0) of the others, best-ranked first;
* ``ss`` (10): self-supervised relation KD, KL at T = 0.5 between the teacher's and the
  student's rotated-to-original similarity matrices (the student has its own projection
  head), keeping the rows the teacher gets right plus 75% of the others;
* the dual relational term (1): ``rkd`` = RKD distance (25) + angle (50) on the pooled
  features of all 4B rows (Park et al., CVPR 2019, Eqs. 3-6), and ``gram`` (lambda = 1000)
  = sqrt(MSE) between the channel Gram matrices ``F F^T / (C H W)`` of the teacher's last
  feature map and the student's last map passed through a convolutional regressor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, DistillerContext, Outputs
from .crckd import inverse_frequency_weights
from .kd import kd_loss
from .registry import register

NUM_ROTATIONS = 4


# --------------------------------------------------------------------------------------
# Rotation layout
# --------------------------------------------------------------------------------------
def rotation_batch(x: Tensor, turns: tuple[int, ...] = (0, 1, 2, 3)) -> Tensor:
    """``(B * len(turns), C, H, W)``: each image followed by its rotations, sample-major.

    Row ``len(turns) * b + j`` is ``rot90(x[b], turns[j])`` in the image plane (the
    direction of ``numpy.rot90`` on ``H x W``, as the released data loader).
    """
    views = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in turns], dim=1)
    return views.reshape(-1, *x.shape[1:])


def original_rows(n_rows: int, device: torch.device | None = None) -> Tensor:
    """Boolean mask of the 0-degree rows in a rotation batch of ``n_rows`` rows."""
    return torch.arange(n_rows, device=device) % NUM_ROTATIONS == 0


def rotation_similarity(features: Tensor) -> Tensor:
    """``(3B, B)`` cosine similarity of every rotated view to every original.

    Rows follow the rotated views in batch order (image 0 at 90/180/270, image 1, ...);
    the right column of row ``r`` is ``r // 3``.
    """
    n = features.shape[0]
    nor = original_rows(n, features.device)
    originals = F.normalize(features[nor].float(), dim=1)
    rotated = F.normalize(features[~nor].float(), dim=1)
    return rotated @ originals.t()


def rotation_targets(batch_size: int, device: torch.device | None = None) -> Tensor:
    """The original each rotated view came from: ``[0, 0, 0, 1, 1, 1, ...]``."""
    return torch.arange(batch_size, device=device).repeat_interleave(NUM_ROTATIONS - 1)


def ranked_keep(scores: Tensor, target: Tensor, ratio: float) -> Tensor:
    """Rows to distil from, in ascending order.

    The rank of ``target[i]`` among ``scores[i]`` (0 = top) is computed per row; every
    row with rank 0 is kept plus ``int(ratio * n_wrong)`` of the others, those whose
    target ranks best first (the released "error level ranking").
    """
    order = torch.argsort(scores, dim=1, descending=True)
    rank = torch.argmax((order == target[:, None]).long(), dim=1)
    n_wrong = int((rank > 0).sum())
    n_keep = (scores.shape[0] - n_wrong) + int(n_wrong * ratio)
    keep = torch.argsort(rank, stable=True)[:n_keep]
    return torch.sort(keep).values


# --------------------------------------------------------------------------------------
# Relational terms
# --------------------------------------------------------------------------------------
def pairwise_distance(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distance matrix with a zero diagonal."""
    sq = x.pow(2).sum(dim=1)
    d = (sq[None, :] + sq[:, None] - 2.0 * x @ x.t()).clamp_min(eps).sqrt()
    return d * (1.0 - torch.eye(len(x), device=x.device, dtype=d.dtype))


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD distance loss: Huber between mean-normalised pairwise distances (Park et al. Eq. 3-4)."""
    with torch.no_grad():
        t_d = pairwise_distance(teacher.float())
        t_d = t_d / t_d[t_d > 0].mean()
    s_d = pairwise_distance(student.float())
    s_d = s_d / s_d[s_d > 0].mean()
    return F.smooth_l1_loss(s_d, t_d)


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD angle loss: Huber between the cosines of every triplet's angle (Park et al. Eq. 5-6)."""

    def cosines(x: Tensor) -> Tensor:
        diff = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()

    with torch.no_grad():
        t_a = cosines(teacher.float())
    return F.smooth_l1_loss(cosines(student.float()), t_a)


def gram_matrix(features: Tensor) -> Tensor:
    """``(N, C, C)`` channel Gram matrices ``F F^T / (C H W)`` of ``(N, C, H, W)`` maps."""
    n, c, h, w = features.shape
    flat = features.float().reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def channel_relation_loss(student_map: Tensor, teacher_map: Tensor) -> Tensor:
    """sqrt(MSE(Gram_s, Gram_t)) (the released ``cr_dist``); the teacher map is detached."""
    mse = F.mse_loss(gram_matrix(student_map), gram_matrix(teacher_map.detach()))
    return mse.clamp_min(1e-12).sqrt()


class ConvReg(nn.Module):
    """Convolutional regressor from the student's map to the teacher's channels and size
    (FitNets' regressor as in RepDistiller and the released code), conv -> BN -> ReLU."""

    def __init__(self, s_channels: int, s_size: tuple[int, int], t_channels: int, t_size: tuple[int, int]) -> None:
        super().__init__()
        (sh, sw), (th, tw) = s_size, t_size
        layers: list[nn.Module]
        if sh == 2 * th and sw == 2 * tw:
            layers = [nn.Conv2d(s_channels, t_channels, 3, stride=2, padding=1)]
        elif 2 * sh == th and 2 * sw == tw:
            layers = [nn.ConvTranspose2d(s_channels, t_channels, 4, stride=2, padding=1)]
        elif sh >= th and sw >= tw:
            layers = [nn.Conv2d(s_channels, t_channels, (1 + sh - th, 1 + sw - tw))]
        else:  # not in the released code: any other upscaling goes through interpolation
            layers = [
                nn.Upsample(size=(th, tw), mode="bilinear", align_corners=False),
                nn.Conv2d(s_channels, t_channels, 1),
            ]
        self.body = nn.Sequential(*layers, nn.BatchNorm2d(t_channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def projection_head(dim: int) -> nn.Sequential:
    """The released self-supervision head: Linear(d, d) -> ReLU -> Linear(d, d)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


def interleave_rotations(first: Outputs, rest: Outputs) -> Outputs:
    """Join the 0-degree outputs ``(B, ...)`` and the 90/180/270 outputs ``(3B, ...)``
    (sample-major) into one rotation-batch :class:`Outputs` ``(4B, ...)``."""

    def join(a: Tensor, b: Tensor) -> Tensor:
        n = a.shape[0]
        both = torch.cat([a.unsqueeze(1), b.reshape(n, NUM_ROTATIONS - 1, *b.shape[1:])], dim=1)
        return both.reshape(n * NUM_ROTATIONS, *a.shape[1:])

    return Outputs(
        logits=join(first.logits, rest.logits),
        embedding=join(first.embedding, rest.embedding),
        features=[join(first.features[-1], rest.features[-1])],
        classifier=first.classifier,
    )


# --------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------
@register("ssd-kd")
class SSDKD(Distiller):
    """Wang et al., MedIA 2023 (arXiv:2203.11490), Sec. 3: L = 0.1 L_wce + 0.9 L_kd + 2.7 L_tf
    + 10 L_ss + 1 (L_rkd + 1000 L_gram), the weights of the released ``isic_ssd_kd.py``.

    The teacher's projection head is fitted in :meth:`prepare` (backbone frozen), then frozen.
    ``same`` is the paper's setting (teacher and student see the same image). In the
    cross-modal regimes the teacher sees the four rotations of the batch's teacher-side
    image (the NBI twin, or a class-matched NBI pseudo-pair), so the logit terms match the
    teacher's prediction for a same-class image and the relational terms (rotation
    similarities, RKD, Gram) transfer the structure of the teacher's views row by row.
    """

    summary: ClassVar[str] = "SSD-KD: 4-rotation input; KD + transformation KD + self-supervised relation KD + RKD/Gram"
    transforms_inputs: ClassVar[bool] = True  # the student and teacher see four rotations of the batch
    paper: ClassVar[str] = (
        "Wang et al., Medical Image Analysis 84 (2023) 102693, arXiv:2203.11490, Sec. 3 (Eqs. for L_wce, "
        "L_kd, L_tf, L_ss, L_dr); released isic_ssd_kd.py and kd_losses/ssd_kd.py"
    )
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    # On cross-modal datasets the default grid runs it where Hinton KD runs; single-modality
    # datasets always run ``same``.
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {
        "ce": 0.1,
        "kd": 0.9,
        "tf": 2.7,
        "ss": 10.0,
        "rkd": 1.0,
        "gram": 1000.0,
    }
    deviations: ClassVar[str] = (
        "The dual relational weight (1) is split into two logged terms: rkd (1 x (25 dist + 50 angle)) and "
        "gram (1 x 1000). The student sees all four rotations in the harness's one forward pass of the step, as "
        "released (student_input); the teacher's 0-degree outputs are the harness's, the three rotations are "
        "forwarded (identical in eval mode). "
        "The teacher head trains in prepare() for ss_epochs (60 as released, SGD 1e-3, momentum 0.9, weight "
        "decay 1e-3, steps at 50%/75%) on teacher embeddings of one pass over the training pool, cached "
        "(the backbone is frozen, so only the augmentation is not re-drawn), without the released early "
        "stopping on a validation split. Class weights N/n_c from the training pool. Cross-modal regimes "
        "(not in the paper): the teacher side is the rotated NBI twin or same-class pseudo-pair."
    )
    options: ClassVar[dict[str, Any]] = {
        "kd_temperature": 4.0,
        "tf_temperature": 4.0,
        "ss_temperature": 0.5,
        "tf_ratio": 1.0,
        "ss_ratio": 0.75,
        "rkd_distance": 25.0,
        "rkd_angle": 50.0,
        "ss_epochs": 60,
        "ss_lr": 1e-3,
        "weighted_ce": True,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        teacher = ctx.teacher or ctx.student
        self.proj_s = projection_head(ctx.student.embedding_dim)
        self.proj_t = projection_head(teacher.embedding_dim)
        self.regressor = ConvReg(
            ctx.student.feature_channels[-1],
            ctx.student.feature_sizes[-1],
            teacher.feature_channels[-1],
            teacher.feature_sizes[-1],
        )
        weights = (
            inverse_frequency_weights(torch.as_tensor(ctx.student_labels), ctx.num_classes)
            if self.opts["weighted_ce"]
            else torch.ones(ctx.num_classes)
        )
        self.register_buffer("class_weight", weights, persistent=False)
        self.prepared = False
        self.ss_history: list[dict[str, float]] = []

    def student_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for p in self.proj_t.parameters()}
        return [p for p in super().student_parameters() if id(p) not in frozen]

    # -- stage A: the teacher's self-supervised head ----------------------------------------
    def teacher_rotations(self, x: Tensor) -> Outputs:
        return self.teacher_forward(rotation_batch(x))

    def prepare(self, teacher_batches: Iterable[Batch]) -> None:
        """Fit the teacher's projection head to recognise the original of each rotated view."""
        cached: list[Tensor] = []
        for batch in teacher_batches:
            if batch.teacher_x is None:
                raise RuntimeError("ssd-kd: prepare() needs batches with teacher_x")
            cached.append(self.teacher_rotations(batch.teacher_x).embedding.detach().float())
        if not cached:
            raise RuntimeError("ssd-kd: prepare() received no batches to fit the teacher's projection head")
        epochs = int(self.opts["ss_epochs"])
        head = self.proj_t
        head.requires_grad_(True)
        head.train()
        optimizer = torch.optim.SGD(head.parameters(), lr=float(self.opts["ss_lr"]), momentum=0.9, weight_decay=1e-3)
        milestones = sorted({max(1, round(0.5 * epochs)), max(1, round(0.75 * epochs))})
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        self.ss_history = []
        with torch.enable_grad():
            for _ in range(epochs):
                total, correct, rows = 0.0, 0, 0
                for k in torch.randperm(len(cached)).tolist():
                    emb = cached[k]
                    sim = rotation_similarity(head(emb))
                    target = rotation_targets(emb.shape[0] // NUM_ROTATIONS, emb.device)
                    loss = F.cross_entropy(sim, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(target)
                    correct += int((sim.argmax(dim=1) == target).sum())
                    rows += len(target)
                scheduler.step()
                self.ss_history.append({"loss": total / max(1, rows), "accuracy": correct / max(1, rows)})
        head.zero_grad(set_to_none=True)
        head.requires_grad_(False)
        head.eval()
        self.prepared = True

    # -- stage B: the student ------------------------------------------------------------------
    def teacher_views(self, t: Outputs | None, batch: Batch) -> Outputs:
        """Teacher outputs on the four rotations of ``batch.teacher_x`` (sample-major)."""
        if batch.teacher_x is None:
            raise RuntimeError("ssd-kd needs batch.teacher_x")
        if t is not None and t.features:
            rest = self.teacher_forward(rotation_batch(batch.teacher_x, turns=(1, 2, 3)))
            return interleave_rotations(t, rest)
        return self.teacher_rotations(batch.teacher_x)

    def student_input(self, batch: Batch) -> Tensor:
        """The four rotations of the batch (sample-major): the student's one forward pass."""
        return rotation_batch(batch.student_x)

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        """``s``: the student's outputs on :meth:`student_input` (``4 B`` rows)."""
        if not self.prepared:
            raise RuntimeError("ssd-kd: the teacher's projection head is untrained; call prepare() before losses()")
        if s.logits.shape[0] != NUM_ROTATIONS * batch.size:
            raise ValueError(
                f"ssd-kd: losses() expects the student's outputs on the {NUM_ROTATIONS} rotations of the batch "
                f"(student(d.student_input(batch)), {NUM_ROTATIONS * batch.size} rows); got {s.logits.shape[0]} rows"
            )
        o = self.opts
        s4 = s
        t4 = self.teacher_views(t, batch)
        n = s4.logits.shape[0]
        nor = original_rows(n, s4.logits.device)
        y = batch.y

        ce = F.cross_entropy(s4.logits[nor], y, weight=self.class_weight.to(s4.logits.dtype))
        kd = kd_loss(s4.logits[nor], t4.logits[nor].detach(), float(o["kd_temperature"]))

        # Transformation KD on the rotated views the teacher ranks well.
        s_rot, t_rot = s4.logits[~nor], t4.logits[~nor].detach()
        keep_tf = ranked_keep(t_rot, y.repeat_interleave(NUM_ROTATIONS - 1), float(o["tf_ratio"]))
        tf = kd_loss(s_rot[keep_tf], t_rot[keep_tf], float(o["tf_temperature"])) if len(keep_tf) else s_rot.sum() * 0

        # Self-supervised relation KD between rotated-to-original similarity matrices.
        s_sim = rotation_similarity(self.proj_s(s4.embedding))
        with torch.no_grad():
            t_sim = rotation_similarity(self.proj_t(t4.embedding.detach()))
        keep_ss = ranked_keep(t_sim, rotation_targets(n // NUM_ROTATIONS, t_sim.device), float(o["ss_ratio"]))
        ss = kd_loss(s_sim[keep_ss], t_sim[keep_ss], float(o["ss_temperature"])) if len(keep_ss) else s_sim.sum() * 0

        # Dual relational term: RKD on pooled features, channel Gram on the last maps.
        s_emb, t_emb = s4.embedding, t4.embedding.detach()
        rkd = float(o["rkd_distance"]) * rkd_distance(s_emb, t_emb) + float(o["rkd_angle"]) * rkd_angle(s_emb, t_emb)
        gram = channel_relation_loss(self.regressor(s4.features[-1]), t4.features[-1])
        return {"ce": ce, "kd": kd, "tf": tf, "ss": ss, "rkd": rkd, "gram": gram}
