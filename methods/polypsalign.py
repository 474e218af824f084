"""PolypsAlign: adversarial NBI->WLI feature alignment plus a teacher-head contrastive hinge."""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL, WITH_TWINS

from .base import Batch, Distiller, DistillerContext, Outputs
from .registry import register


class FeatureDiscriminator(nn.Module):
    """PolypsAlign's discriminator (``models/discriminator.py``), widths scaled to the map.

    conv3x3/2 (C -> C/2) - ReLU - conv3x3/2 (C/2 -> C/4) - ReLU - flatten - FC 512 - FC 2
    (no activation between the two linear layers, as in the code). At ResNet-50's 2048 x
    14 x 14 this is the code's 2048-1024-512, 8192-512-2 network. Init as the code's
    ``initialize``: Xavier-uniform convolutions, N(0, 1e-3) linear weights. Output index 1
    means "teacher (NBI) feature map", 0 "student (WLI) map".
    """

    def __init__(self, channels: int, size: tuple[int, int], hidden: int = 512) -> None:
        super().__init__()
        c1, c2 = max(1, channels // 2), max(1, channels // 4)
        self.conv1 = nn.Conv2d(channels, c1, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        h, w = size
        flat = c2 * math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, 2)
        for m in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(m.weight)
        for m in (self.fc1, self.fc2):
            nn.init.normal_(m.weight, std=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc2(self.fc1(x.flatten(1)))


def head_logits(feature_map: Tensor, head: nn.Linear) -> Tensor:
    """Global average pool + the given linear head with its parameters detached, so the
    gradient reaches ``feature_map`` but never the head's (the frozen teacher's) weights."""
    bias = head.bias.detach() if head.bias is not None else None
    return F.linear(feature_map.mean(dim=(2, 3)), head.weight.detach(), bias)


def _kl_mean(target_logits: Tensor, log_x: Tensor) -> Tensor:
    """KL(softmax(target) || x) with ``F.kl_div``'s legacy ``reduction="mean"``: the
    elementwise terms p (log p - log x) averaged over batch *and* classes."""
    p = F.softmax(target_logits.detach().float(), dim=-1)
    return (torch.xlogy(p, p) - p * log_x).mean()


def contrastive_hinge(x_logits: Tensor, pos_logits: Tensor, neg_logits: Tensor | None, margin: float) -> Tensor:
    """max(KL(pos || x) - KL(neg || x) + margin, 0), each KL averaged over batch and classes
    (``F.kl_div``'s default ``"mean"`` reduction, as PolypsAlign's ``train.py`` calls it),
    so the hinge acts on the batch means. Without a negative the KL(neg || x) term is 0."""
    log_x = F.log_softmax(x_logits.float(), dim=-1)
    gap = _kl_mean(pos_logits, log_x)
    if neg_logits is not None:
        gap = gap - _kl_mean(neg_logits, log_x)
    return F.relu(gap + margin)


@register("polypsalign")
class PolypsAlign(Distiller):
    """Wang et al., "Colorectal Polyp Classification from White-light Colonoscopy Images
    via Domain Alignment", MICCAI 2021; code qinwang-ai/PolypsAlign ``train.py``.

    * Adversarial alignment: a discriminator (:class:`FeatureDiscriminator`) on the last
      feature maps learns to tell the frozen teacher's NBI maps ("real", 1) from the
      student's WLI maps ("fake", 0) with cross-entropy (``adversary_losses``: ``real`` +
      ``fake``, on detached student maps, stepped by the harness's separate optimiser);
      the student is trained to have its maps classified as real (term ``adv``).
    * Contrastive hinge (term ``contrast``): the student's map goes through the teacher's
      classifier (average pool + the teacher's fc, weights frozen: gradient reaches the
      student's map, never the teacher), x = fc_T(pool(f_S)); positive = the teacher's
      prediction on the NBI image of the row (the twin), negative = the teacher's head on
      the features of a frozen WLI "raw student"; max(KL(pos||x) - KL(neg||x) + 0.85, 0).

    L = CE + adv + contrast (weights 1, as in the code). The discriminator has its own
    optimiser with the code's settings (:meth:`adversary_optimizer`): Adam, betas
    (0.9, 0.999), weight decay 1e-8, at the student's learning rate (the code trains both
    at 1e-4; option ``disc_lr`` sets another rate).

    Raw student: the code loads a separately trained WLI-only network and, when its
    checkpoint is missing, falls back to the ImageNet initialisation. Here it is a frozen
    copy of the student at the start of training (its initialisation), i.e. the code's
    fallback; ``negative="none"`` drops it. What the negative means therefore depends on
    the profile: with ImageNet weights it is a generic pretrained network's reading of the
    WLI image through the teacher's head; under a randomly initialised profile (``smoke``,
    ``cpu``) it is a *random network*'s, so the hinge pushes the student's teacher-head
    prediction away from that of random features (close to the head's bias-dominated
    output) rather than away from a WLI-only classifier as in the paper.

    Width adapter: the discriminator and the teacher's head expect the teacher's width. If
    the student's last map is narrower/wider, a 1x1 conv adapter (owned here, trained with
    the student) maps it to the teacher's width; if the spatial sizes differ the adapted map
    is resized (bilinear) to the teacher's. With equal widths (ResNet-50 both, as in the
    paper) there is no adapter.

    Regimes: ``paired``, ``all`` and ``unpaired``: the adversarial term is distribution
    level and needs no pairs. The hinge's positive is the teacher's prediction on the row's
    NBI image: the twin on paired rows and the class-matched pseudo-pair on unpaired rows
    (``pseudo_pairs=True``, default); ``pseudo_pairs=False`` restricts the hinge to twin
    rows (and drops it on ``unpaired``).
    """

    summary: ClassVar[str] = "PolypsAlign: discriminator on NBI vs WLI feature maps + teacher-head contrastive hinge"
    paper: ClassVar[str] = (
        "Wang et al., MICCAI 2021, Sec. 2 (adversarial feature alignment; contrastive hinge "
        "max(KL(pos||x) - KL(neg||x) + 0.85, 0)); code qinwang-ai/PolypsAlign"
    )
    regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    main_regimes: ClassVar[frozenset[str]] = WITH_TWINS
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "adv": 1.0, "contrast": 1.0}
    deviations: ClassVar[str] = (
        "Teacher kept frozen in eval mode (the code leaves it in train mode, so its BatchNorm statistics drift). "
        "The raw-student negative is a frozen copy of the student's initialisation (the code's fallback when no "
        "WLI-only checkpoint exists): under a randomly initialised profile (smoke, cpu) it is a random network, "
        "not a WLI-only classifier, so the hinge pushes away from random features' predictions. Discriminator "
        "optimiser as the code: Adam, betas (0.9, 0.999), weight decay 1e-8, at the student's learning rate "
        "(both 1e-4 in the code; option disc_lr). Discriminator widths scale with the teacher's map (C/2, C/4); "
        "a 1x1 adapter maps the student's map to the teacher's width when they differ. The discriminator is "
        "stepped after the student (the code steps it first). On unpaired rows the hinge's "
        "positive is the class-matched pseudo-pair's teacher prediction (option pseudo_pairs)."
    )
    options: ClassVar[dict[str, Any]] = {
        "margin": 0.85,
        "negative": "initial_student",
        "pseudo_pairs": True,
        "disc_lr": None,
        "disc_weight_decay": 1e-8,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("polypsalign needs a teacher (an NBI network); none was given")
        if self.opts["negative"] not in ("initial_student", "none"):
            raise ValueError(
                f"polypsalign: option negative={self.opts['negative']!r} is not one of 'initial_student', 'none'"
            )
        c_s, c_t = ctx.student.feature_channels[-1], ctx.teacher.feature_channels[-1]
        self.teacher_size = tuple(ctx.teacher.feature_sizes[-1])
        self.adapter: nn.Module = nn.Conv2d(c_s, c_t, 1, bias=False) if c_s != c_t else nn.Identity()
        self.discriminator = FeatureDiscriminator(c_t, self.teacher_size)

    def bind(self, student: nn.Module, teacher: nn.Module | None) -> None:
        super().bind(student, teacher)
        if self.opts["negative"] == "initial_student":
            raw = copy.deepcopy(student).eval()
            for p in raw.parameters():
                p.requires_grad_(False)
            self._bound["raw_student"] = raw

    def adapt(self, feature_map: Tensor) -> Tensor:
        """Student map -> the teacher's width and grid."""
        x = self.adapter(feature_map)
        if tuple(x.shape[-2:]) != self.teacher_size:
            x = F.interpolate(x, size=self.teacher_size, mode="bilinear", align_corners=False)
        return x

    def adversary_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def adversary_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        """Adam with the code's settings (``optimizer_dis``: lr 1e-4 as the student's, weight
        decay 1e-8, default betas); ``disc_lr`` overrides the rate."""
        rate = lr if self.opts["disc_lr"] is None else float(self.opts["disc_lr"])
        return torch.optim.Adam(
            params, lr=rate, betas=(0.9, 0.999), weight_decay=float(self.opts["disc_weight_decay"])
        )

    def adversary_losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        with torch.no_grad():
            fake_maps = self.adapt(s.features[-1].detach())
        p_real = self.discriminator(t.features[-1].detach())
        p_fake = self.discriminator(fake_maps)
        ones = torch.ones(p_real.shape[0], dtype=torch.long, device=p_real.device)
        return {"real": F.cross_entropy(p_real, ones), "fake": F.cross_entropy(p_fake, torch.zeros_like(ones))}

    def _negative(self, batch: Batch, head: nn.Linear) -> Tensor | None:
        raw = self._bound.get("raw_student")
        if raw is None:
            return None
        with torch.no_grad():
            return head_logits(self.adapt(raw(batch.student_x).features[-1]), head)

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        if t.classifier is None:
            raise ValueError("polypsalign needs the teacher's classifier head (Outputs.classifier)")
        f_s = self.adapt(s.features[-1])
        p_x = self.discriminator(f_s)
        out = {
            "ce": F.cross_entropy(s.logits, batch.y),
            "adv": F.cross_entropy(p_x, torch.ones(p_x.shape[0], dtype=torch.long, device=p_x.device)),
        }
        rows = torch.ones_like(batch.twin, dtype=torch.bool) if self.opts["pseudo_pairs"] else batch.twin.bool()
        if bool(rows.any()):
            x = head_logits(f_s, t.classifier)[rows]
            neg = self._negative(batch, t.classifier)
            out["contrast"] = contrastive_hinge(
                x, t.logits[rows], neg[rows] if neg is not None else None, float(self.opts["margin"])
            )
        return out
