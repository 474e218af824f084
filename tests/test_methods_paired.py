"""Paired cross-modal baselines: ADD, CPC-Trans (+ shared), PolypsAlign, SAMD."""

from __future__ import annotations

import importlib
import math
import pkgutil
import warnings
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import methods
from methods import _dense
from methods.base import Batch, DistillerContext, ModelSpec, Outputs
from methods.polypsalign import FeatureDiscriminator, contrastive_hinge, head_logits

PAIRED_METHODS = ("add", "cpc-trans", "cpc-trans-shared", "polypsalign", "samd")


# -- builders ---------------------------------------------------------------------------
def spec(channels: int, size: tuple[int, int] = (2, 2), classes: int = 2) -> ModelSpec:
    return ModelSpec("toy", classes, channels, (channels,), (size,))


def context(s_ch: int, t_ch: int | None, s_size=(2, 2), t_size=(2, 2), classes: int = 2) -> DistillerContext:
    return DistillerContext(
        student=spec(s_ch, s_size, classes),
        teacher=spec(t_ch, t_size, classes) if t_ch else None,
        num_classes=classes,
        regime="paired",
        num_student_train=8,
        num_teacher_train=8,
        student_labels=torch.zeros(8, dtype=torch.long),
        teacher_labels=torch.zeros(8, dtype=torch.long),
        num_epochs=10,
        steps_per_epoch=1,
        batch_size=4,
    )


def outputs(fmap: Tensor, head: nn.Linear, logits: Tensor | None = None) -> Outputs:
    emb = fmap.mean(dim=(2, 3))
    return Outputs(logits=head(emb) if logits is None else logits, embedding=emb, features=[fmap], classifier=head)


def batch(
    n: int, y: Tensor | None = None, twin: Tensor | None = None, size: int = 8, epoch: int = 0, **kw: Any
) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(
        student_x=torch.rand(n, 3, size, size, generator=g),
        teacher_x=torch.rand(n, 3, size, size, generator=g),
        y=torch.zeros(n, dtype=torch.long) if y is None else y,
        twin=torch.ones(n, dtype=torch.bool) if twin is None else twin,
        index=torch.arange(n),
        teacher_index=torch.arange(n),
        epoch=epoch,
        num_epochs=kw.pop("num_epochs", 199),
        **kw,
    )


def fixed_head(weight: list[list[float]]) -> nn.Linear:
    w = torch.tensor(weight)
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.zero_()
    return head


class TinyNet(nn.Module):
    """conv (stride 4) -> GAP -> linear; returns Outputs like the suite's backbones."""

    def __init__(self, width: int, classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 4, stride=4)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Outputs:
        f = torch.relu(self.conv(x))
        emb = f.mean(dim=(2, 3))
        return Outputs(self.fc(emb), emb, [f], self.fc)


# -- one implementation of the dense pieces -------------------------------------------------
def test_dense_pieces_have_one_implementation(monkeypatch: pytest.MonkeyPatch) -> None:
    shared = {n: getattr(_dense, n) for n in ("masked_attention", "relation_mask", "pixel_adaptive_refinement")}
    shared["class_activation_map"] = _dense.class_activation_map
    for info in pkgutil.iter_modules(methods.__path__):
        module = importlib.import_module(f"methods.{info.name}")
        for name, fn in shared.items():
            if module is not _dense and hasattr(module, name):
                assert getattr(module, name) is fn, f"methods.{info.name}.{name} is a second implementation"
    add_module = importlib.import_module("methods.add")
    assert add_module.masked_attention is _dense.masked_attention
    calls = []

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        calls.append(args[3])
        return _dense.masked_attention(*args, **kwargs)

    monkeypatch.setattr(add_module, "masked_attention", spy)
    d, s, t, b = _add_case()
    d.losses(s, t, b)
    assert len(calls) == 2 and all(torch.isneginf(m).any() for m in calls)


# -- ADD --------------------------------------------------------------------------------
def _add_case(teacher_bg: float = 3.0):
    """One 2x2 pair: a lesion pixel (0, 0) and three background pixels in both maps."""
    ctx = context(2, 2)
    d = methods.create("add", ctx, embed_dim=2, par_iterations=0)
    with torch.no_grad():
        d.student_embed.weight.copy_(torch.eye(2)[:, :, None, None])
        d.teacher_embed.weight.copy_(torch.eye(2)[:, :, None, None])
    s_map = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])[None]
    t_map = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, teacher_bg], [teacher_bg, teacher_bg]]])[None]
    head = fixed_head([[1.0, 0.0], [0.0, 1.0]])  # class 0's CAM is channel 0: lesion at (0, 0)
    s = outputs(s_map, head, logits=torch.tensor([[1.0, 0.0]]))
    t = outputs(t_map, head, logits=torch.tensor([[1.0, 1.0]]))
    return d, s, t, batch(1, epoch=20)


