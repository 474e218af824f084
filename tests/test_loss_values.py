"""Loss values of the paper-table methods at settings the per-method tests do not pin
(other temperatures, scales and shapes): each assertion kills a class of wrong code that
the hand-computed tests elsewhere cannot tell from the right one."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods.kd import kd_loss


def softmax(row: list[float], temp: float) -> list[float]:
    e = [math.exp(v / temp) for v in row]
    return [v / sum(e) for v in e]


@pytest.mark.parametrize("temp", [1.0, 3.0, 4.0])
def test_kd_loss_scales_with_t_squared(temp: float) -> None:
    # T = 2 cannot tell T**2 from 2*T; T = 1 and 3 can, T = 4 (Hinton's usual) too.
    s = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    t = [[0.0, 0.0, 3.0], [4.0, 0.0, 1.0]]
    total = 0.0
    for srow, trow in zip(s, t, strict=True):
        ps, pt = softmax(srow, temp), softmax(trow, temp)
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    expected = total / len(s) * temp**2
    assert kd_loss(torch.tensor(s), torch.tensor(t), temp).item() == pytest.approx(expected, rel=1e-6)


# -- RKD (Park et al., CVPR 2019, Sec. 3.2) -----------------------------------------------------
def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1.0 else d - 0.5


def ref_distances(x: list[list[float]]) -> list[list[float]]:
    return [[math.dist(a, b) for b in x] for a in x]


def ref_rkd_distance(s: list[list[float]], t: list[list[float]]) -> float:
    """psi_D = ||x_i - x_j|| / mu (mu: mean over the pairs i != j); Huber; mean over all B^2 entries."""
    def psi(x):
        d = ref_distances(x)
        n = len(x)
        mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return [[v / mu for v in row] for row in d]

    ps, pt = psi(s), psi(t)
    n = len(s)
    return sum(huber(ps[i][j], pt[i][j]) for i in range(n) for j in range(n)) / n**2


def ref_rkd_angle(s: list[list[float]], t: list[list[float]]) -> float:
    """psi_A = <e_ij, e_ik>, e_ij = (x_j - x_i) / ||x_j - x_i|| (0 when j == i); Huber; mean over B^3."""
    def psi(x):
        n = len(x)

        def e(i, j):
            if i == j:
                return [0.0] * len(x[0])
            d = [b - a for a, b in zip(x[i], x[j], strict=True)]
            norm = math.sqrt(sum(v * v for v in d))
            return [v / norm for v in d]

        return [[[sum(a * b for a, b in zip(e(i, j), e(i, k), strict=True)) for k in range(n)] for j in range(n)]
                for i in range(n)]

    ps, pt = psi(s), psi(t)
    n = len(s)
    return sum(huber(ps[i][j][k], pt[i][j][k]) for i in range(n) for j in range(n) for k in range(n)) / n**3


@pytest.mark.parametrize("scale", [0.05, 3.0])
def test_rkd_losses_on_general_rows(scale: float) -> None:
    # random (not orthogonal, not symmetric) rows at a scale where distances are < 1 and > 1:
    # catches x_i + x_j for x_j - x_i and a clamp of the squared distances at a large floor
    from methods.rkd import pairwise_distances, rkd_angle_loss, rkd_distance_loss

    g = torch.Generator().manual_seed(0)
    s = (torch.randn(5, 3, generator=g) * scale).double()
    t = (torch.randn(5, 4, generator=g) * scale * 2).double()
    sl, tl = s.tolist(), t.tolist()
    torch.testing.assert_close(pairwise_distances(s), torch.tensor(ref_distances(sl), dtype=torch.float64))
    assert rkd_distance_loss(s, t).item() == pytest.approx(ref_rkd_distance(sl, tl), rel=1e-9)
    assert rkd_angle_loss(s, t).item() == pytest.approx(ref_rkd_angle(sl, tl), rel=1e-9)


def test_rkd_equal_rows_have_distance_zero_and_count_in_the_mean() -> None:
    # all rows equal: nothing to relate, the normalised distances are all 0 (not 1 off the
    # diagonal, which a clamped sqrt(eps) "distance" divided by its own mean gives)
    from methods.rkd import mean_normalised_distances, rkd_distance_loss

    same = torch.tensor([[0.3, -1.2, 2.0]] * 4, dtype=torch.float64)
    torch.testing.assert_close(mean_normalised_distances(same), torch.zeros(4, 4, dtype=torch.float64))
    one = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    torch.testing.assert_close(mean_normalised_distances(one), torch.zeros(1, 1, dtype=torch.float64))
    # two equal rows among others (a pseudo-pair batch that draws one NBI image twice): their
    # distance is 0 and enters the mean over the B (B - 1) pairs as a 0 (Park et al., mu)
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0], [1.0, -1.0]], dtype=torch.float64)
    d = ref_distances(x.tolist())
    mu = sum(d[i][j] for i in range(4) for j in range(4) if i != j) / 12
    torch.testing.assert_close(mean_normalised_distances(x), torch.tensor(d, dtype=torch.float64) / mu)
    two = torch.tensor([[1.0, 2.0], [-2.0, 6.0]], dtype=torch.float64)  # B = 2: psi = 1 off the diagonal
    torch.testing.assert_close(mean_normalised_distances(two), 1.0 - torch.eye(2, dtype=torch.float64))
    # student rows all equal against a spread teacher: the loss is the Huber of the teacher's psi alone
    t = torch.randn(4, 3, generator=torch.Generator().manual_seed(3)).double()
    assert rkd_distance_loss(same, t).item() == pytest.approx(
        ref_rkd_distance_target_only(t.tolist()), rel=1e-9)


def ref_rkd_distance_target_only(t: list[list[float]]) -> float:
    d = ref_distances(t)
    n = len(t)
    mu = sum(d[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    return sum(huber(0.0, d[i][j] / mu) for i in range(n) for j in range(n)) / n**2


# -- PKT (Passalis & Tefas, ECCV 2018, Sec. 3) -------------------------------------------------
def ref_pkt(s: list[list[float]], t: list[list[float]], eps: float) -> float:
    """K = (cos + 1) / 2 (zero rows: cos 0), rows normalised; mean over B^2 of p log((p+eps)/(q+eps))."""
    def probs(x):
        def unit(v):
            n = math.sqrt(sum(a * a for a in v))
            return [a / (n + eps) if n + eps > 0 else 0.0 for a in v]

        u = [unit(v) for v in x]
        k = [[(sum(a * b for a, b in zip(ui, uj, strict=True)) + 1) / 2 for uj in u] for ui in u]
        return [[v / sum(row) for v in row] for row in k]

    p, q = probs(t), probs(s)
    n = len(s)
    return sum(p[i][j] * math.log((p[i][j] + eps) / (q[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


@pytest.mark.parametrize("eps", [1e-7, 0.0, 0.3])
def test_pkt_loss_on_general_rows(eps: float) -> None:
    # three rows (row sums differ: catches normalising columns instead of rows), a zero row
    # with eps = 0 (0/0 must become 0, not NaN or 1)
    from methods.pkt import pkt_loss

    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 3, generator=g).double()
    t = torch.randn(4, 5, generator=g).double()
    s[3] = 0.0
    got = pkt_loss(s, t, eps=eps).item()
    assert math.isfinite(got)
    assert got == pytest.approx(ref_pkt(s.tolist(), t.tolist(), eps), rel=1e-9)


def test_pkt_method_passes_its_eps_option() -> None:
    from methods.base import Batch, DistillerContext, ModelSpec, Outputs
    from methods.pkt import PKT, pkt_loss

    spec = ModelSpec(name="hand", num_classes=2, embedding_dim=3, feature_channels=(3,), feature_sizes=((1, 1),))
    y = torch.tensor([0, 1, 0])
    ctx = DistillerContext(student=spec, teacher=spec, num_classes=2, regime="paired", num_student_train=3,
                           num_teacher_train=3, student_labels=y, teacher_labels=y, num_epochs=1, steps_per_epoch=1,
                           batch_size=3)
    g = torch.Generator().manual_seed(2)
    s_emb, t_emb = torch.randn(3, 3, generator=g), torch.randn(3, 3, generator=g)

    def out(e):
        return Outputs(logits=torch.zeros(3, 2), embedding=e, features=[])

    batch = Batch(student_x=torch.zeros(3, 3, 2, 2), teacher_x=torch.zeros(3, 3, 2, 2), y=y,
                  twin=torch.ones(3, dtype=torch.bool), index=torch.arange(3), teacher_index=torch.arange(3))
    terms = PKT(ctx, eps=0.5).losses(out(s_emb), out(t_emb), batch)
    assert terms["pkt"].item() == pytest.approx(pkt_loss(s_emb, t_emb, eps=0.5).item(), rel=1e-6)
    assert terms["pkt"].item() != pytest.approx(pkt_loss(s_emb, t_emb).item(), rel=1e-3)


# -- SAMD (the suite's reconstruction): CAM attention, resized teacher map, twin rows ----------
def ref_cam(fmap: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    cam = torch.einsum("d,dhw->hw", w, fmap).clamp_min(0)
    return (cam - cam.min()) / max(float(cam.max() - cam.min()), 1e-8)


@pytest.mark.parametrize("pseudo_pairs", [False, True])
def test_samd_resized_teacher_map_and_rows(pseudo_pairs: bool) -> None:
    from methods.base import Batch, DistillerContext, ModelSpec, Outputs
    from methods.samd import SAMD

    def spec(size):
        return ModelSpec(name="hand", num_classes=2, embedding_dim=2, feature_channels=(2,), feature_sizes=(size,))

    y = torch.tensor([0, 1, 1])
    ctx = DistillerContext(student=spec((2, 2)), teacher=spec((4, 4)), num_classes=2, regime="all",
                           num_student_train=3, num_teacher_train=3, student_labels=y, teacher_labels=y,
                           num_epochs=1, steps_per_epoch=1, batch_size=3)
    g = torch.Generator().manual_seed(3)
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -0.5], [0.2, 1.0]]))
    fs, ft = torch.randn(3, 2, 2, 2, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    s = Outputs(logits=torch.zeros(3, 2), embedding=torch.zeros(3, 2), features=[fs], classifier=head)
    t = Outputs(logits=torch.zeros(3, 2), embedding=torch.zeros(3, 2), features=[ft], classifier=head)
    twin = torch.tensor([True, False, True])
    batch = Batch(student_x=torch.zeros(3, 3, 8, 8), teacher_x=torch.zeros(3, 3, 8, 8), y=y, twin=twin,
                  index=torch.arange(3), teacher_index=torch.arange(3))
    got = SAMD(ctx, pseudo_pairs=pseudo_pairs).losses(s, t, batch)["samd"].item()
    losses = []
    for i in range(3):
        if not (pseudo_pairs or bool(twin[i])):
            continue
        a_s = ref_cam(fs[i], head.weight[y[i]].detach())
        cam_t = ref_cam(ft[i], head.weight[y[i]].detach())
        # bilinear, half-pixel centres, 4x4 -> 2x2: each output is the mean of a 2x2 block
        a_t = cam_t.reshape(2, 2, 2, 2).mean(dim=(1, 3))
        losses.append(1.0 - float(F.cosine_similarity(a_s.flatten(), a_t.flatten(), dim=0)))
    assert got == pytest.approx(sum(losses) / len(losses), rel=1e-5)
