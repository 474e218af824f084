"""FitNets, RKD, CRD and PKT: loss values on hand-computed tiny inputs, gradient flow
(student and the method's own modules, never the teacher), CRD's memory banks, and each
method end to end in every regime it declares."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
from benchmark.models.backbones import create_backbone
from methods.base import Batch, DistillerContext, ModelSpec, Outputs
from methods.crd import CRD, momentum_update, nce_loss, sample_other_class_rows
from methods.fitnets import FitNets, HintRegressor, hint_loss, matching_teacher_stage
from methods.pkt import pkt_loss
from methods.rkd import rkd_angle_loss, rkd_distance_loss

GENERIC = ("fitnets", "rkd", "crd", "pkt")
IMAGE_SIZE = 24


# -- fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return create_backbone("kdbench_cnn4", 3), create_backbone("kdbench_cnn4_wide", 3)


def make_ctx(
    student: ModelSpec,
    teacher: ModelSpec,
    student_labels: list[int],
    teacher_labels: list[int],
    num_classes: int = 3,
    regime: str = "unpaired",
    num_epochs: int = 4,
) -> DistillerContext:
    return DistillerContext(
        student=student,
        teacher=teacher,
        num_classes=num_classes,
        regime=regime,
        num_student_train=len(student_labels),
        num_teacher_train=len(teacher_labels),
        student_labels=torch.tensor(student_labels),
        teacher_labels=torch.tensor(teacher_labels),
        num_epochs=num_epochs,
        steps_per_epoch=2,
        batch_size=4,
    )


@pytest.fixture(scope="module")
def real_ctx(nets) -> DistillerContext:
    student, teacher = nets
    labels = [0, 1, 2, 0, 1, 2, 0, 1]
    return make_ctx(student.spec(IMAGE_SIZE), teacher.spec(IMAGE_SIZE), labels, [*labels, 2, 0])


def make_batch(y: list[int], index: list[int], teacher_index: list[int], epoch: int = 0, twin=None) -> Batch:
    n = len(y)
    return Batch(
        student_x=torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE),
        teacher_x=torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE),
        y=torch.tensor(y),
        twin=torch.tensor(twin if twin is not None else [False] * n),
        index=torch.tensor(index),
        teacher_index=torch.tensor(teacher_index),
        epoch=epoch,
        num_epochs=4,
    )


def tiny_spec(name: str, channels: tuple[int, ...], sizes: tuple[tuple[int, int], ...], dim: int) -> ModelSpec:
    return ModelSpec(name=name, num_classes=2, embedding_dim=dim, feature_channels=channels, feature_sizes=sizes)


def outputs_from(embedding: torch.Tensor, logits: torch.Tensor | None = None, features=None) -> Outputs:
    if logits is None:
        logits = torch.zeros(embedding.shape[0], 2)
    return Outputs(logits=logits, embedding=embedding, features=features or [])


# -- registration and construction ----------------------------------------------------
@pytest.mark.parametrize("name", GENERIC)
def test_registered_and_constructs_from_real_backbone_specs(name, real_ctx):
    cls = methods.get(name)
    info = cls.describe()
    assert {"paired", "unpaired", "all"} <= set(cls.main_regimes) <= set(cls.regimes)
    assert info["deviations"] and info["paper"] and info["summary"]
    assert "ce" in cls.default_weights
    assert "Unpaired data:" in (cls.__doc__ or "")  # the docstring states the adaptation to unpaired data
    distiller = methods.create(name, real_ctx)
    assert distiller.name == name


def test_default_weights_are_the_papers():
    assert methods.get("fitnets").default_weights["hint"] == 100.0
    assert methods.get("rkd").default_weights == {"ce": 1.0, "distance": 25.0, "angle": 50.0}
    assert methods.get("crd").default_weights == {"ce": 1.0, "crd": 0.8}
    assert methods.get("pkt").default_weights == {"ce": 1.0, "pkt": 30000.0}


# -- PKT ------------------------------------------------------------------------------
def test_pkt_hand_value():
    # student: orthogonal rows -> kernel [[1, .5], [.5, 1]] -> q rows (2/3, 1/3);
    # teacher: parallel rows -> kernel all 1 -> p rows (1/2, 1/2).
    # loss = mean of 4 entries = 1/4 * 2 * (.5 log(.5/(2/3)) + .5 log(.5/(1/3))) = log(1.125) / 4
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    assert pkt_loss(s, t).item() == pytest.approx(math.log(1.125) / 4, rel=1e-5)
    assert pkt_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)


def test_pkt_matches_numpy_on_random_rows():
    rng = np.random.default_rng(1)
    s, t, eps = rng.normal(size=(4, 3)), rng.normal(size=(4, 5)), 1e-7

    def probs(x):
        out = np.zeros((len(x), len(x)))
        for i in range(len(x)):
            for j in range(len(x)):
                cos = x[i] @ x[j] / ((np.linalg.norm(x[i]) + eps) * (np.linalg.norm(x[j]) + eps))
                out[i, j] = (cos + 1) / 2
        return out / out.sum(axis=1, keepdims=True)

    p, q = probs(t), probs(s)
    expected = np.mean(p * np.log((p + eps) / (q + eps)))
    got = pkt_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-9)


# -- RKD ------------------------------------------------------------------------------
def smooth_l1(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b)
    return float(np.mean(np.where(d < 1.0, 0.5 * d**2, d - 0.5)))


def test_rkd_distance_hand_value():
    # student 3-4-5 triangle: distances 3, 4, 5, mean 4 -> 0.75, 1, 1.25
    # teacher right isosceles: 1, 1, sqrt2, mean (2 + sqrt2)/3
    s = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    t = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    mu_t = (2 + math.sqrt(2)) / 3
    ds = np.array([[0, 0.75, 1.0], [0.75, 0, 1.25], [1.0, 1.25, 0]])
    dt = np.array([[0, 1, 1], [1, 0, math.sqrt(2)], [1, math.sqrt(2), 0]]) / mu_t
    # all |differences| < 1, so smooth-L1 is 0.5 d^2, averaged over the 9 entries
    assert rkd_distance_loss(s, t).item() == pytest.approx(smooth_l1(ds, dt), rel=1e-5)
    # scale invariance: the normalisation by the mean distance removes any scale
    assert rkd_distance_loss(3 * t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_rkd_angle_hand_value():
    s = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    t = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])

    def angles(x):
        out = np.zeros((3, 3, 3))
        for i in range(3):
            for j in range(3):
                for k in range(3):
                    a, b = x[j] - x[i], x[k] - x[i]
                    if np.linalg.norm(a) > 0 and np.linalg.norm(b) > 0:
                        out[i, j, k] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        return out

    # spot-check the hand geometry: at vertex 0 of the student the legs are at 90 degrees,
    # in the teacher at 45 degrees.
    assert angles(s)[0, 1, 2] == pytest.approx(0.0)
    assert angles(t)[0, 1, 2] == pytest.approx(math.sqrt(0.5))
    expected = smooth_l1(angles(s), angles(t))
    got = rkd_angle_loss(torch.tensor(s, dtype=torch.float32), torch.tensor(t, dtype=torch.float32)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_rkd_losses_dict(real_ctx):
    rkd = methods.create("rkd", real_ctx)
    s = outputs_from(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]), torch.tensor([[2.0, 0.0]] * 3))
    t = outputs_from(torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]))
    terms = rkd.losses(s, t, make_batch([0, 0, 1], [0, 1, 2], [0, 1, 2]))
    assert set(terms) == {"ce", "distance", "angle"}
    assert terms["distance"].item() == pytest.approx(0.0, abs=1e-7)
    assert terms["angle"].item() == pytest.approx(0.0, abs=1e-7)
    ce = -np.mean(
        [np.log(np.exp(2) / (np.exp(2) + 1)), np.log(np.exp(2) / (np.exp(2) + 1)), np.log(1 / (np.exp(2) + 1))]
    )
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-5)


# -- FitNets --------------------------------------------------------------------------
def test_hint_loss_hand_value():
    regressed = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])  # (2, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [3.0, 2.0]]], [[[3.0, 1.0], [1.0, 3.0]]]])
    # squared errors: row 0 -> 0, 4, 0, 4; row 1 -> 4, 0, 0, 4: mean 16/8 = 2
    assert hint_loss(regressed, target).item() == pytest.approx(2.0)
    # pooled on the non-twin row 1: its means are 1 and 2 -> (1 - 2)^2 = 1; row 0 map MSE 2
    twin = torch.tensor([True, False])
    assert hint_loss(regressed, target, twin, pooled_unpaired=True).item() == pytest.approx((2.0 + 1.0) / 2)


def test_fitnets_hint_through_identity_regressor_hand_value():
    spec = tiny_spec("tiny", (2, 2, 2), ((2, 2), (2, 2), (1, 1)), 2)
    fit = FitNets(make_ctx(spec, spec, [0, 1], [0, 1], num_classes=2))
    assert (fit.student_stage, fit.teacher_stage) == (1, 1)
    with torch.no_grad():  # 1x1 identity; eval-mode BN with fresh stats divides by sqrt(1 + eps)
        fit.regressor.conv.weight.copy_(torch.eye(2)[:, :, None, None])
    fit.eval()
    x = np.array([[[[1.0, 2.0], [0.0, 3.0]], [[0.5, 0.0], [1.0, 1.0]]]])  # (1, 2, 2, 2), non-negative
    t = np.array([[[[0.0, 2.0], [1.0, 1.0]], [[0.5, 0.5], [0.0, 2.0]]]])
    expected = np.mean((x / math.sqrt(1 + 1e-5) - t) ** 2)
    s_out = outputs_from(torch.zeros(1, 2), features=[torch.zeros(1, 2, 2, 2), torch.tensor(x, dtype=torch.float32)])
    t_out = outputs_from(torch.zeros(1, 2), features=[torch.zeros(1, 2, 2, 2), torch.tensor(t, dtype=torch.float32)])
    terms = fit.losses(s_out, t_out, make_batch([0], [0], [0], twin=[True]))
    assert set(terms) == {"ce", "hint"}
    assert terms["hint"].item() == pytest.approx(expected, rel=1e-5)


def test_fitnets_picks_matching_or_nearest_teacher_stage():
    student = tiny_spec("s", (8, 16, 32, 64), ((24, 24), (12, 12), (6, 6), (3, 3)), 64)
    same_sizes = tiny_spec("t", (16, 32, 64, 128), ((24, 24), (12, 12), (6, 6), (3, 3)), 128)
    other = tiny_spec("t2", (16, 32, 64, 128, 256), ((12, 12), (12, 12), (5, 5), (3, 3), (2, 2)), 256)
    assert matching_teacher_stage(student, same_sizes, 2) == 2
    assert matching_teacher_stage(student, other, 2) == 2  # 5x5 is nearest to 6x6
    assert matching_teacher_stage(student, other, 1) == 1  # two 12x12 stages: the closer relative depth
    with pytest.raises(ValueError, match="hint_stage"):
        FitNets(make_ctx(student, same_sizes, [0, 1], [0, 1]), hint_stage=7)
    with pytest.raises(ValueError, match="unpaired_hint"):
        FitNets(make_ctx(student, same_sizes, [0, 1], [0, 1]), unpaired_hint="nope")


@pytest.mark.parametrize(("s_size", "t_size"), [((6, 6), (6, 6)), ((6, 6), (3, 3)), ((6, 6), (4, 4)), ((3, 3), (6, 6))])
def test_hint_regressor_matches_any_shape(s_size, t_size):
    reg = HintRegressor(5, 7, s_size, t_size)
    out = reg(torch.randn(2, 5, *s_size), t_size)
    assert out.shape == (2, 7, *t_size)
    assert reg.conv.stride == ((2, 2) if s_size == (6, 6) and t_size == (3, 3) else (1, 1))
    assert reg.conv.kernel_size == ((1, 1) if s_size == t_size else (3, 3))


def test_fitnets_regressor_is_pointwise_on_maps_of_the_same_size():
    """RepDistiller's ConvReg is a 1x1 conv when the maps have the same size: changing one
    position of the student's map changes the regressed map at that position only."""
    torch.manual_seed(0)
    reg = HintRegressor(3, 4, (5, 5), (5, 5)).eval()
    x = torch.randn(1, 3, 5, 5)
    y = x.clone()
    y[0, :, 2, 1] += 1.0
    with torch.no_grad():
        changed = (reg(x, (5, 5)) != reg(y, (5, 5))).any(dim=1)[0]
    assert changed[2, 1] and int(changed.sum()) == 1