def test_add_losses_hand_computed() -> None:
    d, s, t, b = _add_case(teacher_bg=3.0)
    terms = d.losses(s, t, b)
    assert set(terms) == {"ce", "logit", "add_nbi", "add_wli"}
    torch.testing.assert_close(terms["logit"], torch.tensor(1 - 1 / math.sqrt(2)))
    # Each pixel attends only to same-label pixels of the other image, so the lesion pixel
    # is rebuilt as (2, 0) and background pixels as the other image's background vector:
    # cos = (4 + 3 * 3) / (sqrt(4 + 3) * sqrt(4 + 27)) in both directions.
    expected = torch.tensor(1 - 13 / math.sqrt(7 * 31))
    torch.testing.assert_close(terms["add_nbi"], expected)
    torch.testing.assert_close(terms["add_wli"], expected)
    d, s, t, b = _add_case(teacher_bg=1.0)  # identical maps and labels: exact reconstruction
    terms = d.losses(s, t, b)
    assert terms["add_nbi"].item() < 1e-6 and terms["add_wli"].item() < 1e-6


def test_add_warmup_and_pairs() -> None:
    d, s, t, b = _add_case()
    b.epoch, b.num_epochs = 14, 199
    assert set(d.losses(s, t, b)) == {"ce", "logit"}  # code: dense terms for epoch > 15 (1-based)
    b.epoch = 15
    assert "add_nbi" in d.losses(s, t, b)
    b.epoch, b.num_epochs = 0, 12  # scaled: round(15/199 * 12) = 1
    assert "add_nbi" not in d.losses(s, t, b)
    b.epoch = 1
    assert "add_nbi" in d.losses(s, t, b)
    twins_only = methods.create("add", context(2, 2), pseudo_pairs=False)
    b.twin = torch.tensor([False])
    assert set(twins_only.losses(s, t, b)) == {"ce"}
    assert methods.get("add").regimes == frozenset({"paired", "all"})


# -- CPC-Trans ----------------------------------------------------------------------------
def test_cpc_trans_cga_and_sam_hand_checked() -> None:
    d = methods.create("cpc-trans", context(4, 4), dropout=0.0)
    head = fixed_head([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    g = torch.Generator().manual_seed(1)
    fmap = torch.rand(2, 4, 2, 2, generator=g)
    s = outputs(fmap, head)
    t = outputs(fmap.clone(), head)
    terms = d.losses(s, t, batch(2))
    assert terms["cga"].item() < 1e-6 and terms["sam"].item() < 1e-6  # identical sides
    s.embedding = torch.tensor([[1.0, 0, 0, 0], [0, 2.0, 0, 0]])
    t.embedding = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 3.0, 0]])
    terms = d.losses(s, t, batch(2))
    torch.testing.assert_close(terms["cga"], torch.tensor(((1 - 1 / math.sqrt(2)) + 1.0) / 2))
    # SAM on true twins only: with no twin in the batch the term is absent.
    assert "sam" not in d.losses(s, t, batch(2, twin=torch.tensor([False, False])))
    assert methods.get("cpc-trans").default_weights["sam"] == 0.3


def test_cpc_trans_sam_uses_twin_rows_and_resizes() -> None:
    d = methods.create("cpc-trans", context(4, 8, s_size=(2, 2), t_size=(4, 4)), dropout=0.0)
    g = torch.Generator().manual_seed(2)
    s = outputs(torch.rand(3, 4, 2, 2, generator=g), nn.Linear(4, 2))
    t = outputs(torch.rand(3, 8, 4, 4, generator=g), nn.Linear(8, 2))
    twin = torch.tensor([True, False, True])
    full = methods.create(
        "cpc-trans", context(4, 8, s_size=(2, 2), t_size=(4, 4)), dropout=0.0, sam_on_pseudo_pairs=True
    )
    full.load_state_dict(d.state_dict())
    a_s = d._student_map(s)
    a_t = torch.nn.functional.interpolate(
        d.teacher_attention(t.embedding, t.features[-1])[:, None], size=(2, 2), mode="bilinear"
    )[:, 0]
    per_row = 1 - torch.nn.functional.cosine_similarity(a_s.flatten(1), a_t.flatten(1))
    torch.testing.assert_close(d.losses(s, t, batch(3, twin=twin))["sam"], per_row[twin].mean())
    torch.testing.assert_close(full.losses(s, t, batch(3, twin=twin))["sam"], per_row.mean())


