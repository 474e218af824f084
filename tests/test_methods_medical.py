"""CRCKD and SSD-KD: each loss term on hand-checkable inputs, the mean-teacher update, the
class-guided memory banks, the rotation batch layout, and gradient routing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.models.backbones import create_backbone
from methods import Batch, DistillerContext, create
from methods.base import ModelSpec, Outputs
from methods.crckd import (
    ClassIndex,
    ContrastBank,
    ema_update,
    inverse_frequency_weights,
    nce_loss,
    random_rot_flip,
    relation_kl,
    sigmoid_rampup,
    softmax_kl,
)
from methods.ssd_kd import (
    ConvReg,
    channel_relation_loss,
    gram_matrix,
    interleave_rotations,
    original_rows,
    ranked_keep,
    rkd_angle,
    rkd_distance,
    rotation_batch,
    rotation_similarity,
    rotation_targets,
)

SIZE = 16
C = 3
N = 24


# ------------------------------------------------------------------------------ CRCKD pieces
def test_sigmoid_rampup_values() -> None:
    assert sigmoid_rampup(0, 30) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(15, 30) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(30, 30) == 1.0 and sigmoid_rampup(50, 30) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


def test_ema_update_arithmetic() -> None:
    student = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1)).requires_grad_(False)
    ema = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1)).requires_grad_(False)
    with torch.no_grad():
        student[0].weight.fill_(1.0)
        ema[0].weight.fill_(0.0)
        student[1].running_mean.fill_(2.0)
        student[1].num_batches_tracked.fill_(7)
    # step 0: alpha = min(1 - 1/1, 0.99) = 0 -> a copy of the student
    assert ema_update(ema, student, 0.99, step=0) == 0.0
    assert float(ema[0].weight) == 1.0 and float(ema[1].running_mean) == 2.0
    assert int(ema[1].num_batches_tracked) == 7
    # step 9: alpha = min(0.9, 0.99) = 0.9 -> 0.9 * 1 + 0.1 * 3 = 1.2
    with torch.no_grad():
        student[0].weight.fill_(3.0)
    assert ema_update(ema, student, 0.99, step=9) == pytest.approx(0.9)
    assert float(ema[0].weight) == pytest.approx(1.2)
    # late steps use the decay itself: 0.99 * 1.2 + 0.01 * 3 = 1.218
    assert ema_update(ema, student, 0.99, step=10_000) == pytest.approx(0.99)
    assert float(ema[0].weight) == pytest.approx(1.218)


def test_inverse_frequency_weights() -> None:
    w = inverse_frequency_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([4 / 3, 4.0, 0.0])


def test_nce_loss_by_hand() -> None:
    # P = 2, K = 2, bank of 4: noise m * Pn = 2/4 = 0.5.
    scores = torch.tensor([[0.5, 1.5, 0.5, 0.25]])
    # -( (ln(.5/1) + ln(1.5/2)) / 2 + ln(.5/1) + ln(.5/.75) )
    expected = -((math.log(0.5) + math.log(0.75)) / 2 + math.log(0.5) + math.log(2 / 3))
    assert float(nce_loss(scores, num_pos=2, bank_size=4)) == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(1.589027, abs=1e-5)


def test_contrast_bank_scores_normaliser_and_update() -> None:
    bank = ContrastBank(size=2, dim=2, momentum=0.5)
    bank.memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    out = bank.scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 1]]), temperature=1.0)
    # raw exp scores (e, 1); Z = mean * bank size = e + 1, fixed from the first call on
    e = math.e
    assert out[0].tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)])
    assert float(bank.z) == pytest.approx(e + 1)
    again = bank.scores(torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]]), temperature=1.0)
    assert again[0].tolist() == pytest.approx([1 / (e + 1), e / (e + 1)])
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    s = 1 / math.sqrt(2)
    assert bank.memory[0].tolist() == pytest.approx([s, s]) and bank.memory[1].tolist() == [0.0, 1.0]


def test_bank_centroids_are_relu_class_means() -> None:
    index = ClassIndex(torch.tensor([0, 1, 0]), 2, num_pos=1, num_neg=1)
    bank = ContrastBank(size=3, dim=2, momentum=0.5)
    bank.memory.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5], [3.0, 1.0]]))
    assert bank.centroids(index, 2).tolist() == [[2.0, 0.5], [0.5, 0.5]]


def test_relation_kl_by_hand() -> None:
    anchors = torch.eye(2)
    f_s, f_t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # softmax([0,1]) vs softmax([1,0]): KL = (p - q) ln(p/q) with p/q = e -> tanh(1/2)
    assert float(relation_kl(f_s, anchors, f_t, anchors, 1.0)) == pytest.approx(math.tanh(0.5), abs=1e-6)
    assert float(relation_kl(f_t, anchors, f_t, anchors, 0.07)) == pytest.approx(0.0, abs=1e-6)


def test_softmax_kl_by_hand() -> None:
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    assert float(softmax_kl(s, t)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)


def test_memory_bank_positives_same_class_negatives_other_class() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 7)
    index = ClassIndex(labels, 3, num_pos=20, num_neg=4096)
    assert index.num_pos == 3  # capped by the smallest class
    assert index.num_neg == 15 - 7  # capped by the fewest other-class images (class 2)
    anchors = torch.tensor([0, 4, 5, 7, 9, 14, 2])
    drawn = index.sample(anchors)
    assert drawn.shape == (len(anchors), 3 + 8)
    for row, a in zip(drawn, anchors, strict=True):
        assert int(row[0]) == int(a)  # the anchor's own entry is the first positive
        assert (labels[row[:3]] == labels[a]).all()
        assert (labels[row[3:]] != labels[a]).all()
        assert len(set(row.tolist())) == len(row)  # without replacement


def test_random_rot_flip_gives_a_dihedral_view_of_each_image() -> None:
    torch.manual_seed(1)
    x = torch.rand(16, 3, 5, 5)
    y = random_rot_flip(x)
    seen = set()
    for a, b in zip(x, y, strict=True):
        views = {(f, k): torch.rot90(a.flip(-2) if f else a, k, dims=(-2, -1)) for f in (0, 1) for k in range(4)}
        hits = [key for key, v in views.items() if torch.equal(v, b)]
        assert hits
        seen.update(hits)
    assert len(seen) > 2  # different transforms across the batch


# ------------------------------------------------------------------------------ end-to-end fixtures
def make_ctx(student: nn.Module, teacher: nn.Module | None, regime: str, epochs: int = 4) -> DistillerContext:
    labels = torch.arange(N) % C
    return DistillerContext(
        student=student.spec(SIZE),
        teacher=teacher.spec(SIZE) if teacher is not None else None,
        num_classes=C,
        regime=regime,
        num_student_train=N,
        num_teacher_train=N,
        student_labels=labels,
        teacher_labels=labels,
        num_epochs=epochs,
        steps_per_epoch=3,
        batch_size=6,
    )


def make_batch(epoch: int, epochs: int = 4, step: int = 0, same: bool = True, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(N, generator=g)[:6]
    teacher_index = index if same else torch.randperm(N, generator=g)[:6]
    y = index % C
    if not same:  # class-matched pseudo-pairs: a teacher row of the student row's class
        teacher_index = (teacher_index // C) * C + y
    x = torch.rand(6, 3, SIZE, SIZE, generator=g)
    tx = x if same else torch.rand(6, 3, SIZE, SIZE, generator=g)
    return Batch(
        student_x=x, teacher_x=tx, y=y, twin=torch.full((6,), same), index=index,
        teacher_index=teacher_index, epoch=epoch, num_epochs=epochs, step=step,
    )  # fmt: skip


@pytest.fixture(scope="module")
def nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_backbone("kdbench_cnn4", C)
    teacher = create_backbone("kdbench_cnn4", C)
    teacher.eval()
    teacher.requires_grad_(False)
    return student, teacher


def grads(module: nn.Module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


# ------------------------------------------------------------------------------ CRCKD end to end
def test_crckd_schedule_ema_and_gradients(nets: tuple[nn.Module, nn.Module]) -> None:
    student, _ = nets
    student.zero_grad(set_to_none=True)
    d = create("crckd", make_ctx(student, None, "same", epochs=8))
    d.bind(student, None)
    assert d.start_epoch(8) == 2  # 20 of 80 epochs, scaled
    assert not set(map(id, d.ema.parameters())) & set(map(id, d.student_parameters()))
    assert not any(p.requires_grad for p in d.ema.parameters())  # a frozen copy

    early = make_batch(epoch=1, epochs=8)
    terms = d.losses(student(early.student_x), None, early)
    assert set(terms) == {"ce", "ccd"}  # consistency and CRP start at epoch 2

    late = make_batch(epoch=3, epochs=8, seed=1)
    s = student(late.student_x)
    terms = d.losses(s, None, late)
    assert set(terms) == {"ce", "ccd", "consistency", "crp"}
    assert all(torch.isfinite(v) for v in terms.values())
    # the consistency term carries the ramp-up exp(-5 (1 - 3/3)^2) = 1 at epoch 3 of 8 (ramp over 3 epochs)
    assert d.rampup(3, 8) == 1.0 and d.rampup(1, 8) == pytest.approx(math.exp(-5 * (1 - 1 / 3) ** 2))
    sum(terms.values()).backward()
    assert any(grads(student)) and all(grads(d.embed_s)) and any(grads(d.embed_t))
    assert all(p.grad is None for p in d.ema.parameters())

    before = [p.clone() for p in d.ema.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    d.after_step(make_batch(epoch=3, epochs=8, step=500))
    moved = [float((p - b).abs().max()) for p, b in zip(d.ema.parameters(), before, strict=True)]
    assert all(m == pytest.approx(0.01, rel=1e-3) for m in moved)  # 0.01 * (+1)
    with torch.no_grad():
        for p in student.parameters():
            p.sub_(1.0)


def test_crckd_nbi_uses_teacher_bank_and_grads_the_student(nets: tuple[nn.Module, nn.Module]) -> None:
    student, teacher = nets
    student.zero_grad(set_to_none=True)
    d = create("crckd-nbi", make_ctx(student, teacher, "unpaired"))
    d.bind(student, teacher)
    batch = make_batch(epoch=3, same=False)
    bank_t = d.bank_t.memory.clone()
    bank_s = d.bank_s.memory.clone()
    with torch.no_grad():
        t = teacher(batch.teacher_x)
    terms = d.losses(student(batch.student_x), t, batch)
    assert set(terms) == {"ce", "ccd", "consistency", "crp"}
    changed_t = (d.bank_t.memory != bank_t).any(dim=1)
    changed_s = (d.bank_s.memory != bank_s).any(dim=1)
    assert set(torch.nonzero(changed_t).flatten().tolist()) == set(batch.teacher_index.tolist())
    assert set(torch.nonzero(changed_s).flatten().tolist()) == set(batch.index.tolist())
    sum(terms.values()).backward()
    assert any(grads(student))


# ------------------------------------------------------------------------------ CRCKD against direct computations
def test_nce_loss_eps_and_per_row_sums() -> None:
    # Two anchors: the K negatives are summed per row, then rows averaged (not summed over the batch).
    scores = torch.tensor([[0.5, 1.5, 0.5, 0.25], [1.0, 0.5, 0.5, 1.5]])
    def row(p: list[float], n: list[float]) -> float:
        return sum(math.log(v / (v + 0.5)) for v in p) / len(p) + sum(math.log(0.5 / (v + 0.5)) for v in n)
    expected = -(row([0.5, 1.5], [0.5, 0.25]) + row([1.0, 0.5], [0.5, 1.5])) / 2
    assert float(nce_loss(scores, num_pos=2, bank_size=4)) == pytest.approx(expected, abs=1e-5)
    # The 1e-7 of the released ContrastLoss: with noise m Pn = 1e-7 it is a third of each denominator.
    tiny = torch.tensor([[1e-7, 1e-7]], dtype=torch.float64)
    assert float(nce_loss(tiny, num_pos=1, bank_size=10_000_000)) == pytest.approx(2 * math.log(3.0), rel=1e-6)


def test_sigmoid_rampup_over_less_than_one_epoch() -> None:
    assert sigmoid_rampup(0.25, 0.5) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0, 0.75) == pytest.approx(math.exp(-5))


def test_random_rot_flip_draws_the_eight_dihedral_views_uniformly() -> None:
    torch.manual_seed(0)
    x = torch.rand(800, 1, 3, 3)
    y = random_rot_flip(x)
    counts = dict.fromkeys(((f, k) for f in (0, 1) for k in range(4)), 0)
    for a, b in zip(x, y, strict=True):
        hits = [(f, k) for f, k in counts if torch.equal(torch.rot90(a.flip(-2) if f else a, k, dims=(-2, -1)), b)]
        assert len(hits) == 1  # a random 3x3 image has no symmetry: exactly one view matches
        counts[hits[0]] += 1
    # flip with probability 1/2, then k quarter turns, k uniform in 0..3: 100 expected each
    assert all(70 <= c <= 130 for c in counts.values()), counts
    with pytest.raises(ValueError, match="square"):
        random_rot_flip(torch.rand(2, 1, 3, 4))


def test_contrast_bank_init_range_and_normaliser() -> None:
    torch.manual_seed(0)
    bank = ContrastBank(size=500, dim=12, momentum=0.5)
    # uniform in [-1/sqrt(d/3), 1/sqrt(d/3)] = [-0.5, 0.5], as the released ContrastMemory
    assert float(bank.memory.min()) >= -0.5 and float(bank.memory.max()) <= 0.5
    assert float(bank.memory.min()) < -0.49 and float(bank.memory.max()) > 0.49
    assert len(bank) == 500
    # Z = mean raw score x bank size (3 entries, not the width 2), set once even when below 1
    bank = ContrastBank(size=3, dim=2, momentum=0.5)
    bank.memory.copy_(torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, 0.0]]))
    out = bank.scores(torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 0]]), temperature=0.5)
    z = math.exp(-2.0) * 3  # raw exp(-1 / 0.5) twice
    assert float(bank.z) == pytest.approx(z) and out[0].tolist() == pytest.approx([math.exp(-2.0) / z] * 2)
    again = bank.scores(torch.tensor([[0.0, 1.0]]), torch.tensor([[0, 1]]), temperature=0.5)
    assert float(bank.z) == pytest.approx(z) and again[0].tolist() == pytest.approx([1 / z, math.exp(-2.0) / z])


def test_class_index_and_centroids_with_an_absent_class() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1])  # class 2 of 3 has no image
    index = ClassIndex(labels, 3, num_pos=20, num_neg=20)
    assert index.num_pos == 2 and index.num_neg == 2  # capped by the classes present only
    bank = ContrastBank(size=5, dim=2, momentum=0.5)
    bank.memory.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5], [3.0, 1.0], [1.5, -0.5], [1.0, 0.0]]))
    c = bank.centroids(index, 3)
    assert c[0].tolist() == [2.0, 0.5] and c[1].tolist() == pytest.approx([1.0, 0.5 / 3]) and c[2].tolist() == [0, 0]


def _toy_spec(width: int, classes: int = 2) -> ModelSpec:
    return ModelSpec("toy", classes, width, (width,), ((1, 1),))


def _crckd_ctx(student_labels: list[int], teacher_labels: list[int], s_width: int = 3, t_width: int | None = 5,
               epochs: int = 8) -> DistillerContext:
    return DistillerContext(
        student=_toy_spec(s_width), teacher=_toy_spec(t_width) if t_width else None, num_classes=2,
        regime="unpaired", num_student_train=len(student_labels), num_teacher_train=len(teacher_labels),
        student_labels=torch.tensor(student_labels), teacher_labels=torch.tensor(teacher_labels),
        num_epochs=epochs, steps_per_epoch=1, batch_size=2,
    )  # fmt: skip


def _toy_outputs(g: torch.Generator, width: int, rows: int = 2) -> Outputs:
    emb = torch.randn(rows, width, generator=g)
    return Outputs(logits=torch.randn(rows, 2, generator=g), embedding=emb, features=[emb[:, :, None, None]])


def test_crckd_nbi_terms_match_a_direct_computation() -> None:
    """Every term of crckd-nbi in float64 from the paper's definitions. Pools of 3 + 3 images
    with P = 3 and K = 3: every draw covers the whole pool, so the NCE value (mean over
    positives, sum over negatives, Z from the mean score) does not depend on the draw."""
    torch.manual_seed(0)
    s_labels, t_labels = [0, 1, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1]  # the two pools ordered differently
    d = create("crckd-nbi", _crckd_ctx(s_labels, t_labels), feat_dim=4)
    assert d.embed_s.linear.weight.shape == (4, 3) and d.embed_t.linear.weight.shape == (4, 5)
    assert d.index_t is not d.index_s and d.index_t.labels.tolist() == t_labels
    d.eval()  # banks are read, not updated
    g = torch.Generator().manual_seed(1)
    s, t = _toy_outputs(g, 3), _toy_outputs(g, 5)
    batch = Batch(student_x=torch.rand(2, 3, 4, 4), teacher_x=None, y=torch.tensor([0, 1]),
                  twin=torch.zeros(2, dtype=torch.bool), index=torch.tensor([0, 3]),
                  teacher_index=torch.tensor([1, 4]), epoch=2, num_epochs=8)  # fmt: skip
    bank_s, bank_t = d.bank_s.memory.double().clone(), d.bank_t.memory.double().clone()
    terms = d.losses(s, t, batch)
    assert set(terms) == {"ce", "ccd", "consistency", "crp"}  # epoch 2 = 25% of 8: the late terms start

    def embed(head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        z = x.double() @ head.weight.detach().double().t() + head.bias.detach().double()
        return z / z.norm(dim=1, keepdim=True)

    tau = 0.07
    f_s, f_t = embed(d.embed_s.linear, s.embedding), embed(d.embed_t.linear, t.embedding)

    def nce(anchors: torch.Tensor, bank: torch.Tensor, pool: list[int], classes: list[int]) -> float:
        raw = []
        for f, c in zip(anchors, classes, strict=True):
            pos = [j for j, lab in enumerate(pool) if lab == c]
            neg = [j for j, lab in enumerate(pool) if lab != c]
            raw.append(torch.exp(bank[pos + neg] @ f / tau))
        raw = torch.stack(raw)
        x = raw / (raw.mean() * len(pool))
        noise = 3 / len(pool)
        loss = torch.log(x[:, :3] / (x[:, :3] + noise)).mean(1) + torch.log(noise / (x[:, 3:] + noise)).sum(1)
        return float(-loss.mean())

    ccd = nce(f_s, bank_t, t_labels, [0, 1]) + nce(f_t, bank_s, s_labels, [0, 1])
    assert terms["ccd"].item() == pytest.approx(ccd, rel=1e-4)

    def centroids(bank: torch.Tensor, pool: list[int]) -> torch.Tensor:
        rows = [bank[[j for j, lab in enumerate(pool) if lab == c]].clamp_min(0).mean(0) for c in (0, 1)]
        c = torch.stack(rows)
        return c / c.norm(dim=1, keepdim=True)

    p_t = torch.softmax(f_t @ centroids(bank_t, t_labels).t() / tau, 1)
    log_q = torch.log_softmax(f_s @ centroids(bank_s, s_labels).t() / tau, 1)
    crp = float((p_t * (p_t.log() - log_q)).sum(1).mean())
    assert terms["crp"].item() == pytest.approx(crp, rel=1e-4, abs=1e-6)

    ramp = math.exp(-5 * (1 - 2 / 3) ** 2)  # ramp-up over 37.5% of 8 = 3 epochs, epoch 2
    p = torch.softmax(t.logits.double(), 1)
    kl = float((p * (p.log() - torch.log_softmax(s.logits.double(), 1))).sum(1).mean())
    assert terms["consistency"].item() == pytest.approx(ramp * kl, rel=1e-5)
    ce = float(torch.nn.functional.cross_entropy(s.logits.double(), batch.y))  # balanced pool: equal weights
    assert terms["ce"].item() == pytest.approx(ce, rel=1e-6)


@pytest.mark.parametrize("weighted", [True, False])
def test_crckd_cross_entropy_class_weights(weighted: bool) -> None:
    d = create("crckd-nbi", _crckd_ctx([0, 0, 0, 1], [0, 1, 0, 1]), feat_dim=4, weighted_ce=weighted)
    d.eval()
    g = torch.Generator().manual_seed(2)
    s, t = _toy_outputs(g, 3), _toy_outputs(g, 5)
    batch = Batch(student_x=torch.rand(2, 3, 4, 4), teacher_x=None, y=torch.tensor([0, 1]),
                  twin=torch.zeros(2, dtype=torch.bool), index=torch.tensor([0, 3]),
                  teacher_index=torch.tensor([0, 1]), epoch=0, num_epochs=8)  # fmt: skip
    logp = torch.log_softmax(s.logits.double(), 1)
    w = [4 / 3, 4.0] if weighted else [1.0, 1.0]  # N / n_c
    expected = -(w[0] * logp[0, 0] + w[1] * logp[1, 1]) / (w[0] + w[1])
    assert d.losses(s, t, batch)["ce"].item() == pytest.approx(float(expected), rel=1e-6)


def test_crckd_embeddings_are_unit_rows_and_widths_follow_the_networks() -> None:
    from methods.crckd import Embed

    torch.manual_seed(0)
    z = Embed(3, 4)(torch.randn(5, 3))
    assert z.norm(dim=1).tolist() == pytest.approx([1.0] * 5)
    # crckd's teacher is the EMA of the student: its head takes the student's width even if a teacher is given
    d = create("crckd", _crckd_ctx([0, 1, 0, 1], [0, 1, 0, 1], t_width=5), feat_dim=4)
    assert d.embed_t.linear.weight.shape == (4, 3) and d.index_t is d.index_s
    assert [tuple(p.shape) for p in d.student_parameters()] == [tuple(p.shape) for p in d.parameters()]


def test_crckd_draws_one_sample_for_both_directions_and_crckd_nbi_one_per_pool() -> None:
    """The released code shares one draw of contrast indices between the two directions
    when both banks index the same pool; crckd-nbi draws from each pool with its own anchors."""
    torch.manual_seed(0)
    shared = create("crckd", _crckd_ctx([0, 1, 0, 1], [0, 1, 0, 1], t_width=None), feat_dim=4)
    nbi = create("crckd-nbi", _crckd_ctx([0, 1, 0, 1], [0, 0, 1, 1]), feat_dim=4)
    for d in (shared, nbi):
        d.eval()
        calls: list[tuple[str, list[int]]] = []
        pools = {id(d.index_s): ("s", d.index_s), id(d.index_t): ("t", d.index_t)}  # one entry if shared
        for name, index in pools.values():
            def record(anchors: torch.Tensor, _name: str = name, _sample=index.sample, _calls=calls) -> torch.Tensor:
                _calls.append((_name, anchors.tolist()))
                return _sample(anchors)
            index.sample = record
        f = torch.nn.functional.normalize(torch.randn(2, 4), dim=1)
        d.ccd_and_crp(f, f, torch.tensor([0, 1]), torch.tensor([2, 3]))
        if d is shared:
            assert len(calls) == 1
        else:
            assert sorted(calls) == [("s", [0, 1]), ("t", [2, 3])]


# ------------------------------------------------------------------------------ SSD-KD pieces
def test_rotation_batch_layout_is_sample_major() -> None:
    x = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    r = rotation_batch(x)
    assert r.shape == (8, 1, 2, 2)
    for b in range(2):
        for k in range(4):
            assert torch.equal(r[4 * b + k], torch.rot90(x[b], k, dims=(-2, -1)))
            # the same direction as numpy.rot90 on an H x W image (the released loader)
            assert np.array_equal(r[4 * b + k, 0].numpy(), np.rot90(x[b, 0].numpy(), k))
    assert original_rows(8).tolist() == [True, False, False, False] * 2
    assert rotation_targets(2).tolist() == [0, 0, 0, 1, 1, 1]


def test_rotation_similarity_rows_and_columns() -> None:
    feats = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)  # each view like its own original
    sim = rotation_similarity(feats)
    assert sim.shape == (6, 2)
    assert sim.argmax(dim=1).tolist() == rotation_targets(2).tolist()
    assert sim.tolist() == [[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 3


def test_ranked_keep_by_hand() -> None:
    scores = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 3.0, 0.0], [0.0, 3.0, 1.0]])
    target = torch.tensor([0, 0, 0, 1])  # target ranks 0, 2, 1, 0
    assert ranked_keep(scores, target, 1.0).tolist() == [0, 1, 2, 3]
    assert ranked_keep(scores, target, 0.5).tolist() == [0, 2, 3]  # int(0.5 * 2) = 1 wrong row, best ranked
    assert ranked_keep(scores, target, 0.0).tolist() == [0, 3]


def test_rkd_terms() -> None:
    torch.manual_seed(0)
    t = torch.randn(5, 4)
    assert float(rkd_distance(2.0 * t, t)) == pytest.approx(0.0, abs=1e-6)  # scale invariant
    assert float(rkd_angle(3.0 * t + 1.0, t)) == pytest.approx(0.0, abs=1e-6)
    # three points: teacher distances (1, 1, sqrt 2), student (2, 1, sqrt 5), each over its mean
    t3 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    s3 = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    dt = np.array([1.0, 1.0, math.sqrt(2)])
    ds = np.array([2.0, 1.0, math.sqrt(5)])
    diff = np.abs(ds / ds.mean() - dt / dt.mean())
    huber = np.where(diff < 1, 0.5 * diff**2, diff - 0.5)
    assert float(rkd_distance(s3, t3)) == pytest.approx(2 * huber.sum() / 9, abs=1e-6)  # 9 matrix entries
    # right angle at point 0 in the teacher; the student keeps it: the (1,0,2) cosine is 0 in both
    assert float(rkd_angle(s3, t3)) > 0


def test_gram_and_channel_relation_by_hand() -> None:
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2)
    assert gram_matrix(f)[0].tolist() == [[1.25, 2.75], [2.75, 6.25]]  # F F^T / (C H W = 4)
    expected = math.sqrt((1.25**2 + 2 * 2.75**2 + 6.25**2) / 4)
    assert float(channel_relation_loss(f, torch.zeros_like(f))) == pytest.approx(expected)


@pytest.mark.parametrize(("s_size", "t_size"), [(8, 4), (4, 8), (4, 4), (4, 2), (2, 8)])
def test_conv_regressor_shapes(s_size: int, t_size: int) -> None:
    reg = ConvReg(5, (s_size, s_size), 7, (t_size, t_size))
    assert reg(torch.rand(2, 5, s_size, s_size)).shape == (2, 7, t_size, t_size)


def test_interleaved_teacher_views_equal_a_joint_forward(nets: tuple[nn.Module, nn.Module]) -> None:
    _, teacher = nets
    x = torch.rand(3, 3, SIZE, SIZE)
    with torch.no_grad():
        joint = teacher(rotation_batch(x))
        parts = interleave_rotations(teacher(x), teacher(rotation_batch(x, turns=(1, 2, 3))))
    for a, b in ((joint.logits, parts.logits), (joint.embedding, parts.embedding)):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(joint.features[-1], parts.features[-1], atol=1e-5)


# ------------------------------------------------------------------------------ SSD-KD end to end
def test_ssd_kd_prepare_then_losses_and_gradients(nets: tuple[nn.Module, nn.Module]) -> None:
    student, teacher = nets
    student.zero_grad(set_to_none=True)
    d = create("ssd-kd", make_ctx(student, teacher, "same"), ss_epochs=3)
    d.bind(student, teacher)
    batch = make_batch(epoch=0)
    with pytest.raises(RuntimeError, match="prepare"):
        d.losses(student(batch.student_x), None, batch)
    head_before = [p.clone() for p in d.proj_t.parameters()]
    d.prepare(iter([make_batch(0, seed=k) for k in range(3)]))
    assert len(d.ss_history) == 3
    assert any(not torch.equal(a, b) for a, b in zip(d.proj_t.parameters(), head_before, strict=True))
    assert not any(p.requires_grad for p in d.proj_t.parameters())
    assert not set(map(id, d.proj_t.parameters())) & set(map(id, d.student_parameters()))

    with torch.no_grad():
        t = teacher(batch.teacher_x)
    with pytest.raises(ValueError, match="rotations"):  # the plain batch is not what the student must see
        d.losses(student(batch.student_x), t, batch)
    terms = d.losses(student(d.student_input(batch)), t, batch)
    assert set(terms) == set(d.default_weights) == {"ce", "kd", "tf", "ss", "rkd", "gram"}
    assert all(torch.isfinite(v) for v in terms.values())
    sum(w * terms[k] for k, w in d.default_weights.items()).backward()
    assert any(grads(student)) and any(grads(d.proj_s)) and any(grads(d.regressor))
    assert all(p.grad is None for p in d.proj_t.parameters())


def test_ssd_kd_kd_term_uses_the_unrotated_views(nets: tuple[nn.Module, nn.Module]) -> None:
    from methods.kd import kd_loss

    student, teacher = nets
    d = create("ssd-kd", make_ctx(student, teacher, "unpaired"), ss_epochs=1)
    d.bind(student, teacher)
    batch = make_batch(epoch=0, same=False)
    d.prepare([batch])
    student.eval()  # eval mode: the 0-degree rows of the rotation batch equal a plain forward
    try:
        with torch.no_grad():
            t = teacher(batch.teacher_x)
            s = student(batch.student_x)
            terms = d.losses(student(d.student_input(batch)), t, batch)
        assert float(terms["kd"]) == pytest.approx(float(kd_loss(s.logits, t.logits, 4.0)), rel=1e-4)
    finally:
        student.train()


def _kl_rows(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    """T^2 * mean over rows of KL(softmax(t/T) || softmax(s/T)), written out."""
    total = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        es = [math.exp(v / temperature) for v in s_row]
        et = [math.exp(v / temperature) for v in t_row]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    return total / len(student) * temperature**2


def _keep_by_rank(scores: list[list[float]], target: list[int], ratio: float) -> list[int]:
    """Rows whose target scores highest, plus int(ratio * wrong) wrong rows, best-ranked first."""
    rank = [sum(v > row[k] for v in row) for row, k in zip(scores, target, strict=True)]
    wrong = sorted((r, i) for i, r in enumerate(rank) if r > 0)
    return sorted([i for i, r in enumerate(rank) if r == 0] + [i for _, i in wrong[: int(len(wrong) * ratio)]])


def _cosines(rows: list[list[float]], cols: list[list[float]]) -> list[list[float]]:
    def norm(v: list[float]) -> float:
        return math.sqrt(sum(x * x for x in v))

    return [[sum(a * b for a, b in zip(r, c, strict=True)) / (norm(r) * norm(c)) for c in cols] for r in rows]


def test_ssd_kd_transformation_and_self_supervised_terms_match_a_direct_computation() -> None:
    """tf and ss inside losses(), against the paper's definitions written out on the
    network outputs: rotated views only, rows kept by the teacher's ranking."""
    torch.manual_seed(1)
    student, teacher = create_backbone("kdbench_cnn4", C), create_backbone("kdbench_cnn4", C)
    with torch.no_grad():  # batch-norm statistics of the data, so that the outputs are not rounding noise
        for net in (student, teacher):
            net.classifier.weight.mul_(10.0)
            for _ in range(30):
                net(torch.rand(8, 3, SIZE, SIZE))
    teacher.eval()
    d = create("ssd-kd", make_ctx(student, teacher, "unpaired"), ss_epochs=2, tf_ratio=0.5, ss_ratio=0.5)
    d.bind(student, teacher)
    batch = make_batch(epoch=0, same=False, seed=3)
    d.prepare([batch])
    with torch.no_grad():
        for p in d.proj_s.parameters():  # a student head far from the teacher's
            p.normal_()
    student.eval()
    try:
        with torch.no_grad():
            s4 = student(rotation_batch(batch.student_x))
            t4 = teacher(rotation_batch(batch.teacher_x))
            terms = d.losses(student(d.student_input(batch)), teacher(batch.teacher_x), batch)
            z_s = d.proj_s(s4.embedding).double().tolist()
            z_t = d.proj_t(t4.embedding).double().tolist()
    finally:
        student.train()
    b = batch.size
    rotated = [4 * i + r for i in range(b) for r in (1, 2, 3)]  # sample-major rotation rows
    originals = [4 * i for i in range(b)]
    # transformation KD: the class logits of the rotated views, T = 4
    s_rot = [s4.logits[k].double().tolist() for k in rotated]
    t_rot = [t4.logits[k].double().tolist() for k in rotated]
    labels = [int(batch.y[k // 4]) for k in rotated]
    keep = _keep_by_rank(t_rot, labels, 0.5)
    assert 0 < len(keep) < len(rotated)  # the ranking actually drops rows here
    expected_tf = _kl_rows([s_rot[k] for k in keep], [t_rot[k] for k in keep], 4.0)
    assert float(terms["tf"]) == pytest.approx(expected_tf, rel=1e-4)
    assert abs(_kl_rows(s_rot, t_rot, 4.0) - expected_tf) > 0.02 * expected_tf  # the selection shows
    # self-supervised relation KD: rotated-to-original cosine matrices of the heads, T = 0.5
    s_sim = _cosines([z_s[k] for k in rotated], [z_s[k] for k in originals])
    t_sim = _cosines([z_t[k] for k in rotated], [z_t[k] for k in originals])
    own = [k // 4 for k in rotated]
    keep = _keep_by_rank(t_sim, own, 0.5)
    expected_ss = _kl_rows([s_sim[k] for k in keep], [t_sim[k] for k in keep], 0.5)
    assert float(terms["ss"]) == pytest.approx(expected_ss, rel=1e-3)  # float32 cosines near 1
    assert abs(_kl_rows(s_sim, t_sim, 0.5) - expected_ss) > 0.05 * expected_ss  # the selection shows


# ------------------------------------------------------------------------------ through the harness
def test_medical_methods_run_end_to_end(tmp_path) -> None:
    from benchmark import run

    same = run(methods="crckd,ssd-kd", data="ham10000", regimes="same", profile="smoke", seeds=[0],
               out=tmp_path / "same", progress=False, option=["ssd-kd.ss_epochs=2"])  # fmt: skip
    cross = run(methods="crckd-nbi,ssd-kd", data="synth", regimes="unpaired", profile="smoke", seeds=[0],
                out=tmp_path / "cross", progress=False, option=["ssd-kd.ss_epochs=2"])  # fmt: skip
    for record in same + cross:
        assert record["status"] == "ok", (record["method"], record.get("error"))
        assert 0.0 <= record["metrics"]["auc"] <= 1.0
        assert record["synthetic"]
    assert {(r["method"], r["regime"]) for r in same + cross} == {
        ("crckd", "same"), ("ssd-kd", "same"), ("crckd-nbi", "unpaired"), ("ssd-kd", "unpaired"),
    }  # fmt: skip
    terms = {r["method"]: set(r["history"][-1]["loss"]) for r in same}
    assert terms["ssd-kd"] == {"ce", "kd", "tf", "ss", "rkd", "gram"}
    assert terms["crckd"] >= {"ce", "ccd"}


# -- SSD-KD building blocks against direct computations ----------------------------------------
def _bn_relu_train(y: torch.Tensor, eps: float) -> torch.Tensor:
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    return torch.relu((y - mean) / torch.sqrt(var + eps))


@pytest.mark.parametrize(
    ("s_size", "t_size", "kind", "kernel"),
    [
        ((8, 8), (4, 4), "down", (3, 3)),  # exactly half: 3x3 stride-2 conv
        ((2, 3), (4, 6), "up", (4, 4)),  # exactly double: 4x4 stride-2 transposed conv
        ((5, 4), (3, 3), "valid", (3, 2)),  # larger: valid conv of kernel 1 + s - t
        ((8, 4), (4, 4), "valid", (5, 1)),  # half in one axis only
        ((3, 4), (3, 3), "valid", (1, 2)),
        ((4, 3), (3, 3), "valid", (2, 1)),
        ((2, 4), (4, 4), "resize", (1, 1)),  # double in one axis only: resize + 1x1 conv
        ((4, 2), (3, 3), "resize", (1, 1)),
    ],
)
def test_ssd_convreg_matches_a_direct_computation(s_size, t_size, kind, kernel) -> None:
    import torch.nn.functional as F

    from methods.ssd_kd import ConvReg

    torch.manual_seed(0)
    reg = ConvReg(3, s_size, 2, t_size)
    layer = reg.body[1] if kind == "resize" else reg.body[0]
    assert tuple(layer.weight.shape[-2:]) == kernel
    x = torch.randn(2, 3, *s_size)
    w, b = layer.weight, layer.bias
    if kind == "down":
        y = F.conv2d(x, w, b, stride=2, padding=1)
    elif kind == "up":
        y = F.conv_transpose2d(x, w, b, stride=2, padding=1)
    elif kind == "valid":
        y = F.conv2d(x, w, b)
    else:
        y = F.conv2d(F.interpolate(x, size=t_size, mode="bilinear", align_corners=False), w, b)
    assert tuple(y.shape[-2:]) == t_size
    torch.testing.assert_close(reg(x), _bn_relu_train(y, reg.body[-2].eps), rtol=1e-5, atol=1e-5)


def test_ssd_gram_distances_head_and_rkd_terms_match_direct_computations() -> None:
    from methods.rkd import rkd_angle_loss, rkd_distance_loss
    from methods.ssd_kd import gram_matrix, pairwise_distance, projection_head, rkd_angle, rkd_distance

    f = torch.tensor([[[[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]]])  # (1, 2, 2, 3)
    a, c = f[0, 0].flatten(), f[0, 1].flatten()
    expected = torch.tensor([[a @ a, a @ c], [c @ a, c @ c]]) / (2 * 2 * 3)
    torch.testing.assert_close(gram_matrix(f)[0], expected)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 3, generator=g).double() * 0.1  # distances < 1: a large clamp floor would show
    torch.testing.assert_close(pairwise_distance(x), torch.cdist(x, x) * (1 - torch.eye(5, dtype=torch.float64)))
    head = projection_head(3)
    v = torch.randn(4, 3, generator=g)
    torch.testing.assert_close(head(v), head[2](torch.relu(head[0](v))))
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 4, generator=g)
    assert rkd_distance(s, t).item() == pytest.approx(rkd_distance_loss(s, t).item(), rel=1e-5)
    assert rkd_angle(s, t).item() == pytest.approx(rkd_angle_loss(s, t).item(), rel=1e-5)


class _LinearViews(nn.Module):
    """A fixed random linear map of the flattened image: every rotated view gets its own embedding."""

    def __init__(self, pixels: int, width: int) -> None:
        super().__init__()
        self.register_buffer("proj", torch.randn(pixels, width, generator=torch.Generator().manual_seed(4)))

    def forward(self, x: torch.Tensor) -> Outputs:
        emb = x.flatten(1) @ self.proj
        return Outputs(logits=emb[:, :2], embedding=emb, features=[emb[:, :, None, None]])


@pytest.mark.parametrize(("epochs", "lr_factors"), [(4, (1.0, 1.0, 0.1, 0.01)), (2, (1.0, 0.1))])
def test_ssd_kd_prepare_trains_the_teacher_head_as_released(epochs: int, lr_factors: tuple[float, ...]) -> None:
    """Stage A against a float64 re-run: SGD (lr ss_lr, momentum 0.9, weight decay 1e-3) on
    the cross-entropy of rotated-to-original cosines, batches in a random order each epoch,
    lr x 0.1 after 50% and 75% of the epochs (at least after the first)."""
    torch.manual_seed(0)
    teacher = _LinearViews(3 * 4 * 4, 8)
    d = create("ssd-kd", _crckd_ctx([0, 1, 0, 1], [0, 1, 0, 1], s_width=8, t_width=8), ss_epochs=epochs, ss_lr=0.5)
    d.bind(teacher, teacher)
    g = torch.Generator().manual_seed(5)
    batches = []
    for n in (3, 2):  # two batches of different sizes: the epoch means weight them by rows
        x = torch.rand(n, 3, 4, 4, generator=g)
        batches.append(Batch(student_x=x, teacher_x=x, y=torch.arange(n) % 2, twin=torch.ones(n, dtype=torch.bool),
                             index=torch.arange(n), teacher_index=torch.arange(n)))  # fmt: skip
    embs = [teacher(rotation_batch(b.teacher_x)).embedding.double() for b in batches]
    torch.manual_seed(7)
    orders = [torch.randperm(2).tolist() for _ in range(epochs)]
    params = [p.detach().double().clone().requires_grad_(True) for p in d.proj_t.parameters()]
    w1, b1, w2, b2 = params
    momentum: list[torch.Tensor | None] = [None] * 4
    history = []
    for epoch in range(epochs):
        total, correct, rows = 0.0, 0, 0
        for k in orders[epoch]:
            emb, n = embs[k], embs[k].shape[0] // 4
            target = torch.arange(n).repeat_interleave(3)
            z = torch.relu(emb @ w1.t() + b1) @ w2.t() + b2
            z = z / z.norm(dim=1, keepdim=True)
            sim = z[[4 * i + r for i in range(n) for r in (1, 2, 3)]] @ z[0::4].t()
            loss = torch.nn.functional.cross_entropy(sim, target)
            total += loss.item() * len(target)
            correct += int((sim.argmax(1) == target).sum())
            rows += len(target)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
                    step = grad + 1e-3 * p
                    momentum[i] = step if momentum[i] is None else 0.9 * momentum[i] + step
                    p.sub_(0.5 * lr_factors[epoch] * momentum[i])
        history.append((total / rows, correct / rows))
    assert history[0][0] > history[-1][0] + 0.02  # the head learns
    torch.manual_seed(7)
    d.prepare(batches)
    for got, want in zip(d.proj_t.parameters(), params, strict=True):
        torch.testing.assert_close(got.double(), want.detach(), rtol=1e-4, atol=1e-5)
    assert [(h["loss"], h["accuracy"]) for h in d.ss_history] == [pytest.approx(h, rel=1e-4) for h in history]
    assert d.prepared and not d.proj_t.training


class _FixedViews(nn.Module):
    """A teacher whose outputs on the rotation batch are given row by row."""

    def __init__(self, out: Outputs) -> None:
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> Outputs:
        assert x.shape[0] == self.out.logits.shape[0]
        return self.out


def test_ssd_kd_terms_when_the_teacher_ranks_every_view_wrong() -> None:
    """tf and ss keep no row (ratios 0, every rotated view misranked by the teacher): both are
    0 and still part of the graph; ce is class-weighted; rkd = 25 distance + 50 angle (the
    generic RKD losses); the regressor maps to the teacher's last map."""
    from methods.rkd import rkd_angle_loss, rkd_distance_loss

    torch.manual_seed(0)
    student_spec = ModelSpec("toy", 2, 3, (3,), ((2, 2),))
    teacher_spec = ModelSpec("toy", 2, 5, (4, 4, 5), ((4, 4), (2, 2), (1, 1)))
    ctx = DistillerContext(
        student=student_spec, teacher=teacher_spec, num_classes=2, regime="paired", num_student_train=4,
        num_teacher_train=4, student_labels=torch.tensor([0, 0, 0, 1]), teacher_labels=torch.tensor([0, 0, 0, 1]),
        num_epochs=1, steps_per_epoch=1, batch_size=2,
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    e1, e2 = torch.eye(5)[0], torch.eye(5)[1]
    # image 0: original e1, rotations e2 (closest to image 1's original); image 1 the other way round
    emb = torch.stack([e1, e2, e2, e2, e2, e1, e1, e1]) + 0.1 * torch.rand(8, 5, generator=g)
    logits = torch.tensor([[-5.0, 5.0]] * 4 + [[5.0, -5.0]] * 4)  # image 0 is class 0, image 1 class 1
    t4 = Outputs(logits=logits, embedding=emb, features=[torch.randn(8, 5, 1, 1, generator=g)])
    d = create("ssd-kd", ctx, ss_epochs=1, tf_ratio=0.0, ss_ratio=0.0)
    teacher = _FixedViews(t4)
    d.bind(teacher, teacher)
    x = torch.rand(2, 3, 4, 4, generator=g)
    batch = Batch(student_x=x, teacher_x=x, y=torch.tensor([0, 1]), twin=torch.ones(2, dtype=torch.bool),
                  index=torch.arange(2), teacher_index=torch.arange(2))  # fmt: skip
    d.prepare([batch])
    with torch.no_grad():  # teacher head = identity: its similarities are those of the embeddings
        for layer in (d.proj_t[0], d.proj_t[2]):
            layer.weight.copy_(torch.eye(5))
            layer.bias.zero_()
    s = Outputs(logits=torch.randn(8, 2, generator=g).requires_grad_(), embedding=torch.randn(8, 3, generator=g),
                features=[torch.randn(8, 3, 2, 2, generator=g)])  # fmt: skip
    terms = d.losses(s, None, batch)  # no harness output: all four views come from the teacher
    assert terms["tf"].item() == 0.0 and terms["ss"].item() == 0.0
    (grad,) = torch.autograd.grad(terms["tf"], s.logits)
    assert torch.equal(grad, torch.zeros_like(grad))
    logp = torch.log_softmax(s.logits.detach().double(), 1)
    w0, w1 = 4 / 3, 4.0  # N / n_c of the student pool
    assert terms["ce"].item() == pytest.approx(float(-(w0 * logp[0, 0] + w1 * logp[4, 1]) / (w0 + w1)), rel=1e-6)
    rkd = 25 * rkd_distance_loss(s.embedding, emb) + 50 * rkd_angle_loss(s.embedding, emb)
    assert terms["rkd"].item() == pytest.approx(rkd.item(), rel=1e-4)
    assert d.regressor(s.features[-1]).shape == (8, 5, 1, 1)
    assert create("ssd-kd", ctx, weighted_ce=False).class_weight.tolist() == [1.0, 1.0]  # plain cross-entropy