def test_fitnets_default_hint_on_unpaired_rows_is_the_pooled_map():
    """A pseudo-pair row whose teacher map is a spatial rearrangement of the student's (same
    per-channel means) adds nothing by default; a twin row keeps the spatial hint."""
    spec = tiny_spec("tiny", (2, 2, 2), ((2, 2), (2, 2), (1, 1)), 2)
    fit = FitNets(make_ctx(spec, spec, [0, 1], [0, 1], num_classes=2))
    assert fit.opts["unpaired_hint"] == "pooled"
    with torch.no_grad():
        fit.regressor.conv.weight.copy_(torch.eye(2)[:, :, None, None])
    fit.eval()
    scale = 1 / math.sqrt(1 + 1e-5)  # eval-mode BN with fresh statistics
    s_map = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]], [[0.5, 0.0], [1.0, 1.0]]]] * 2)
    t_map = s_map.clone() * scale
    t_map[0, 0] = t_map[0, 0].flip(0)  # twin row: spatially different, same means
    t_map[1] = t_map[1].flip(-1)  # pseudo-pair row: spatially different, same means
    twin_row = float(((s_map[0] * scale - t_map[0]) ** 2).mean())
    assert twin_row > 0.1
    s_out = outputs_from(torch.zeros(2, 2), features=[torch.zeros(2, 2, 2, 2), s_map])
    t_out = outputs_from(torch.zeros(2, 2), features=[torch.zeros(2, 2, 2, 2), t_map])
    terms = fit.losses(s_out, t_out, make_batch([0, 1], [0, 1], [0, 1], twin=[True, False]))
    assert terms["hint"].item() == pytest.approx(twin_row / 2, rel=1e-5)
    spatial = FitNets(make_ctx(spec, spec, [0, 1], [0, 1], num_classes=2), unpaired_hint="map")
    spatial.load_state_dict(fit.state_dict())
    spatial.eval()
    both_rows = float(((s_map * scale - t_map) ** 2).mean())
    terms = spatial.losses(s_out, t_out, make_batch([0, 1], [0, 1], [0, 1], twin=[True, False]))
    assert terms["hint"].item() == pytest.approx(both_rows, rel=1e-5)