@pytest.mark.parametrize(("s_ch", "t_ch"), [(4, 4), (4, 8), (8, 4)])
def test_cpc_trans_alignment_cannot_fall_without_the_student(s_ch: int, t_ch: int) -> None:
    """With the student frozen, optimiser steps on the method's own parameters cannot
    lower CGA: nothing trainable sits between the student's token and the target."""
    torch.manual_seed(0)
    d = methods.create("cpc-trans", context(s_ch, t_ch), dropout=0.0)
    g = torch.Generator().manual_seed(3)
    s = outputs(torch.rand(4, s_ch, 2, 2, generator=g), nn.Linear(s_ch, 2))
    t = outputs(torch.rand(4, t_ch, 2, 2, generator=g), nn.Linear(t_ch, 2))
    b = batch(4)
    params = d.student_parameters()
    optimiser = torch.optim.Adam(params, lr=0.05)
    first = d.losses(s, t, b)["cga"].item()
    assert first > 0.01
    for _ in range(20):
        terms = d.losses(s, t, b)
        optimiser.zero_grad()
        (terms["cga"] + 0.3 * terms["sam"]).backward()
        optimiser.step()
    assert d.losses(s, t, b)["cga"].item() == pytest.approx(first, abs=1e-6)


def test_cpc_trans_fixed_width_map_keeps_angles_when_widening() -> None:
    d = methods.create("cpc-trans", context(4, 8), dropout=0.0)
    assert not any(p.shape == (8, 4) for p in d.parameters())  # the map is no parameter
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    mapped = d.to_teacher_width(x)
    torch.testing.assert_close(mapped @ mapped.t(), x @ x.t(), atol=1e-5, rtol=1e-5)


def _direct_class_token_attention(attn: nn.MultiheadAttention, token: Tensor, fmap: Tensor) -> Tensor:
    """Head-averaged softmax(q k^T / sqrt(d_h)) written out from the module's projections."""
    b, d, h, w = fmap.shape
    heads = attn.num_heads
    dh = d // heads
    w_q, w_k, _ = attn.in_proj_weight.detach().double().chunk(3)
    b_q, b_k, _ = attn.in_proj_bias.detach().double().chunk(3)
    out = torch.zeros(b, h * w, dtype=torch.float64)
    for i in range(b):
        q = w_q @ token[i].double() + b_q  # (d,)
        patches = fmap[i].double().reshape(d, h * w).t()  # (hw, d)
        k = patches @ w_k.t() + b_k  # (hw, d)
        for head in range(heads):
            sl = slice(head * dh, (head + 1) * dh)
            logits = torch.tensor([float(q[sl] @ k[p, sl]) / math.sqrt(dh) for p in range(h * w)])
            out[i] += torch.softmax(logits.double(), dim=0) / heads
    return out.reshape(b, h, w)


def test_cpc_trans_attention_maps_match_a_direct_computation() -> None:
    torch.manual_seed(0)
    d = methods.create("cpc-trans", context(8, 8, s_size=(2, 3), t_size=(2, 3)), dropout=0.0, num_heads=2)
    with torch.no_grad():  # non-zero biases so that they count
        d.teacher_attention.attention.in_proj_bias.normal_()
    g = torch.Generator().manual_seed(5)
    fmap = torch.randn(3, 8, 2, 3, generator=g)
    token = torch.randn(3, 8, generator=g)
    got = d.teacher_attention(token, fmap)
    expected = _direct_class_token_attention(d.teacher_attention.attention, token, fmap)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)
    # the student's map (shared module, equal widths: the student's own tokens)
    s = Outputs(logits=torch.zeros(3, 2), embedding=token, features=[fmap])
    torch.testing.assert_close(d._student_map(s).double(), expected, atol=1e-5, rtol=1e-5)
    # SAM = mean over twin rows of 1 - cos between the student's and the teacher's maps
    t_fmap = torch.randn(3, 8, 2, 3, generator=g)
    t_token = torch.randn(3, 8, generator=g)
    t = Outputs(logits=torch.zeros(3, 2), embedding=t_token, features=[t_fmap])
    a_t = _direct_class_token_attention(d.teacher_attention.attention, t_token, t_fmap)
    cos = [float(expected[i].flatten() @ a_t[i].flatten() / (expected[i].norm() * a_t[i].norm())) for i in range(3)]
    sam = d.losses(s, t, batch(3, y=torch.tensor([0, 1, 0])))["sam"]
    assert sam.item() == pytest.approx(sum(1 - c for c in cos) / 3, rel=1e-5)


