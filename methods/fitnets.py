"""FitNets: hint-based training through a trainable regressor on a middle stage."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datasets.regimes import CROSS_MODAL

from .base import REGIMES, Batch, Distiller, DistillerContext, ModelSpec, Outputs
from .kd import kd_loss
from .registry import register

UNPAIRED_HINTS = ("map", "pooled")


class HintRegressor(nn.Module):
    """Maps the student's hint map onto the teacher's hint shape, then BN and ReLU (the
    ``ConvReg`` of RepDistiller / mdistiller): a 1x1 conv when the maps have the same size
    (their kernel ``1 + H_s - H_t``), a 3x3 stride-2 conv when the student map is exactly
    twice the teacher's, otherwise a 3x3 conv followed by bilinear resizing (the
    generalisation to any pair of sizes)."""

    def __init__(self, in_channels: int, out_channels: int, in_size: tuple[int, int], out_size: tuple[int, int]):
        super().__init__()
        halves = in_size[0] == 2 * out_size[0] and in_size[1] == 2 * out_size[1]
        if tuple(in_size) == tuple(out_size):
            self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2 if halves else 1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.conv(x)
        if tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.relu(self.bn(x))


def middle_stage(spec: ModelSpec) -> int:
    """Index of the middle stage map (``num_stages // 2``: stage 2 of 4, layer2 of a
    ResNet's stem + 4 stages), the hint layer of RepDistiller and mdistiller."""
    return spec.num_stages // 2


def matching_teacher_stage(student: ModelSpec, teacher: ModelSpec, student_stage: int) -> int:
    """The teacher stage whose map has the student hint map's spatial size, else the
    nearest in log area; ties go to the stage at the closest relative depth."""
    s_h, s_w = student.feature_sizes[student_stage]
    s_depth = student_stage / max(student.num_stages - 1, 1)

    def distance(k: int) -> tuple[float, float]:
        t_h, t_w = teacher.feature_sizes[k]
        t_depth = k / max(teacher.num_stages - 1, 1)
        return abs(math.log((t_h * t_w) / (s_h * s_w))), abs(t_depth - s_depth)

    return min(range(teacher.num_stages), key=distance)


def hint_loss(regressed: Tensor, target: Tensor, twin: Tensor | None = None, pooled_unpaired: bool = False) -> Tensor:
    """Mean squared error between the regressed student map and the teacher's hint map
    (Romero et al., Eq. 3, with a mean instead of 1/2 sum, as RepDistiller / mdistiller).

    With ``pooled_unpaired``, rows whose teacher image is not the student's twin compare
    spatially averaged maps (per-channel means) instead of the maps themselves.
    """
    target = target.detach()
    if not pooled_unpaired or twin is None or bool(twin.all()):
        return F.mse_loss(regressed, target)
    per_map = (regressed - target).pow(2).mean(dim=(1, 2, 3))
    per_pooled = (regressed.mean(dim=(2, 3)) - target.mean(dim=(2, 3))).pow(2).mean(dim=1)
    return torch.where(twin.to(regressed.device), per_map, per_pooled).mean()


@register("fitnets")
class FitNets(Distiller):
    """Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015: the student's middle
    ("guided") stage, passed through a trainable regressor, regresses the teacher's
    middle ("hint") stage with an L2 loss (Eq. 3).

    Defaults follow RepDistiller / mdistiller: hint on the middle stage, weight 100, CE 1,
    trained single-stage (hint and CE summed from the first step). The teacher stage is
    the one whose map has the student hint map's size (else the nearest), so any pair of
    backbones works. ``two_stage=True`` gives the paper's schedule: for the first
    ``stage1_fraction`` of the epochs only the hint term (the student up to the guided
    stage and the regressor learn), then CE plus Hinton KD (T = ``kd_temperature``) on the
    whole student with a fixed KD weight (the paper anneals it).

    Unpaired data: the teacher image of a non-twin row is a class-matched NBI pseudo-pair,
    a same-class but different lesion, so no position of its map corresponds to a position
    of the student's. By default (``unpaired_hint="pooled"``) those rows regress only the
    spatially averaged map (per-channel means); twin rows keep the spatial hint.
    ``unpaired_hint="map"`` compares the maps position by position on every row.
    """

    summary: ClassVar[str] = "FitNets: regress the teacher's middle-stage map through a conv regressor"
    paper: ClassVar[str] = "Romero et al., ICLR 2015, Eq. 3 (hint loss through a regressor)"
    regimes: ClassVar[frozenset[str]] = frozenset(REGIMES)
    main_regimes: ClassVar[frozenset[str]] = CROSS_MODAL
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "hint": 100.0, "kd": 1.0}
    deviations: ClassVar[str] = (
        "Single-stage training (hint + CE summed) as in RepDistiller/mdistiller; the paper's "
        "two-stage schedule is the option two_stage. On unpaired rows the teacher's map belongs to a "
        "class-matched NBI pseudo-pair (a different lesion, so spatially unaligned): those rows regress "
        "the per-channel means of the map (pooled hint); unpaired_hint='map' compares the maps spatially "
        "on every row. Regressor as RepDistiller's ConvReg (1x1 conv for maps of the same size)."
    )
    options: ClassVar[dict[str, Any]] = {
        "hint_stage": None,
        "teacher_stage": None,
        "two_stage": False,
        "stage1_fraction": 0.25,
        "unpaired_hint": "pooled",
        "kd_temperature": 4.0,
    }

    def __init__(self, ctx: DistillerContext, **options: Any) -> None:
        super().__init__(ctx, **options)
        if ctx.teacher is None:
            raise ValueError("fitnets needs a teacher; the run has none")
        self.student_stage = self._stage_option("hint_stage", ctx.student, middle_stage(ctx.student))
        default_teacher_stage = matching_teacher_stage(ctx.student, ctx.teacher, self.student_stage)
        self.teacher_stage = self._stage_option("teacher_stage", ctx.teacher, default_teacher_stage)
        if self.opts["unpaired_hint"] not in UNPAIRED_HINTS:
            raise ValueError(
                f"fitnets option unpaired_hint={self.opts['unpaired_hint']!r} is not one of {UNPAIRED_HINTS}"
            )
        fraction = float(self.opts["stage1_fraction"])
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fitnets option stage1_fraction={fraction} must lie strictly between 0 and 1")
        self.stage1_epochs = max(1, round(fraction * ctx.num_epochs)) if self.opts["two_stage"] else 0
        self.regressor = HintRegressor(
            ctx.student.feature_channels[self.student_stage],
            ctx.teacher.feature_channels[self.teacher_stage],
            ctx.student.feature_sizes[self.student_stage],
            ctx.teacher.feature_sizes[self.teacher_stage],
        )

    def _stage_option(self, option: str, spec: ModelSpec, default: int) -> int:
        value = self.opts[option]
        if value is None:
            return default
        stage = int(value)
        if not -spec.num_stages <= stage < spec.num_stages:
            raise ValueError(
                f"fitnets option {option}={value} is out of range for {spec.name!r}, which has "
                f"{spec.num_stages} stage maps; use 0..{spec.num_stages - 1} or leave it unset for the default"
            )
        return stage % spec.num_stages

    def losses(self, s: Outputs, t: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert t is not None
        in_stage1 = batch.epoch < self.stage1_epochs
        if self.stage1_epochs and not in_stage1:
            return {
                "ce": F.cross_entropy(s.logits, batch.y),
                "kd": kd_loss(s.logits, t.logits.detach(), float(self.opts["kd_temperature"])),
            }
        target = t.features[self.teacher_stage]
        regressed = self.regressor(s.features[self.student_stage], tuple(target.shape[-2:]))
        hint = hint_loss(regressed, target, batch.twin, pooled_unpaired=self.opts["unpaired_hint"] == "pooled")
        if in_stage1:
            return {"hint": hint}
        return {"ce": F.cross_entropy(s.logits, batch.y), "hint": hint}