def test_fitnets_real_backbones_default_stage(real_ctx):
    fit = methods.create("fitnets", real_ctx)
    # kdbench_cnn4 at 24 px: maps 24, 12, 6, 3; the middle stage 2 (6x6) -> the wide teacher's 6x6 stage 2
    assert real_ctx.student.feature_sizes[2] == real_ctx.teacher.feature_sizes[2] == (6, 6)
    assert fit.student_stage == 2 and fit.teacher_stage == 2
    assert fit.regressor.conv.in_channels == real_ctx.student.feature_channels[2]
    assert fit.regressor.conv.out_channels == real_ctx.teacher.feature_channels[2] == 2 * fit.regressor.conv.in_channels


def test_fitnets_two_stage_schedule(real_ctx, nets):
    student, teacher = nets
    fit = methods.create("fitnets", real_ctx, two_stage=True, stage1_fraction=0.5)  # 4 epochs -> 2 in stage 1
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    s, t = student(x), teacher(x)
    assert set(fit.losses(s, t, make_batch([0, 1], [0, 1], [0, 1], epoch=1))) == {"hint"}
    stage2 = fit.losses(s, t, make_batch([0, 1], [0, 1], [0, 1], epoch=2))
    assert set(stage2) == {"ce", "kd"}
    assert set(methods.create("fitnets", real_ctx).losses(s, t, make_batch([0, 1], [0, 1], [0, 1]))) == {"ce", "hint"}