def test_cpc_trans_shared_trains_one_network_on_both_modalities() -> None:
    torch.manual_seed(0)
    net = TinyNet(8)
    d = methods.create("cpc-trans-shared", context(8, None), dropout=0.0)
    assert not d.needs_teacher
    d.bind(net, None)
    b = batch(2, y=torch.tensor([0, 1]))
    s = net(b.student_x)
    terms = d.losses(s, None, b)
    assert set(terms) == {"ce", "ce_nbi", "cga", "sam"}
    n = net(b.teacher_x)
    torch.testing.assert_close(terms["ce_nbi"], torch.nn.functional.cross_entropy(n.logits, b.y))
    cos = torch.nn.functional.cosine_similarity(s.embedding, n.embedding)
    torch.testing.assert_close(terms["cga"], (1 - cos).mean())
    net.zero_grad()
    terms["ce_nbi"].backward()
    assert net.conv.weight.grad is not None and net.conv.weight.grad.abs().sum() > 0


def test_cpc_trans_separate_student_attention_uses_its_own_module_and_the_options() -> None:
    torch.manual_seed(0)
    d = methods.create("cpc-trans", context(8, 4), dropout=0.0, share_attention=False, num_heads=2)
    assert d.student_attention is not None
    own = d.student_attention.attention
    assert (own.embed_dim, own.num_heads, own.dropout) == (8, 2, 0.0)
    assert (d.teacher_attention.attention.embed_dim, d.teacher_attention.attention.num_heads) == (4, 2)
    g = torch.Generator().manual_seed(6)
    fmap, token = torch.randn(2, 8, 2, 3, generator=g), torch.randn(2, 8, generator=g)
    s = Outputs(logits=torch.zeros(2, 2), embedding=token, features=[fmap])
    expected = _direct_class_token_attention(own, token, fmap)
    torch.testing.assert_close(d._student_map(s).double(), expected, atol=1e-5, rtol=1e-5)
    assert methods.create("cpc-trans", context(8, 4)).teacher_attention.attention.dropout == 0.1  # the paper's
    assert "width_map" not in d.state_dict()  # derived from the widths, not state
    bad = context(8, 4)
    bad.student = ModelSpec("toy", 2, 8, (5,), ((2, 2),))  # only the student's last map is not pooled
    with pytest.raises(ValueError, match="last feature map"):
        methods.create("cpc-trans", bad)


def test_cpc_trans_heads_default_to_width_over_64() -> None:
    from methods.cpc_trans import _heads

    assert _heads(128, 0) == 2 and _heads(64, 0) == 1 and _heads(8, 0) == 1
    assert _heads(8, 4) == 4
    with pytest.raises(ValueError, match="does not divide"):
        _heads(8, 3)


