"""PaGKD (paper design), pagkd-released and the ablations: losses on hand-built inputs,
module behaviour, gradient routing, group batches, warm-up, and an end-to-end smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
from benchmark.models.backbones import create_backbone
from datasets.sampling import GroupSampler
from methods import Batch, DistillerContext
from methods._dense import relation_mask
from methods.pagkd import (
    SRCA,
    AveragePrototypes,
    LRQFormer,
    PaGKD,
    _anchored_infonce,
    group_contrastive_loss,
    group_units,
    image_units,
    set_similarity,
    warmup_epochs,
)
from methods.pagkd_released import (
    identity_codes,
    pairwise_group_loss,
    released_contrastive_loss,
)

VARIANTS = [
    "pagkd", "pagkd-released", "pagkd-pro", "pagkd-den", "pagkd-avgpool", "pagkd-plainattn",
    "pagkd-unidir", "pagkd-image", "pagkd-image-pro", "pagkd-image-den",
]


# --------------------------------------------------------------------------------------
# fixtures: tiny real backbones and a group batch
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    student = create_backbone("kdbench_cnn4", 3)
    teacher = create_backbone("kdbench_cnn4_wide", 3)
    return student, teacher


_SPECS: dict[int, tuple] = {}


def make_ctx(nets, num_classes: int = 3, num_epochs: int = 12) -> DistillerContext:
    student, teacher = nets
    if id(nets) not in _SPECS:
        _SPECS[id(nets)] = (student.spec(16), teacher.spec(16))
    s_spec, t_spec = _SPECS[id(nets)]
    labels = torch.arange(num_classes).repeat(4)
    return DistillerContext(
        student=s_spec, teacher=t_spec, num_classes=num_classes, regime="unpaired",
        num_student_train=len(labels), num_teacher_train=len(labels), student_labels=labels,
        teacher_labels=labels, num_epochs=num_epochs, steps_per_epoch=1, batch_size=len(labels),
    )


def make_batch(y: torch.Tensor, epoch: int = 5, twin: torch.Tensor | None = None, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = y.numel()
    return Batch(
        student_x=torch.rand(b, 3, 16, 16, generator=g), teacher_x=torch.rand(b, 3, 16, 16, generator=g), y=y,
        twin=torch.zeros(b, dtype=torch.bool) if twin is None else twin, index=torch.arange(b),
        teacher_index=torch.arange(b), epoch=epoch, num_epochs=12,
    )


def run_losses(name: str, nets, y: torch.Tensor, teacher_grad: bool = False, **kw):
    student, teacher = nets
    ctx = make_ctx(nets, num_classes=3)
    d = methods.create(name, ctx)
    d.bind(student, teacher)
    batch = make_batch(y, **kw)
    s = student(batch.student_x)
    with torch.set_grad_enabled(teacher_grad):
        t = teacher(batch.teacher_x)
    return d, d.losses(s, t, batch)


# --------------------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------------------
def test_group_units_partition_rows_by_class_with_padding():
    units = group_units(torch.tensor([2, 0, 2, 1, 0]))
    assert units.classes.tolist() == [0, 1, 2]
    assert units.valid.tolist() == [[True, True], [True, False], [True, True]]
    assert units.rows[units.valid].tolist() == [1, 4, 3, 0, 2]
    # padded slots become ambiguous pixels, which the relation mask blocks in both roles
    labels = torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0], [-1, 1]])  # (B=5, L=2)
    packed = units.pack_labels(labels)
    assert packed.tolist() == [[1, 1, -1, 1], [1, 0, -1, -1], [0, 1, 0, 0]]
    mask = relation_mask(packed, packed)
    assert torch.isneginf(mask[1, :, 2:]).all() and torch.isneginf(mask[1, 2:, :]).all()
    assert mask[0, 0, 1] == 0 and torch.isneginf(mask[0, 0, 2]) and torch.isneginf(mask[2, 0, 1])


def test_image_units_one_row_each():
    units = image_units(torch.tensor([1, 0, 1]))
    assert units.rows.tolist() == [[0], [1], [2]] and units.classes.tolist() == [1, 0, 1]


# --------------------------------------------------------------------------------------
# GKD-Pro: group contrastive loss
# --------------------------------------------------------------------------------------
def test_contrastive_loss_matches_hand_computation_two_classes():
    # N_q = 2 queries, d = 2; cosines chosen by hand.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    w = torch.stack([torch.stack([e1, e1]), torch.stack([e2, e1])])  # W_0, W_1
    n = torch.stack([torch.stack([e1, e2]), torch.stack([e2, -e1])])  # N_0, N_1
    tau = 0.5
    # mean same-index cosines: s(W0,N0) = (1+0)/2, s(W0,N1) = (0-1)/2, s(W0,W1) = (0+1)/2
    # s(W1,N1) = (1-1)/2, s(W1,N0) = (0+0)/2, s(N0,N1) = (0+0)/2
    def nll(pos, negs):
        return -pos / tau + math.log(math.exp(pos / tau) + sum(math.exp(v / tau) for v in negs))

    w_anchor = (nll(0.5, [-0.5, 0.5]) + nll(0.0, [0.0, 0.5])) / 2
    n_anchor = (nll(0.5, [0.0, 0.0]) + nll(0.0, [-0.5, 0.0])) / 2
    expected = 0.5 * (w_anchor + n_anchor)
    got = group_contrastive_loss(w, n, torch.tensor([0, 1]), tau)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert group_contrastive_loss(w, n, torch.tensor([0, 1]), tau, symmetric=False).item() == pytest.approx(
        w_anchor, rel=1e-6)


def test_identical_same_class_sets_give_the_minimum_and_swapping_raises_it():
    torch.manual_seed(1)
    tau = 0.2
    base = F.normalize(torch.randn(4, 8), dim=-1)
    w = torch.stack([base, -base])  # class sets maximally apart: s(W0, W1) = -1
    classes = torch.tensor([0, 1])
    best = group_contrastive_loss(w, w.clone(), classes, tau)
    # analytic minimum over all sets: s_pos = 1 and both negatives -1
    assert best.item() == pytest.approx(math.log(1 + 2 * math.exp(-2 / tau)), abs=1e-6)
    for _ in range(20):
        other = torch.randn_like(w)
        assert group_contrastive_loss(w, other, classes, tau) > best
    swapped = group_contrastive_loss(w, w[[1, 0]], classes, tau)
    assert swapped > best + 1.0


def test_contrastive_loss_any_number_of_classes_and_single_class_is_zero():
    torch.manual_seed(2)
    w, n = torch.randn(5, 12, 16), torch.randn(5, 12, 16)
    loss = group_contrastive_loss(w, n, torch.arange(5), 0.1)
    assert torch.isfinite(loss) and loss > 0
    one = group_contrastive_loss(w[:1].requires_grad_(), n[:1], torch.tensor([3]), 0.1)
    assert one.item() == pytest.approx(0.0, abs=1e-6)


def test_image_level_contrastive_ignores_same_class_other_units():
    torch.manual_seed(3)
    w, n = torch.randn(4, 3, 8), torch.randn(4, 3, 8)
    classes = torch.tensor([0, 0, 1, 1])
    other = classes[:, None] != classes[None, :]

    def anchor0(w, n):
        return _anchored_infonce(set_similarity(w, n), set_similarity(w, w), other)[0]

    w2, n2 = w.clone(), n.clone()
    w2[1], n2[1] = torch.randn(3, 8), torch.randn(3, 8)  # same class as anchor 0: neither positive nor negative
    assert anchor0(w, n).item() == pytest.approx(anchor0(w2, n2).item(), rel=1e-6)
    w3 = w.clone()
    w3[2] = torch.randn(3, 8)  # other class: a negative, changes the loss
    assert anchor0(w3, n).item() != pytest.approx(anchor0(w, n).item(), rel=1e-6)


# --------------------------------------------------------------------------------------
# LR-QFormer and average pooling
# --------------------------------------------------------------------------------------
def test_lrqformer_shapes_and_padding_invariance():
    torch.manual_seed(4)
    qf = LRQFormer(32, num_queries=12, blocks=2, heads=4).eval()
    tokens = torch.randn(3, 4, 6, 32)  # 3 groups of up to 4 images of 2x3 tokens
    valid = torch.tensor([[True] * 4, [True, True, False, False], [True] * 4])
    out = qf(tokens, valid, (2, 3))
    assert out.shape == (3, 12, 32)
    alone = qf(tokens[1:2, :2], valid[1:2, :2], (2, 3))  # the padded group without its padding
    torch.testing.assert_close(out[1:2], alone, atol=1e-5, rtol=1e-5)
    garbage = tokens.clone()
    garbage[1, 2:] = 1e3  # content of padded slots must not matter
    torch.testing.assert_close(qf(garbage, valid, (2, 3)), out, atol=1e-5, rtol=1e-5)


def test_lrqformer_permutations():
    torch.manual_seed(5)
    tokens = torch.randn(2, 3, 4, 16)
    valid = torch.ones(2, 3, dtype=torch.bool)
    perm_images = tokens[:, [2, 0, 1]]
    # without the image-in-group embedding a group is a set: image order does not matter
    qf = LRQFormer(16, num_queries=5, heads=4, image_position=False).eval()
    torch.testing.assert_close(qf(perm_images, valid, (2, 2)), qf(tokens, valid, (2, 2)), atol=1e-5, rtol=1e-5)
    # with it (the default), the embedding tags images, so the order is seen
    qf_img = LRQFormer(16, num_queries=5, heads=4).eval()
    assert not torch.allclose(qf_img(perm_images, valid, (2, 2)), qf_img(tokens, valid, (2, 2)), atol=1e-4)
    # queries carry no position: permuting them permutes the prototypes (equivariance)
    qf_perm = LRQFormer(16, num_queries=5, heads=4).eval()
    qf_perm.load_state_dict(qf_img.state_dict())
    order = torch.tensor([4, 2, 0, 1, 3])
    with torch.no_grad():
        qf_perm.queries.copy_(qf_img.queries[order])
    torch.testing.assert_close(qf_perm(tokens, valid, (2, 2)), qf_img(tokens, valid, (2, 2))[:, order],
                               atol=1e-5, rtol=1e-5)


def test_average_prototypes_masked_mean():
    tokens = torch.arange(2 * 2 * 3 * 2, dtype=torch.float32).view(2, 2, 3, 2)
    valid = torch.tensor([[True, True], [True, False]])
    out = AveragePrototypes()(tokens, valid, (1, 3))
    assert out.shape == (2, 1, 2)
    torch.testing.assert_close(out[1, 0], tokens[1, 0].mean(0))
    torch.testing.assert_close(out[0, 0], tokens[0].reshape(-1, 2).mean(0))


# --------------------------------------------------------------------------------------
# SRCA
# --------------------------------------------------------------------------------------
def test_srca_all_open_mask_equals_plain_attention():
    torch.manual_seed(6)
    srca = SRCA(16)
    fq, fk = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    logits = srca.w_q(fq) @ srca.w_k(fk).transpose(1, 2) / math.sqrt(4)
    expected = logits.softmax(-1) @ fk
    torch.testing.assert_close(srca(fq, fk, torch.zeros(2, 5, 7)), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(srca(fq, fk, None), expected, atol=1e-5, rtol=1e-5)


def test_srca_fully_blocked_row_gives_zero_and_no_nan():
    torch.manual_seed(7)
    srca = SRCA(8)
    fq = torch.randn(1, 3, 8, requires_grad=True)
    fk = torch.randn(1, 4, 8, requires_grad=True)
    labels_q = torch.tensor([[1, -1, 0]])  # a lesion query with no lesion key, an ambiguous query
    labels_k = torch.tensor([[0, 0, -1, 0]])
    out = srca(fq, fk, relation_mask(labels_q, labels_k))
    assert torch.isfinite(out).all()
    assert (out[0, :2] == 0).all() and out[0, 2].abs().sum() > 0
    out.sum().backward()
    assert torch.isfinite(fq.grad).all() and torch.isfinite(fk.grad).all()
    assert torch.isfinite(srca.w_q.weight.grad).all()


# --------------------------------------------------------------------------------------
# the method end to end on hand-built batches
# --------------------------------------------------------------------------------------
# every kind of module: LR-QFormer + SRCA, the released modules, average pooling,
# unmasked attention, image-level units (the other variants switch these off)
@pytest.mark.parametrize("name", ["pagkd", "pagkd-released", "pagkd-avgpool", "pagkd-plainattn", "pagkd-image"])
def test_gradients_reach_student_and_distiller_never_teacher(nets, name):
    student, teacher = nets
    student.zero_grad(set_to_none=True)
    teacher.zero_grad(set_to_none=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    twin = torch.tensor([True, False, False] * 3)
    # teacher run WITH autograd on: the method itself must keep gradients out of it
    d, terms = run_losses(name, nets, y, teacher_grad=True, twin=twin)
    if name == "pagkd-released":
        expected = {"ce", "pro", "set_cls", "den", "add"}
    else:
        expected = {"ce"} | ({"pro"} if d.use_pro else set()) | ({"den"} if d.use_den else set())
    assert set(terms) == expected, terms
    assert all(torch.isfinite(v) and v.dim() == 0 for v in terms.values())
    total = sum(terms[k] * d.default_weights[k] for k in terms)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    missing = [n for n, p in d.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no/invalid gradient for {missing}"
    assert len(list(d.parameters())) > 0


def test_batch_with_missing_class_and_single_class(nets):
    # class 1 absent: losses over the two classes present, both terms non-trivial
    _, terms = run_losses("pagkd", nets, torch.tensor([0, 0, 0, 2, 2, 2]))
    assert set(terms) == {"ce", "pro", "den"}
    assert terms["pro"] > 0.01 and terms["den"] > 0 and all(torch.isfinite(v) for v in terms.values())
    # one class only: no negatives, so the contrastive term is exactly 0 but still a tensor
    _, terms = run_losses("pagkd", nets, torch.tensor([1, 1, 1, 1]))
    assert terms["pro"].item() == pytest.approx(0.0, abs=1e-6) and torch.isfinite(terms["den"])
    # uneven groups (a partial batch) are padded, not dropped
    _, terms = run_losses("pagkd", nets, torch.tensor([0, 0, 0, 0, 1, 2, 2]))
    assert all(torch.isfinite(v) for v in terms.values())
    # the released code skips its group terms unless every class is present; ADD on twins still runs
    twin = torch.tensor([True, False, False, True, False, False])
    _, terms = run_losses("pagkd-released", nets, torch.tensor([0, 0, 0, 2, 2, 2]), twin=twin)
    assert set(terms) == {"ce", "add"}


def test_warmup_rule_and_schedule(nets):
    assert [warmup_epochs(e) for e in (200, 199, 100, 12, 10, 9, 2, 1)] == [5, 5, 3, 1, 1, 0, 0, 0]
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    d, terms = run_losses("pagkd", nets, y, epoch=0)  # cpu-like 12 epochs: epoch 0 is CE only
    assert d.warmup == 1 and set(terms) == {"ce"}
    _, terms = run_losses("pagkd", nets, y, epoch=1)
    assert set(terms) == {"ce", "pro", "den"}
    d = methods.create("pagkd", make_ctx(nets, num_epochs=200), warmup_epochs=0)
    assert d.warmup == 0
    assert methods.create("pagkd-released", make_ctx(nets, num_epochs=200)).warmup == 5


def test_ablation_options_change_what_is_computed(nets):
    assert run_losses("pagkd-pro", nets, torch.tensor([0, 1, 2]))[1].keys() == {"ce", "pro"}
    assert run_losses("pagkd-den", nets, torch.tensor([0, 1, 2]))[1].keys() == {"ce", "den"}
    d, terms = run_losses("pagkd-none", nets, torch.tensor([0, 1, 2]))
    assert terms.keys() == {"ce"} and not list(d.parameters()) and not d.needs_teacher
    # unidirectional den is one of the two bidirectional terms
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.manual_seed(8)
    both = methods.create("pagkd", make_ctx(nets))
    torch.manual_seed(8)
    uni = methods.create("pagkd-unidir", make_ctx(nets))
    student, teacher = nets
    batch = make_batch(y)
    s, t = student(batch.student_x), teacher(batch.teacher_x)
    for d in (both, uni):
        d.bind(student, teacher)
    assert 0 < uni.losses(s, t, batch)["den"] < both.losses(s, t, batch)["den"]
    assert methods.expand_methods("pagkd-ablations")[:2] == ["baseline", "pagkd"]
    assert set(VARIANTS) - {"pagkd-released"} <= set(methods.expand_methods("pagkd-ablations"))


def test_bad_options_are_named(nets):
    with pytest.raises(ValueError, match="directions"):
        methods.create("pagkd", make_ctx(nets), directions="sideways")
    with pytest.raises(ValueError, match="width"):
        methods.create("pagkd", make_ctx(nets), width=30)
    with pytest.raises(ValueError, match="no option"):
        methods.create("pagkd", make_ctx(nets), queries=4)


def test_group_level_differs_from_image_level(nets):
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    torch.manual_seed(9)
    group = methods.create("pagkd", make_ctx(nets))
    torch.manual_seed(9)
    image = methods.create("pagkd-image", make_ctx(nets))
    assert isinstance(image, PaGKD) and image.level == "image"
    student, teacher = nets
    batch = make_batch(y)
    s, t = student(batch.student_x), teacher(batch.teacher_x)
    group.bind(student, teacher)
    image.bind(student, teacher)
    g, i = group.losses(s, t, batch), image.losses(s, t, batch)
    assert g["pro"].item() != pytest.approx(i["pro"].item(), rel=1e-3)
    assert g["den"].item() != pytest.approx(i["den"].item(), rel=1e-3)


@pytest.mark.parametrize("name", ["pagkd", "pagkd-released"])
def test_mixed_precision_keeps_losses_in_float32(nets, name):
    # the paper profile trains in bf16: CAM thresholds and contrastive logits stay float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d, terms = run_losses(name, nets, torch.tensor([0, 0, 1, 1, 2, 2]), twin=torch.tensor([True, False] * 3))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values()), terms
    sum(terms[k] * d.default_weights[k] for k in terms).backward()


# --------------------------------------------------------------------------------------
# pagkd-released pieces
# --------------------------------------------------------------------------------------
def test_released_contrastive_matches_the_code_formula_for_three_classes():
    torch.manual_seed(10)
    w, n = torch.randn(3, 12, 8), torch.randn(3, 12, 8)
    sets = [w[0], n[0], w[1], n[1], w[2], n[2]]
    feat = [F.normalize(x, dim=0) for x in sets]  # over the 12 queries, per channel

    def s(a, b):
        return float((feat[a] * feat[b]).sum() / 20)

    expected = 0.0
    for anchor, cands, pos in ((0, [1, 2, 3, 4, 5], 0), (2, [0, 1, 3, 4, 5], 2), (4, [0, 1, 2, 3, 5], 4)):
        sims = [s(anchor, c) for c in cands]
        expected -= math.log(math.exp(sims[pos]) / (1 + sum(math.exp(v) for v in sims)))
    assert released_contrastive_loss(w, n).item() == pytest.approx(expected, rel=1e-5)


def test_released_pairwise_indexing():
    torch.manual_seed(11)
    q, k = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    lq = torch.tensor([[1, 1, 0, -1], [0, 0, 0, 1]])
    lk = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    # one image per group: the code's index mismatch cannot show
    one = [pairwise_group_loss(q[:1], k[:1], lq[:1], lk[:1], original_indexing=o) for o in (True, False)]
    torch.testing.assert_close(one[0], one[1])
    fixed = pairwise_group_loss(q, k, lq, lk, original_indexing=False)
    original = pairwise_group_loss(q, k, lq, lk, original_indexing=True)
    assert torch.isfinite(fixed) and torch.isfinite(original) and not torch.allclose(fixed, original)


def test_released_identity_codes_use_a_local_generator():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    codes = identity_codes([3, 2, 4])
    assert torch.equal(torch.get_rng_state(), before)
    torch.testing.assert_close(codes[0], torch.tensor([math.sin(0.1 * (j + 0.1)) for j in range(3)]))
    torch.manual_seed(42)
    torch.testing.assert_close(codes[1], torch.rand(2))
    torch.manual_seed(57)
    torch.testing.assert_close(codes[2], torch.rand(4))


# --------------------------------------------------------------------------------------
# the lead's group sampler, as PaGKD relies on it
# --------------------------------------------------------------------------------------
def test_group_sampler_guarantees():
    student_labels = np.array([0] * 9 + [1] * 7 + [2] * 2)  # class 2 cannot fill a group of 3
    teacher_labels = np.array([0, 1, 2] * 4)
    sampler = GroupSampler(student_labels, teacher_labels, np.full(18, -1), group_size=3, num_classes=3, seed=0)
    assert sampler.underfilled == {2: 2}
    plans = sampler.epoch(0)
    assert len(plans) == len(sampler) == 2
    for plan in plans:
        ys = student_labels[plan.student]
        assert ys.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # every class, fixed count, ordered by class
        assert (teacher_labels[plan.teacher] == ys).all()  # teacher row i has student row i's class


# --------------------------------------------------------------------------------------
# end to end through the harness
# --------------------------------------------------------------------------------------
def test_end_to_end_smoke(tmp_path):
    """Every variant through the harness on synthetic data (unpaired), and pagkd-released
    on the mixed regime, where twin rows switch on its ADD term (pagkd's code path does not
    depend on the regime)."""
    from benchmark import run

    unpaired = [m for m in methods.expand_methods("pagkd-ablations") if m != "baseline"] + ["pagkd-released"]
    records = run(methods=",".join(unpaired), data="synth", profile="smoke", regimes="unpaired", seeds=[0],
                  out=tmp_path, epochs=1)
    records += run(methods="pagkd-released", data="synth", profile="smoke", regimes="all", seeds=[0],
                   out=tmp_path, epochs=1)
    ran = {(r["method"], r["regime"]): r.get("status") for r in records}
    assert all(status == "ok" for status in ran.values()), {k: v for k, v in ran.items() if v != "ok"}
    assert set(ran) == {(m, "unpaired") for m in unpaired} | {("pagkd-released", "all")}
    released_all = next(r for r in records if r["method"] == "pagkd-released" and r["regime"] == "all")
    assert "add" in released_all["history"][-1]["loss"]  # twin rows in the mixed regime
    assert all(r["sampler"] for r in records)