def test_hint_loss_pooled_rows_average_their_own_errors():
    g = torch.Generator().manual_seed(4)
    r, t = torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, 2, 2, 2, generator=g)
    twin = torch.tensor([True, False, False])
    per_map = ((r - t) ** 2).mean(dim=(1, 2, 3))
    per_pooled = ((r.mean(dim=(2, 3)) - t.mean(dim=(2, 3))) ** 2).mean(dim=1)
    expected = (per_map[0] + per_pooled[1] + per_pooled[2]) / 3
    assert hint_loss(r, t, twin, pooled_unpaired=True).item() == pytest.approx(expected.item(), rel=1e-6)
    mse = ((r - t) ** 2).mean().item()
    assert hint_loss(r, t, twin).item() == pytest.approx(mse, rel=1e-6)  # spatial unless asked
    assert hint_loss(r, t, None, pooled_unpaired=True).item() == pytest.approx(mse, rel=1e-6)  # no twin flags


@pytest.mark.parametrize(
    ("s_sizes", "stage", "t_sizes", "expected"),
    [
        # one tie in area; the teacher stage at the nearest relative depth k / (stages - 1) wins
        (((8, 8), (4, 4), (2, 2), (1, 1)), 1, ((8, 8), (4, 4), (4, 4), (4, 4), (1, 1)), 1),
        (((4, 4), (2, 2)), 1, ((2, 2), (2, 2)), 1),  # depth 1 -> the teacher's last stage
        (((4, 4), (2, 2), (1, 1)), 1, ((2, 2), (2, 2)), 0),  # depth 1/2: equidistant, the first wins
    ],
)
def test_matching_teacher_stage_breaks_area_ties_by_relative_depth(s_sizes, stage, t_sizes, expected):
    student = tiny_spec("s", (1,) * len(s_sizes), s_sizes, 1)
    teacher = tiny_spec("t", (1,) * len(t_sizes), t_sizes, 1)
    assert matching_teacher_stage(student, teacher, stage) == expected