def test_cpc_trans_width_map_is_seeded_with_zero() -> None:
    from methods.cpc_trans import fixed_width_map

    q, _ = torch.linalg.qr(torch.randn(8, 4, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(fixed_width_map(4, 8), q)  # widening: orthonormal columns
    torch.testing.assert_close(fixed_width_map(8, 4), q.t())  # narrowing: orthonormal rows


def test_cpc_trans_shared_options_and_sam_rows() -> None:
    torch.manual_seed(0)
    net = TinyNet(8)
    d = methods.create("cpc-trans-shared", context(8, None), dropout=0.0, num_heads=2)
    assert (d.attention.attention.num_heads, d.attention.attention.dropout) == (2, 0.0)
    d.bind(net, None)
    b = batch(2, y=torch.tensor([0, 1]), twin=torch.tensor([False, False]))
    assert "sam" not in d.losses(net(b.student_x), None, b)  # no true twin: no SAM
    every = methods.create("cpc-trans-shared", context(8, None), dropout=0.0, num_heads=2, sam_on_pseudo_pairs=True)
    every.load_state_dict(d.state_dict())
    every.bind(net, None)
    s, n = net(b.student_x), net(b.teacher_x)
    a_w = _direct_class_token_attention(every.attention.attention, s.embedding.detach(), s.features[-1].detach())
    a_n = _direct_class_token_attention(every.attention.attention, n.embedding.detach(), n.features[-1].detach())
    cos = torch.nn.functional.cosine_similarity(a_w.flatten(1), a_n.flatten(1))
    sam = every.losses(s, None, b)["sam"]
    assert sam.item() == pytest.approx(float((1 - cos).mean()), rel=1e-5, abs=1e-7)


# -- PolypsAlign ------------------------------------------------------------------------------
def test_contrastive_hinge_hand_computed() -> None:
    x = torch.zeros(1, 2)  # softmax = (1/2, 1/2)
    pos = torch.zeros(1, 2)  # KL(pos || x) = 0
    neg = torch.tensor([[math.log(3.0), 0.0]])  # softmax = (3/4, 1/4)
    kl_neg = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2  # mean over B*C = 2 entries
    torch.testing.assert_close(contrastive_hinge(x, pos, neg, 0.85), torch.tensor(0.85 - kl_neg))
    torch.testing.assert_close(contrastive_hinge(x, pos, None, 0.85), torch.tensor(0.85))
    assert float(contrastive_hinge(x, pos, neg, 0.01)) == 0.0  # clamped at 0
    # agrees with F.kl_div's legacy "mean" reduction
    far = torch.tensor([[2.0, -1.0]])
    with warnings.catch_warnings():  # torch warns that "mean" will change meaning; we check the old one
        warnings.simplefilter("ignore", UserWarning)
        ref = torch.nn.functional.kl_div(torch.log_softmax(x, -1), torch.softmax(far, -1), reduction="mean")
    torch.testing.assert_close(contrastive_hinge(x, far, None, 0.0), ref)


def _polyps_case(s_ch: int = 4, t_ch: int = 8):
    torch.manual_seed(0)
    d = methods.create("polypsalign", context(s_ch, t_ch, s_size=(2, 2), t_size=(2, 2)))
    student, teacher = TinyNet(s_ch), TinyNet(t_ch)
    d.bind(student, teacher)
    b = batch(6, y=torch.tensor([0, 1, 0, 1, 0, 1]))
    with torch.no_grad():
        t = teacher(b.teacher_x)
    return d, student, teacher, b, t


def test_polypsalign_adversary_and_student_pull_in_opposite_directions() -> None:
    d, _, _, b, _ = _polyps_case()
    with torch.no_grad():  # start from an undecided discriminator (p = 1/2 everywhere)
        d.discriminator.fc1.bias.zero_()
        d.discriminator.fc2.bias.zero_()
    g = torch.Generator().manual_seed(3)
    s = outputs(torch.randn(6, 4, 2, 2, generator=g), nn.Linear(4, 2))  # WLI maps
    t = outputs(torch.randn(6, 8, 2, 2, generator=g) + 2.0, nn.Linear(8, 2))  # NBI maps, shifted
    optimiser = torch.optim.Adam(d.adversary_parameters(), lr=1e-3, betas=(0.5, 0.999))

    def adversary() -> float:
        return sum(d.adversary_losses(s.detach(), t, b).values()).item()

    def fooling() -> float:
        return d.losses(s, t, b)["adv"].item()

    assert set(d.adversary_losses(s.detach(), t, b)) == {"real", "fake"}
    before_adv, before_fool = adversary(), fooling()
    optimiser.zero_grad()
    sum(d.adversary_losses(s.detach(), t, b).values()).backward()
    optimiser.step()
    assert adversary() < before_adv - 1e-5
    assert fooling() > before_fool + 1e-4


def test_polypsalign_gradients_reach_student_and_adapter_not_teacher() -> None:
    d, student, teacher, b, t = _polyps_case()
    for p in teacher.parameters():
        p.requires_grad_(True)  # even if a caller forgot to freeze it
    assert isinstance(d.adapter, nn.Conv2d)  # widths differ: 4 -> 8
    terms = d.losses(student(b.student_x), t, b)
    assert set(terms) == {"ce", "adv", "contrast"}
    sum(terms.values()).backward()
    assert student.conv.weight.grad is not None and d.adapter.weight.grad is not None
    raw = d._bound["raw_student"]
    assert all(p.grad is None for p in raw.parameters())
    # the adversary's own loss reaches only the discriminator
    student.zero_grad()
    d.adapter.weight.grad = None
    for p in d.adversary_parameters():
        p.grad = None
    s = student(b.student_x)
    sum(d.adversary_losses(s.detach(), t, b).values()).backward()
    assert student.conv.weight.grad is None and d.adapter.weight.grad is None
    assert all(p.grad is not None for p in d.adversary_parameters())
    assert {id(p) for p in d.adversary_parameters()}.isdisjoint({id(p) for p in d.student_parameters()})


def test_polypsalign_hinge_uses_teacher_head_on_student_features() -> None:
    d, student, _, b, t = _polyps_case(t_ch=4)
    assert isinstance(d.adapter, nn.Identity)
    assert not any(p.requires_grad for p in d._bound["raw_student"].parameters())  # a frozen copy
    with torch.no_grad():  # the student has trained away from its frozen initial copy
        student.conv.weight.add_(0.3 * torch.randn_like(student.conv.weight))
    s = student(b.student_x)
    raw = d._bound["raw_student"](b.student_x)
    x = torch.nn.functional.linear(s.features[-1].mean(dim=(2, 3)), t.classifier.weight, t.classifier.bias)
    neg = torch.nn.functional.linear(raw.features[-1].mean(dim=(2, 3)), t.classifier.weight, t.classifier.bias)
    expected = contrastive_hinge(x, t.logits, neg, 0.85)
    assert abs((expected - contrastive_hinge(x, t.logits, None, 0.85)).item()) > 1e-3  # the negative shows
    torch.testing.assert_close(d.losses(s, t, b)["contrast"], expected)
    assert methods.get("polypsalign").regimes == frozenset({"paired", "unpaired", "all"})



def _kl_mean_ref(target_logits: Tensor, x_logits: Tensor) -> float:
    """mean over rows and classes of p (log p - log q), p = softmax(target), q = softmax(x), float64."""
    p = torch.softmax(target_logits.double(), -1)
    return (p * (p.log() - torch.log_softmax(x_logits.double(), -1))).mean().item()


def _bilinear_ref(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with half-pixel centres (align_corners=False), written out in float64."""

    def weights(n_in: int, n_out: int) -> Tensor:
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        for i in range(n_out):
            src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = min(math.floor(src), n_in - 1)
            i1, lam = min(i0 + 1, n_in - 1), src - i0
            m[i, i0] += 1 - lam
            m[i, i1] += lam
        return m

    return torch.einsum("hi,bcij,wj->bchw", weights(x.shape[-2], size[0]), x.double(), weights(x.shape[-1], size[1]))


@pytest.mark.parametrize(("channels", "widths"), [(8, (4, 2)), (2, (1, 1))])
def test_polypsalign_discriminator_layers_match_the_code(channels: int, widths: tuple[int, int]) -> None:
    """conv3x3/2 (C -> C/2) - ReLU - conv3x3/2 (C/2 -> C/4) - ReLU - FC 512 - FC 2, N(0, 1e-3) FC weights."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    disc = FeatureDiscriminator(channels, (14, 10))  # 14 x 10 -> 7 x 5 -> 4 x 3
    assert disc.conv1.weight.shape == (widths[0], channels, 3, 3)
    assert disc.conv2.weight.shape == (widths[1], widths[0], 3, 3)
    assert disc.fc1.weight.shape == (512, widths[1] * 4 * 3) and disc.fc2.weight.shape == (2, 512)
    assert 0.9e-3 < disc.fc1.weight.std().item() < 1.1e-3 and 0.8e-3 < disc.fc2.weight.std().item() < 1.2e-3
    x = torch.randn(2, channels, 14, 10)
    h = F.relu(F.conv2d(x, disc.conv1.weight, disc.conv1.bias, stride=2, padding=1))
    h = F.relu(F.conv2d(h, disc.conv2.weight, disc.conv2.bias, stride=2, padding=1))
    expected = F.linear(F.linear(h.flatten(1), disc.fc1.weight, disc.fc1.bias), disc.fc2.weight, disc.fc2.bias)
    torch.testing.assert_close(disc(x), expected)


def test_polypsalign_head_without_bias_and_adapter_resize() -> None:
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(3, 2, bias=False)
    f = torch.randn(2, 3, 2, 2, generator=g)
    torch.testing.assert_close(head_logits(f, head), f.mean(dim=(2, 3)) @ head.weight.detach().t())
    # student 4 x 2 x 2 -> teacher 8 x 4 x 3: a 1x1 conv without bias, then a bilinear resize
    d = methods.create("polypsalign", context(4, 8, s_size=(2, 2), t_size=(4, 3)))
    x = torch.randn(2, 4, 2, 2, generator=g)
    mapped = torch.einsum("oc,bchw->bohw", d.adapter.weight.detach()[:, :, 0, 0].double(), x.double())
    torch.testing.assert_close(d.adapt(x).double(), _bilinear_ref(mapped, (4, 3)), rtol=1e-5, atol=1e-6)


def test_polypsalign_options_negative_margin_and_pseudo_pairs() -> None:
    torch.manual_seed(0)
    student, teacher = TinyNet(4), TinyNet(4)
    b = batch(4, y=torch.tensor([0, 1, 0, 1]), twin=torch.tensor([True, False, True, False]))
    with torch.no_grad():
        t = teacher(b.teacher_x)
    plain = methods.create("polypsalign", context(4, 4), negative="none", margin=0.3)
    plain.bind(student, teacher)
    assert "raw_student" not in plain._bound
    twins_only = methods.create("polypsalign", context(4, 4), pseudo_pairs=False)
    twins_only.bind(student, teacher)
    with torch.no_grad():  # the student has trained away from its frozen initial copy
        student.conv.weight.add_(0.3 * torch.randn_like(student.conv.weight))
        neg = head_logits(twins_only._bound["raw_student"](b.student_x).features[-1], t.classifier)
    s = student(b.student_x)
    x = head_logits(s.features[-1], t.classifier)
    # every row (pseudo-pairs by default), no negative, margin 0.3
    assert plain.losses(s, t, b)["contrast"].item() == pytest.approx(max(0.0, _kl_mean_ref(t.logits, x) + 0.3))
    rows = b.twin
    gap = _kl_mean_ref(t.logits[rows], x[rows]) - _kl_mean_ref(neg[rows], x[rows])
    assert twins_only.losses(s, t, b)["contrast"].item() == pytest.approx(max(0.0, gap + 0.85), rel=1e-5)
    no_twins = batch(4, y=torch.tensor([0, 1, 0, 1]), twin=torch.zeros(4, dtype=torch.bool))
    assert "contrast" not in twins_only.losses(s, t, no_twins)


def test_polypsalign_discriminator_optimiser_settings() -> None:
    d = methods.create("polypsalign", context(4, 8))
    opt = d.adversary_optimizer(d.adversary_parameters(), lr=1e-4)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam) and len(group["params"]) == len(d.adversary_parameters())
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-4, (0.9, 0.999), 1e-8)
    other = methods.create("polypsalign", context(4, 8), disc_lr=3e-4, disc_weight_decay=0.0)
    group = other.adversary_optimizer(other.adversary_parameters(), lr=1e-4).param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (3e-4, 0.0)

# -- SAMD ---------------------------------------------------------------------------------------
def test_samd_matches_cams_on_twins() -> None:
    d = methods.create("samd", context(1, 1, s_size=(2, 2), t_size=(4, 4)))
    head = fixed_head([[1.0], [-1.0]])
    s_map = torch.zeros(2, 1, 2, 2)
    s_map[:, 0, 0, 0] = 1.0  # student attends to the top-left cell
    t_same = torch.zeros(2, 1, 4, 4)
    t_same[:, 0, :2, :2] = 1.0  # teacher: same quadrant at its finer grid
    t_other = torch.zeros(2, 1, 4, 4)
    t_other[:, 0, 2:, 2:] = 1.0  # teacher: the opposite quadrant
    s = outputs(s_map.clone().requires_grad_(), head)
    terms = d.losses(s, outputs(t_same, head), batch(2))
    assert terms["samd"].item() < 1e-6
    far = d.losses(s, outputs(t_other, head), batch(2))["samd"]
    # the teacher's map resized to 2x2 is (0, 0.25; 0.25, 1) after min-max: cos with (1, 0; 0, 0) = 0
    torch.testing.assert_close(far, torch.tensor(1.0))
    assert "samd" not in d.losses(s, outputs(t_same, head), batch(2, twin=torch.tensor([False, False])))
    assert "no claim of fidelity" in " ".join(d.__doc__.split())
    assert "nothing here claims fidelity" in methods.get("samd").deviations


# -- all five: finite terms that reach the student; declared regimes -------------------------------
# (the frozen teacher is the harness's job: tests/test_harness_methods.py)
@pytest.mark.parametrize("name", PAIRED_METHODS)
def test_terms_are_finite_and_reach_the_student(name: str) -> None:
    torch.manual_seed(0)
    student, teacher = TinyNet(4), TinyNet(8)
    cls = methods.get(name)
    ctx = context(4, 8 if cls.needs_teacher else None, s_size=(2, 2), t_size=(2, 2))
    opts = {"dropout": 0.0} if name.startswith("cpc") else {}
    d = methods.create(name, ctx, **opts)
    d.bind(student, teacher if cls.needs_teacher else None)
    b = batch(4, y=torch.tensor([0, 1, 0, 1]), twin=torch.tensor([True, True, False, True]))
    t = None
    if cls.needs_teacher:
        with torch.no_grad():
            t = teacher(b.teacher_x)
    terms = d.losses(student(b.student_x), t, b)
    assert "ce" in terms and all(torch.isfinite(v) for v in terms.values())
    assert set(terms) <= set(cls.default_weights)
    sum(terms.values()).backward()
    assert student.conv.weight.grad is not None and torch.isfinite(student.conv.weight.grad).all()
    assert cls.main_regimes == frozenset({"paired", "all"})
    assert "unpaired" not in cls.regimes or name == "polypsalign"
    assert cls.deviations and cls.paper


# -- end to end ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_paired_methods_end_to_end_smoke(tmp_path) -> None:
    from benchmark import run

    records = run(
        methods=",".join(PAIRED_METHODS),
        data="synth",
        regimes="unpaired,all",
        seeds=[0],
        profile="smoke",
        out=tmp_path,
        epochs=1,
    )
    seen = {(r["method"], r["regime"]): r for r in records}
    expected_terms = {
        "add": {"ce", "logit", "add_nbi", "add_wli"},
        "cpc-trans": {"ce", "cga"},
        "cpc-trans-shared": {"ce", "ce_nbi", "cga"},
        "polypsalign": {"ce", "adv", "contrast", "adv_real", "adv_fake"},
        "samd": {"ce"},
    }
    for name in PAIRED_METHODS:
        record = seen[(name, "all")]
        assert record["status"] == "ok", record.get("error")
        assert expected_terms[name] <= set(record["history"][-1]["loss"])
        assert 0.0 <= record["metrics"]["auc"] <= 1.0
        unpaired = seen[(name, "unpaired")]
        assert unpaired["status"] == ("ok" if name == "polypsalign" else "unsupported"), unpaired.get("error")


def test_add_dense_terms_match_a_direct_computation() -> None:
    """ADD's two reconstruction terms in float64 from the paper's definitions: CAM labels with
    the given thresholds (no refinement), pairs open iff both pixels carry the same confident
    label, softmax(F q F k^T) without scaling, 1 - cos of the whole flattened maps."""
    g = torch.Generator().manual_seed(8)
    s = outputs(torch.randn(3, 4, 2, 3, generator=g), nn.Linear(4, 2))
    t = outputs(torch.randn(3, 6, 2, 3, generator=g), nn.Linear(6, 2))
    b = batch(3, y=torch.tensor([0, 1, 1]), epoch=5, num_epochs=10)
    d = methods.create("add", context(4, 6, s_size=(2, 3), t_size=(2, 3)), embed_dim=5, low=0.2, high=0.6,
                       par_iterations=0)
    terms = d.losses(s, t, b)

    def labels(out: Outputs) -> list[list[int]]:
        rows = []
        for i, c in enumerate(b.y.tolist()):
            cam = (out.classifier.weight[c].detach().double() @ out.features[-1][i].flatten(1).double()).clamp_min(0)
            cam = (cam - cam.min()) / (cam.max() - cam.min())
            rows.append([0 if v < 0.2 else 1 if v > 0.6 else -1 for v in cam.tolist()])
        return rows

    def tokens(out: Outputs, conv: nn.Conv2d) -> Tensor:
        weight = conv.weight.detach()[:, :, 0, 0].double()
        return torch.einsum("oc,bcl->blo", weight, out.features[-1].flatten(2).double())

    lab_w, lab_n = labels(s), labels(t)
    f_w, f_n = tokens(s, d.student_embed), tokens(t, d.teacher_embed)

    def term(fq: Tensor, fk: Tensor, lq: list[list[int]], lk: list[list[int]]) -> float:
        total = 0.0
        for i in range(3):
            rec = torch.zeros_like(fq[i])
            for a in range(fq.shape[1]):
                keys = [j for j in range(fk.shape[1]) if lq[i][a] >= 0 and lq[i][a] == lk[i][j]]
                if keys:
                    w = torch.softmax(torch.stack([fq[i, a] @ fk[i, j] for j in keys]), 0)
                    rec[a] = sum(wj * fk[i, j] for wj, j in zip(w, keys, strict=True))
            total += 1 - float(rec.flatten() @ fq[i].flatten() / (rec.flatten().norm() * fq[i].flatten().norm()))
        return total / 3

    assert terms["add_nbi"].item() == pytest.approx(term(f_n, f_w, lab_n, lab_w), rel=1e-4)
    assert terms["add_wli"].item() == pytest.approx(term(f_w, f_n, lab_w, lab_n), rel=1e-4)
    assert {v for row in lab_w + lab_n for v in row} == {-1, 0, 1}  # every case of the relation occurs