def test_fitnets_stage_options_accept_every_index_from_minus_n_to_n_minus_1():
    sizes = ((8, 8), (4, 4), (2, 2))
    student, teacher = tiny_spec("s", (2, 3, 4), sizes, 4), tiny_spec("t", (5, 6, 7), sizes, 7)
    ctx = make_ctx(student, teacher, [0, 1], [0, 1], num_classes=2)
    fit = FitNets(ctx, hint_stage=-3, teacher_stage=-1)
    assert (fit.student_stage, fit.teacher_stage) == (0, 2)
    assert fit.regressor.conv.in_channels == 2 and fit.regressor.conv.out_channels == 7
    assert FitNets(ctx, hint_stage=2, teacher_stage=1).teacher_stage == 1
    for bad in (3, -4):
        with pytest.raises(ValueError, match="out of range"):
            FitNets(ctx, teacher_stage=bad)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            FitNets(ctx, two_stage=True, stage1_fraction=fraction)


def test_fitnets_two_stage_rounds_the_first_stage_to_whole_epochs():
    spec = tiny_spec("s", (2,), ((2, 2),), 2)
    fit = FitNets(make_ctx(spec, spec, [0, 1], [0, 1], num_classes=2, num_epochs=4), two_stage=True)
    assert fit.stage1_epochs == 1  # 0.25 * 4 epochs
    fit = FitNets(make_ctx(spec, spec, [0, 1], [0, 1], num_classes=2, num_epochs=1), two_stage=True,
                  stage1_fraction=0.1)
    assert fit.stage1_epochs == 1  # at least one epoch


def ref_regressor(reg: HintRegressor, x: torch.Tensor, size, stride: int, padding: int) -> torch.Tensor:
    """conv -> bilinear resize (half-pixel centres) when the size differs -> train-mode BN -> ReLU."""
    y = F.conv2d(x, reg.conv.weight, stride=stride, padding=padding)
    if tuple(y.shape[-2:]) != tuple(size):
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return torch.relu((y - mean) / torch.sqrt(var + reg.bn.eps))


@pytest.mark.parametrize(
    ("s_size", "t_size", "kernel", "stride"),
    [((4, 4), (4, 4), 1, 1), ((8, 4), (4, 2), 3, 2), ((8, 4), (4, 4), 3, 1), ((4, 8), (4, 4), 3, 1),
     ((5, 5), (3, 3), 3, 1)],
)
def test_hint_regressor_values(s_size, t_size, kernel, stride):
    torch.manual_seed(0)
    reg = HintRegressor(3, 2, s_size, t_size)
    assert reg.conv.kernel_size == (kernel, kernel) and reg.conv.stride == (stride, stride)
    x = torch.randn(2, 3, *s_size)
    expected = ref_regressor(reg, x, t_size, stride, padding=kernel // 2)
    torch.testing.assert_close(reg(x, t_size), expected, rtol=1e-5, atol=1e-5)


# -- CRD ------------------------------------------------------------------------------
def test_nce_loss_hand_value():
    scores = torch.tensor([[0.5, 0.1, 0.3], [0.2, 0.4, 0.05]])
    noise = 2 / 4  # K = 2 negatives, P_n = 1 / 4
    expected = (
        -(
            math.log(0.5 / (0.5 + noise))
            + math.log(0.2 / (0.2 + noise))
            + sum(math.log(noise / (v + noise)) for v in (0.1, 0.3, 0.4, 0.05))
        )
        / 2
    )
    assert nce_loss(scores, n_data=4).item() == pytest.approx(expected, rel=1e-5)


def crd_tiny(student_labels, teacher_labels, **options) -> CRD:
    s_spec = tiny_spec("s", (3,), ((1, 1),), 3)
    t_spec = tiny_spec("t", (4,), ((1, 1),), 4)
    return CRD(make_ctx(s_spec, t_spec, student_labels, teacher_labels, num_classes=2), feat_dim=2, **options)


def test_crd_loss_hand_value():
    torch.manual_seed(3)
    # two classes with two rows each in both pools: K = 2 = every other-class row, so the
    # negative set is fixed and the loss can be recomputed without the sampler.
    crd = crd_tiny([0, 0, 1, 1], [0, 1, 0, 1])
    assert crd.k_student_anchor == 2 and crd.k_teacher_anchor == 2
    e_s = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, -1.0]])
    e_t = torch.tensor([[0.5, 1.0, 0.0, 1.0], [1.0, -1.0, 0.5, 0.0]])
    batch = make_batch([0, 1], index=[1, 2], teacher_index=[2, 3])
    s_bank, t_bank = crd.student_bank.numpy().copy(), crd.teacher_bank.numpy().copy()
    w_s, b_s = crd.embed_s.linear.weight.detach().numpy(), crd.embed_s.linear.bias.detach().numpy()
    w_t, b_t = crd.embed_t.linear.weight.detach().numpy(), crd.embed_t.linear.bias.detach().numpy()
    terms = crd.losses(outputs_from(e_s), outputs_from(e_t), batch)

    def unit(v):
        return v / np.linalg.norm(v)

    def direction(anchors, bank, bank_labels, positives, y, tau=0.07):
        scores = []
        for a, pos, c in zip(anchors, positives, y, strict=True):
            rows = [pos] + [r for r in range(len(bank)) if bank_labels[r] != c]
            scores.append([math.exp(bank[r] @ a / tau) for r in rows])
        scores = np.array(scores)
        z = scores.mean() * len(bank)  # Z from the first batch
        p = scores / z
        noise = (scores.shape[1] - 1) / len(bank)
        return -(np.log(p[:, 0] / (p[:, 0] + noise + 1e-7)).sum() + np.log(noise / (p[:, 1:] + noise + 1e-7)).sum()) / 2

    v_s = [unit(w_s @ e + b_s) for e in e_s.numpy()]
    v_t = [unit(w_t @ e + b_t) for e in e_t.numpy()]
    expected = direction(v_s, t_bank, [0, 1, 0, 1], [2, 3], [0, 1]) + direction(
        v_t, s_bank, [0, 0, 1, 1], [1, 2], [0, 1]
    )
    assert terms["crd"].item() == pytest.approx(expected, rel=1e-4)
    assert crd.z_student_anchor.item() > 0 and crd.z_teacher_anchor.item() > 0
    z_before = (crd.z_student_anchor.item(), crd.z_teacher_anchor.item())
    crd.losses(outputs_from(e_s * 2), outputs_from(e_t), batch)
    assert (crd.z_student_anchor.item(), crd.z_teacher_anchor.item()) == z_before  # Z is set once


def test_crd_negatives_never_exceed_what_exists_and_are_other_class():
    crd = crd_tiny([0, 0, 1], [0, 0, 0, 1, 1], nce_k=16384)
    # student anchors of class 0 see 2 class-1 teacher rows; of class 1, 3 class-0 rows
    assert crd.k_student_anchor == 2
    # teacher anchors of class 0 see 1 class-1 student row
    assert crd.k_teacher_anchor == 1
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    y = torch.tensor([0, 1, 2, 0])
    rows = sample_other_class_rows(labels, y, 5)
    assert rows.shape == (4, 5)
    for r, c in zip(rows, y, strict=True):
        assert len(set(r.tolist())) == 5 and bool((labels[r] != c).all())
    with pytest.raises(ValueError, match="single class"):
        crd_tiny([0, 0], [0, 0])


def test_crd_memory_bank_updates_only_batch_rows():
    torch.manual_seed(0)
    crd = crd_tiny([0, 0, 1, 1, 0, 1], [0, 1, 0, 1, 1])
    e_s = torch.randn(3, 3)
    e_t = torch.randn(3, 4)
    batch = make_batch([0, 1, 1], index=[0, 3, 5], teacher_index=[2, 3, 3])  # teacher row 3 twice
    s_before, t_before = crd.student_bank.clone(), crd.teacher_bank.clone()
    crd.losses(outputs_from(e_s), outputs_from(e_t), batch)
    assert torch.equal(crd.student_bank, s_before) and torch.equal(crd.teacher_bank, t_before)  # not before the step
    with torch.no_grad():
        v_s, v_t = crd.embed_s(e_s), crd.embed_t(e_t)
    crd.after_step(batch)
    untouched_s, untouched_t = [1, 2, 4], [0, 1, 4]
    assert torch.equal(crd.student_bank[untouched_s], s_before[untouched_s])
    assert torch.equal(crd.teacher_bank[untouched_t], t_before[untouched_t])
    for row, k in ((0, 0), (3, 1), (5, 2)):
        expected = 0.5 * s_before[row] + 0.5 * v_s[k]
        torch.testing.assert_close(crd.student_bank[row], expected / expected.norm())
    expected = 0.5 * t_before[2] + 0.5 * v_t[0]
    torch.testing.assert_close(crd.teacher_bank[2], expected / expected.norm())
    expected = 0.5 * t_before[3] + 0.5 * (v_t[1] + v_t[2]) / 2  # a repeated row takes the mean
    torch.testing.assert_close(crd.teacher_bank[3], expected / expected.norm())
    crd.after_step(batch)  # nothing pending: a second call changes nothing
    torch.testing.assert_close(crd.teacher_bank[3], expected / expected.norm())


def test_momentum_update_formula():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    momentum_update(bank, torch.tensor([1]), torch.tensor([[1.0, 0.0]]), 0.5)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(bank, torch.tensor([[1.0, 0.0], [s, s], [0.6, 0.8]]))


def test_crd_rejects_rows_of_the_wrong_class_or_range():
    crd = crd_tiny([0, 0, 1, 1], [0, 1, 0, 1])
    e_s, e_t = torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(ValueError, match="class-matched"):
        crd.losses(outputs_from(e_s), outputs_from(e_t), make_batch([0, 1], [0, 2], [1, 3]))
    with pytest.raises(IndexError, match="teacher_index"):
        crd.losses(outputs_from(e_s), outputs_from(e_t), make_batch([0, 1], [0, 2], [0, 9]))


def test_crd_error_messages_name_the_batch_field_and_the_pool():
    crd = crd_tiny([0, 0, 1, 1], [0, 1, 0, 1])
    e_s, e_t = torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(IndexError, match=r"batch\.index holds 0\.\.4 but its pool has 4"):  # max == pool size
        crd.losses(outputs_from(e_s), outputs_from(e_t), make_batch([0, 1], [0, 4], [0, 1]))
    with pytest.raises(IndexError, match=r"batch\.teacher_index holds 0\.\.4 "):
        crd.losses(outputs_from(e_s), outputs_from(e_t), make_batch([0, 1], [0, 2], [0, 4]))
    with pytest.raises(ValueError, match=r"labels of batch\.index rows differ"):
        crd.losses(outputs_from(e_s), outputs_from(e_t), make_batch([0, 1], [2, 0], [0, 1]))
    s_spec, t_spec = tiny_spec("s", (3,), ((1, 1),), 3), tiny_spec("t", (4,), ((1, 1),), 4)
    for pool, ctx in (("student", make_ctx(s_spec, t_spec, [0, 1], [0, 1])),
                      ("teacher", make_ctx(s_spec, t_spec, [0, 1], [0, 1]))):
        setattr(ctx, f"num_{pool}_train", 3)
        with pytest.raises(ValueError, match=rf"crd: {pool}_labels has 2 entries but num_{pool}_train is 3"):
            CRD(ctx)


def test_nce_loss_adds_eps_to_both_denominators():
    # scores and noise (K P_n = 1e-7) at the scale of eps = 1e-7: each denominator is 3e-7
    scores = torch.tensor([[1e-7, 1e-7]], dtype=torch.float64)
    assert nce_loss(scores, n_data=10**7).item() == pytest.approx(2 * math.log(3.0), rel=1e-9)


def test_negatives_available_counts_other_class_rows_of_each_anchor_class():
    from methods.crd import negatives_available

    bank = torch.tensor([0, 1, 1, 2, 2, 2])
    assert negatives_available(bank, torch.tensor([0, 0])) == 5  # one anchor class
    assert negatives_available(bank, torch.tensor([2, 0, 1])) == 3
    assert negatives_available(bank, torch.tensor([], dtype=torch.long)) == 0


def test_negatives_are_drawn_independently_per_anchor():
    torch.manual_seed(0)
    labels = torch.tensor([0] + [1] * 12)
    rows = sample_other_class_rows(labels, torch.zeros(6, dtype=torch.long), 3)
    assert len({tuple(sorted(r.tolist())) for r in rows}) > 1  # not one shared draw for every anchor


def test_crd_banks_start_uniform_in_plus_minus_one_over_sqrt_dim_over_3_and_options_apply():
    torch.manual_seed(0)
    labels = [0, 1] * 100
    crd = crd_tiny(labels, labels, nce_k=1)
    stdv = 1.0 / math.sqrt(2 / 3)  # feat_dim = 2
    assert crd.embed_s.linear.out_features == 2 and crd.embed_t.linear.out_features == 2
    assert crd.k_student_anchor == 1 and crd.k_teacher_anchor == 1
    for bank in (crd.student_bank, crd.teacher_bank):
        assert bank.shape == (200, 2)
        assert bank.min().item() >= -stdv and bank.max().item() <= stdv
        assert bank.min().item() < -0.95 * stdv and bank.max().item() > 0.95 * stdv
    # labels are the split's, not state: a checkpoint carries the banks but not the labels
    assert {"student_bank", "teacher_bank"} <= set(crd.state_dict())
    assert not {"student_labels", "teacher_labels"} & set(crd.state_dict())


def test_crd_z_is_estimated_once_even_below_one():
    torch.manual_seed(0)
    crd = crd_tiny([0, 0, 1, 1], [0, 1, 0, 1])
    with torch.no_grad():
        for embed in (crd.embed_s, crd.embed_t):  # every anchor is (1, 0)
            embed.linear.weight.zero_()
            embed.linear.bias.copy_(torch.tensor([1.0, 0.0]))
        crd.student_bank.copy_(torch.tensor([[-1.0, 0.0]]).expand(4, 2))
        crd.teacher_bank.copy_(torch.tensor([[-1.0, 0.0]]).expand(4, 2))
    batch = make_batch([0, 1], index=[1, 2], teacher_index=[2, 3])
    crd.losses(outputs_from(torch.randn(2, 3)), outputs_from(torch.randn(2, 4)), batch)
    z = math.exp(-1 / 0.07) * 4  # every score exp(-1 / tau), mean times N = 4
    assert crd.z_student_anchor.item() == pytest.approx(z, rel=1e-5)
    assert crd.z_teacher_anchor.item() == pytest.approx(z, rel=1e-5)
    with torch.no_grad():
        crd.student_bank.neg_()
        crd.teacher_bank.neg_()
    crd.losses(outputs_from(torch.randn(2, 3)), outputs_from(torch.randn(2, 4)), batch)
    assert crd.z_student_anchor.item() == pytest.approx(z, rel=1e-5)  # kept, though below 1
    assert crd.z_teacher_anchor.item() == pytest.approx(z, rel=1e-5)


# -- gradient flow with real backbones ------------------------------------------------
@pytest.mark.parametrize("name", GENERIC)
def test_gradients_reach_student_and_method_never_teacher(name, real_ctx, nets):
    student, teacher = nets
    distiller = methods.create(name, real_ctx)
    distiller.bind(student, teacher)
    student.zero_grad(set_to_none=True)
    teacher.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    batch = make_batch([0, 1, 2, 0], index=[0, 1, 2, 3], teacher_index=[9, 4, 8, 6])
    x_s = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    x_t = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE, requires_grad=True)
    s = student(x_s)
    t = teacher(x_t)  # built WITH autograd on purpose: the method must cut the graph itself
    terms = distiller.losses(s, t, batch)
    distill = sum(v for k, v in terms.items() if k != "ce")
    assert torch.isfinite(distill) and distill.item() > 0
    distill.backward()
    assert x_t.grad is None
    assert all(p.grad is None for p in teacher.parameters())
    first_conv = student.model.stages[0][0][0].weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    own = list(distiller.student_parameters())
    if name in ("fitnets", "crd"):
        assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    else:
        assert own == []


# -- end to end -----------------------------------------------------------------------
@pytest.mark.slow
def test_each_method_runs_in_every_regime_it_declares(tmp_path: Path):
    from benchmark import run

    regimes = ("paired", "unpaired", "all")
    records = run(
        methods=",".join(GENERIC),
        data="synth",
        regimes=",".join(regimes),
        seeds=[0],
        profile="smoke",
        out=tmp_path,
        epochs=1,
        teacher_epochs=1,
    )
    seen = {(r["method"], r["regime"]): r for r in records}
    for name in GENERIC:
        declared = methods.get(name).regimes
        for regime in regimes:
            record = seen[(name, regime)]
            assert record["status"] == ("ok" if regime in declared else "unsupported"), record.get("error")
            if record["status"] == "ok":
                loss_terms = record["history"][-1]["loss"]
                assert set(methods.get(name).default_weights) >= set(loss_terms) > {"ce"}
                assert all(np.isfinite(v) for v in loss_terms.values())
                assert 0.0 <= record["metrics"]["auc"] <= 1.0
