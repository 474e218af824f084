"""PaGKD (paper design), pagkd-released and the ablations: losses on hand-built inputs,
module behaviour, gradient routing, group batches, warm-up, and an end-to-end smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import methods
import methods.pagkd_released as pagkd_released
from benchmark.models.backbones import create_backbone
from datasets.sampling import GroupSampler
from methods import Batch, DistillerContext
from methods._dense import relation_mask
from methods.base import ModelSpec, Outputs
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
    _pairwise_group_loss_direct,
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
# Independent re-implementation of the paper's equations, written from the docstring's
# formulas with explicit loops in float64; used to pin the module's values below. It
# shares no code with methods.pagkd / methods._dense / methods.pagkd_released.
# --------------------------------------------------------------------------------------
def ref_sincos(position: int, dim: int) -> list[float]:
    """[sin(p w_0), ..., sin(p w_{D/2-1}), cos(p w_0), ...], w_i = 10000^(-2i/D)."""
    freqs = [10000.0 ** (-2.0 * i / dim) for i in range(dim // 2)]
    return [math.sin(position * f) for f in freqs] + [math.cos(position * f) for f in freqs]


def ref_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ref_multi_head(q_in, kv_in, in_w, in_b, out_w, out_b, heads: int, key_open=None):
    """Vaswani et al. Eq. (1)-(5): per head softmax(Q K^T / sqrt(d_h)) V, concatenated, W_O."""
    d = q_in.shape[-1]
    wq, wk, wv = in_w[:d], in_w[d:2 * d], in_w[2 * d:]
    bq, bk, bv = in_b[:d], in_b[d:2 * d], in_b[2 * d:]
    q, k, v = q_in @ wq.T + bq, kv_in @ wk.T + bk, kv_in @ wv.T + bv
    dh = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        rows = []
        for i in range(q.shape[0]):
            logits = [float(q[i, sl] @ k[j, sl]) / math.sqrt(dh) for j in range(k.shape[0])]
            keep = [j for j in range(k.shape[0]) if key_open is None or key_open[j]]
            top = max(logits[j] for j in keep)
            weights = {j: math.exp(logits[j] - top) for j in keep}
            total = sum(weights.values())
            rows.append(sum(weights[j] / total * v[j, sl] for j in keep))
        outs.append(torch.stack(rows))
    return torch.cat(outs, dim=1) @ out_w.T + out_b


def ref_lrqformer(qf: LRQFormer, tokens: torch.Tensor, valid: torch.Tensor, grid: tuple[int, int], heads: int):
    """Prototypes of every group: queries -> [self-attn, cross-attn to LN(tokens) + E_pos, FFN],
    residual + post-LayerNorm each (BERT / Q-Former layout), E_pos = 2-D + image-index sine-cosine."""
    p = {k: v.detach().double() for k, v in qf.state_dict().items()}
    u, n, length, d = tokens.shape
    w = grid[1]
    out = []
    for g in range(u):
        memory, key_open = [], []
        for slot in range(n):
            for pix in range(length):
                row, col = divmod(pix, w)
                pos = torch.tensor(ref_sincos(row, d // 2) + ref_sincos(col, d // 2), dtype=torch.float64)
                pos = pos + torch.tensor(ref_sincos(slot, d), dtype=torch.float64)
                tok = ref_layer_norm(tokens[g, slot, pix].double(), p["token_norm.weight"], p["token_norm.bias"])
                memory.append(tok + pos)
                key_open.append(bool(valid[g, slot]))
        memory = torch.stack(memory)
        q = p["queries"].clone()
        for b in range(len(qf.blocks)):
            pre = f"blocks.{b}."

            def P(name, pre=pre):
                return p[pre + name]

            sa = ref_multi_head(q, q, P("self_attn.in_proj_weight"), P("self_attn.in_proj_bias"),
                                P("self_attn.out_proj.weight"), P("self_attn.out_proj.bias"), heads)
            q = ref_layer_norm(q + sa, P("norm1.weight"), P("norm1.bias"))
            ca = ref_multi_head(q, memory, P("multihead_attn.in_proj_weight"), P("multihead_attn.in_proj_bias"),
                                P("multihead_attn.out_proj.weight"), P("multihead_attn.out_proj.bias"), heads,
                                key_open)
            q = ref_layer_norm(q + ca, P("norm2.weight"), P("norm2.bias"))
            hidden = q @ P("linear1.weight").T + P("linear1.bias")
            hidden = hidden * 0.5 * (1.0 + torch.erf(hidden / math.sqrt(2.0)))  # exact GELU
            q = ref_layer_norm(q + hidden @ P("linear2.weight").T + P("linear2.bias"), P("norm3.weight"),
                               P("norm3.bias"))
        out.append(q)
    return torch.stack(out)


def ref_set_similarity(a: torch.Tensor, b: torch.Tensor) -> float:
    """(1/N_q) sum_t cos(a_t, b_t)."""
    return sum(float(a[t] @ b[t] / (a[t].norm() * b[t].norm())) for t in range(a.shape[0])) / a.shape[0]


def ref_group_contrastive(wli, nbi, classes: list[int], tau: float) -> float:
    """Symmetric InfoNCE over prototype sets: positive = same group other modality; negatives =
    both modalities' sets of groups of another class; mean over anchors, then over modalities."""
    def side(anchor_sets, other_sets):
        losses = []
        for u in range(len(classes)):
            pos = ref_set_similarity(anchor_sets[u], other_sets[u]) / tau
            cands = [pos]
            for v in range(len(classes)):
                if classes[v] != classes[u]:
                    cands.append(ref_set_similarity(anchor_sets[u], other_sets[v]) / tau)
                    cands.append(ref_set_similarity(anchor_sets[u], anchor_sets[v]) / tau)
            top = max(cands)
            losses.append(top + math.log(sum(math.exp(c - top) for c in cands)) - pos)
        return sum(losses) / len(losses)

    return 0.5 * (side(wli, nbi) + side(nbi, wli))


def ref_cam_labels(fmap: torch.Tensor, head_weight: torch.Tensor, y: torch.Tensor, low=0.3, high=0.7) -> list:
    """CAM of the true class (Zhou et al. Eq. 2), ReLU, min-max to [0, 1], no refinement,
    then 0 below ``low``, 1 above ``high``, -1 between: one list of pixel labels per image."""
    labels = []
    head_weight, fmap = head_weight.detach(), fmap.detach()
    for i in range(fmap.shape[0]):
        cam = [max(0.0, float(head_weight[int(y[i])].double() @ fmap[i, :, r, c].double()))
               for r in range(fmap.shape[2]) for c in range(fmap.shape[3])]
        lo, hi = min(cam), max(cam)
        norm = [(v - lo) / max(hi - lo, 1e-8) for v in cam]
        labels.append([0 if v < low else 1 if v > high else -1 for v in norm])
    return labels


def ref_tokens(fmap: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """1x1 projection of every pixel, row-major tokens: (B, h*w, d) in float64."""
    b, _, h, w = fmap.shape
    fmap = fmap.detach()
    return torch.stack([torch.stack([proj.double() @ fmap[i, :, r, col].double() for r in range(h)
                                     for col in range(w)]) for i in range(b)])


def ref_standardise(tokens: torch.Tensor) -> torch.Tensor:
    flat = tokens.reshape(-1, tokens.shape[-1])
    mean = flat.mean(0)
    var = ((flat - mean) ** 2).mean(0)
    return (tokens - mean) / torch.sqrt(var + 1e-5)


def ref_groups(y: list[int], level: str) -> list[list[int]]:
    if level == "image":
        return [[i] for i in range(len(y))]
    return [[i for i in range(len(y)) if y[i] == c] for c in sorted(set(y))]


def ref_reconstruction(query_tok, key_tok, query_lab, key_lab, groups, w_q, w_k, masked=True) -> tuple[float, int]:
    """Sum over the groups' query tokens with an open key of mean_c (Rec - F)^2, and their count.
    Rec(a <- b)_i = sum_j softmax_j over open keys((W_q a_i).(W_k b_j) / sqrt(d/4)) b_j."""
    total, count = 0.0, 0
    d = query_tok.shape[-1]
    for rows in groups:
        qs = [(query_tok[r, p], query_lab[r][p]) for r in rows for p in range(query_tok.shape[1])]
        ks = [(key_tok[r, p], key_lab[r][p]) for r in rows for p in range(key_tok.shape[1])]
        for x, lx in qs:
            open_keys = [kv for kv, lk in ks if not masked or (lx >= 0 and lk == lx)]
            if not open_keys:
                continue
            logits = [float((w_q @ x) @ (w_k @ kv)) / math.sqrt(d // 4) for kv in open_keys]
            top = max(logits)
            weights = [math.exp(v - top) for v in logits]
            rec = sum(wt / sum(weights) * kv for wt, kv in zip(weights, open_keys, strict=True))
            total += float(((rec - x) ** 2).mean())
            count += 1
    return total, count


def ref_pagkd(d: PaGKD, s, t, batch: Batch, directions: str = "both", level: str = "group",
              masked: bool = True) -> dict[str, float]:
    """PaGKD's pro and den terms from the equations (CAMs without refinement: par_iterations=0)."""
    y = batch.y.tolist()
    groups = ref_groups(y, level)
    w_raw = ref_tokens(s.features[-1], d.student_proj.weight.detach()[:, :, 0, 0])
    n_raw = ref_tokens(t.features[-1], d.teacher_proj.weight.detach()[:, :, 0, 0])
    out: dict[str, float] = {}
    if d.use_pro:
        n = max(len(g) for g in groups)
        hw = s.features[-1].shape[2:]

        def pack(tokens):
            packed = torch.zeros(len(groups), n, tokens.shape[1], tokens.shape[2], dtype=tokens.dtype)
            valid = torch.zeros(len(groups), n, dtype=torch.bool)
            for g, rows in enumerate(groups):
                for slot, r in enumerate(rows):
                    packed[g, slot], valid[g, slot] = tokens[r], True
            return packed, valid

        heads = int(d.opts["heads"])
        pw = ref_lrqformer(d.prototype_head, *pack(w_raw), tuple(hw), heads)
        pn = ref_lrqformer(d.prototype_head, *pack(n_raw), tuple(hw), heads)
        classes = [y[g[0]] for g in groups]
        out["pro"] = ref_group_contrastive(pw, pn, classes, float(d.opts["temperature"]))
    if d.use_den:
        w_tok, n_tok = ref_standardise(w_raw), ref_standardise(n_raw)
        w_lab = ref_cam_labels(s.features[-1], s.classifier.weight, batch.y)
        n_lab = ref_cam_labels(t.features[-1], t.classifier.weight, batch.y)
        w_q, w_k = d.srca.w_q.weight.detach().double(), d.srca.w_k.weight.detach().double()
        den = 0.0
        if directions in ("both", "nbi_from_wli"):
            total, count = ref_reconstruction(n_tok, w_tok, n_lab, w_lab, groups, w_q, w_k, masked)
            den += total / max(count, 1)
        if directions in ("both", "wli_from_nbi"):
            total, count = ref_reconstruction(w_tok, n_tok, w_lab, n_lab, groups, w_q, w_k, masked)
            den += total / max(count, 1)
        out["den"] = den
    return out


def ref_pairwise_group_loss(query, key, query_labels, key_labels, confuse: float, original: bool) -> float:
    """The released ``Den_set``: for every (query image m, key image j): logits q_m k_j^T (no scale)
    times the relation (1 same label, ``confuse`` if either pixel is ambiguous), filled with -1e9
    where the labels differ; softmax over keys; 1 - cos(flattened reconstruction, flattened target);
    mean over the n^2 pairs. ``original``: the code's relation (labels of query image j vs key image
    m) and target (query image j); otherwise relation (m, j) and target m."""
    n = query.shape[0]
    losses = []
    for m in range(n):
        for j in range(n):
            q, k = query[m].double(), key[j].double()
            lab_q, lab_k = (query_labels[j], key_labels[m]) if original else (query_labels[m], key_labels[j])
            target = query[j].double() if original else query[m].double()
            rec = []
            for a in range(q.shape[0]):
                logits = []
                for b in range(k.shape[0]):
                    la, lb = int(lab_q[a]), int(lab_k[b])
                    if la < 0 or lb < 0:
                        logits.append(float(q[a] @ k[b]) * confuse)
                    elif la == lb:
                        logits.append(float(q[a] @ k[b]))
                    else:
                        logits.append(-1e9)
                top = max(logits)
                weights = [math.exp(v - top) for v in logits]
                rec.append(sum(wt / sum(weights) * k[b] for b, wt in enumerate(weights)))
            rec_flat, tgt = torch.stack(rec).flatten(), target.flatten()
            losses.append(1.0 - float(rec_flat @ tgt / (rec_flat.norm() * tgt.norm())))
    return sum(losses) / len(losses)


def tiny_pagkd(name: str, num_classes: int = 3, channels: int = 3, grid: tuple[int, int] = (2, 3), width: int = 8,
               heads: int = 2, seed: int = 0, **options):
    """A PaGKD variant on hand-made feature maps (no backbone): width 8, 2 heads, CAMs unrefined."""
    spec = ModelSpec(name="hand", num_classes=num_classes, embedding_dim=channels, feature_channels=(channels,),
                     feature_sizes=(grid,))
    labels = torch.arange(num_classes).repeat(2)
    ctx = DistillerContext(
        student=spec, teacher=spec, num_classes=num_classes, regime="unpaired", num_student_train=len(labels),
        num_teacher_train=len(labels), student_labels=labels, teacher_labels=labels, num_epochs=2,
        steps_per_epoch=1, batch_size=len(labels),
    )
    torch.manual_seed(seed)
    return methods.create(name, ctx, width=width, heads=heads, par_iterations=0, **options)


def hand_outputs(y: torch.Tensor, num_classes: int = 3, channels: int = 3, grid: tuple[int, int] = (2, 3),
                 seed: int = 0):
    """Student/teacher Outputs with random feature maps and heads, and the matching batch."""
    g = torch.Generator().manual_seed(seed)
    b = y.numel()

    def side():
        fmap = torch.randn(b, channels, *grid, generator=g)
        head = torch.nn.Linear(channels, num_classes)
        with torch.no_grad():
            head.weight.copy_(torch.randn(num_classes, channels, generator=g))
            head.bias.zero_()
        return Outputs(logits=head(fmap.mean((2, 3))), embedding=fmap.mean((2, 3)), features=[fmap], classifier=head)

    s, t = side(), side()
    batch = Batch(student_x=torch.rand(b, 3, 8, 12, generator=g), teacher_x=torch.rand(b, 3, 8, 12, generator=g),
                  y=y, twin=torch.zeros(b, dtype=torch.bool), index=torch.arange(b), teacher_index=torch.arange(b),
                  epoch=1, num_epochs=2)
    return s, t, batch


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
    assert terms["den"] > 0 and all(torch.isfinite(v) for v in terms.values())
    y = torch.tensor([0, 0, 0, 2, 2, 2])
    s, t, batch = hand_outputs(y, seed=12)
    d = tiny_pagkd("pagkd", seed=12)
    got, ref = d.losses(s, t, batch), ref_pagkd(d, s, t, batch)
    assert got["pro"].item() == pytest.approx(ref["pro"], rel=1e-4)
    assert got["den"].item() == pytest.approx(ref["den"], rel=1e-4)
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
    # the direction options, pinned to the equations (see test_dense_and_prototype_terms_match_the_equations)
    assert methods.create("pagkd-unidir", make_ctx(nets)).opts["directions"] == "nbi_from_wli"
    assert methods.expand_methods("pagkd-ablations")[:2] == ["baseline", "pagkd"]
    assert set(VARIANTS) - {"pagkd-released"} <= set(methods.expand_methods("pagkd-ablations"))


def test_bad_options_are_named(nets):
    with pytest.raises(ValueError, match="directions"):
        methods.create("pagkd", make_ctx(nets), directions="sideways")
    with pytest.raises(ValueError, match="width"):
        methods.create("pagkd", make_ctx(nets), width=30)
    with pytest.raises(ValueError, match="no option"):
        methods.create("pagkd", make_ctx(nets), queries=4)


def test_group_level_and_image_level_match_the_equations():
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    s, t, batch = hand_outputs(y, num_classes=2, seed=9)
    group, image = tiny_pagkd("pagkd", num_classes=2, seed=9), tiny_pagkd("pagkd-image", num_classes=2, seed=9)
    assert isinstance(image, PaGKD) and image.level == "image"
    g, i = group.losses(s, t, batch), image.losses(s, t, batch)
    ref_g, ref_i = ref_pagkd(group, s, t, batch), ref_pagkd(image, s, t, batch, level="image")
    for key in ("pro", "den"):
        assert g[key].item() == pytest.approx(ref_g[key], rel=1e-4, abs=1e-6), key
        assert i[key].item() == pytest.approx(ref_i[key], rel=1e-4, abs=1e-6), key
        assert ref_g[key] != pytest.approx(ref_i[key], rel=1e-3)  # the two levels are different losses here


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
    q, k = torch.randn(2, 4, 8) * 0.5, torch.randn(2, 4, 8) * 0.5
    # query 0 of image 1 is lesion facing a key image 0 without lesion pixels -> fully masked, uniform
    lq = torch.tensor([[1, 1, 0, -1], [1, 0, 0, 1]])
    lk = torch.tensor([[0, -1, 0, 0], [1, 1, 1, 0]])
    # one image per group: the code's index mismatch cannot show
    one = [pairwise_group_loss(q[:1], k[:1], lq[:1], lk[:1], original_indexing=o) for o in (True, False)]
    torch.testing.assert_close(one[0], one[1])
    for original in (True, False):
        got = pairwise_group_loss(q, k, lq, lk, confuse_value=0.5, original_indexing=original).item()
        assert got == pytest.approx(ref_pairwise_group_loss(q, k, lq, lk, 0.5, original), rel=1e-5), original
    ref_orig = ref_pairwise_group_loss(q, k, lq, lk, 0.5, True)
    assert ref_orig != pytest.approx(ref_pairwise_group_loss(q, k, lq, lk, 0.5, False), rel=1e-3)
    # another confuse value changes only the pairs with an ambiguous pixel
    got = pairwise_group_loss(q, k, lq, lk, confuse_value=0.2, original_indexing=True).item()
    assert got == pytest.approx(ref_pairwise_group_loss(q, k, lq, lk, 0.2, True), rel=1e-5)


@pytest.mark.parametrize(("original", "scale"), [(True, 1.0), (False, 1.0), (True, 0.05)])
def test_released_pairwise_factored_form_equals_the_direct_form(original: bool, scale: float, monkeypatch):
    """The factored Den_set (no n^2 reconstructions) against the released form, value and gradients,
    also for maps whose norms are below 1; above the size limit the direct form runs."""
    torch.manual_seed(5)
    q = (torch.randn(5, 9, 16, dtype=torch.float64) * scale).requires_grad_()
    k = (torch.randn(5, 9, 16, dtype=torch.float64) * scale).requires_grad_()
    lq, lk = torch.randint(-1, 2, (5, 9)), torch.randint(-1, 2, (5, 9))
    lq[0] = 1  # a lesion image facing key images without lesion pixels: fully masked rows
    lk[1:3] = 0
    fast = pairwise_group_loss(q, k, lq, lk, 0.3, original)
    direct = _pairwise_group_loss_direct(q, k, lq, lk, 0.3, original)
    torch.testing.assert_close(fast, direct, rtol=1e-10, atol=1e-12)
    for g_fast, g_direct in zip(torch.autograd.grad(fast, (q, k)), torch.autograd.grad(direct, (q, k)), strict=True):
        torch.testing.assert_close(g_fast, g_direct, rtol=1e-8, atol=1e-10)
    assert fast.item() == pytest.approx(ref_pairwise_group_loss(q.detach(), k.detach(), lq, lk, 0.3, original),
                                        rel=1e-6)
    calls = []
    monkeypatch.setattr(pagkd_released, "_pairwise_group_loss_direct",
                        lambda *a: calls.append(1) or _pairwise_group_loss_direct(*a))
    monkeypatch.setattr(pagkd_released, "_FACTORED_LIMIT", 5 * 5 * 9 * 9)  # at the limit: still factored
    pairwise_group_loss(q, k, lq, lk, 0.3, original)
    assert calls == []
    monkeypatch.setattr(pagkd_released, "_FACTORED_LIMIT", 5 * 5 * 9 * 9 - 1)
    big = pairwise_group_loss(q, k, lq, lk, 0.3, original)
    assert calls == [1] and big.item() == pytest.approx(direct.item(), rel=1e-12)
    # half-precision maps are scored in float32, float64 stays float64
    assert pagkd_released._at_least_float32(q.detach().to(torch.bfloat16)).dtype == torch.float32
    assert pagkd_released._at_least_float32(q.detach()).dtype == torch.float64


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


# --------------------------------------------------------------------------------------
# values pinned to the independent re-implementation above
# --------------------------------------------------------------------------------------
def test_lrqformer_matches_the_decoder_equations():
    torch.manual_seed(13)
    qf = LRQFormer(8, num_queries=3, blocks=2, heads=2).eval()
    with torch.no_grad():  # non-trivial LayerNorm affines, so a swapped or skipped norm shows
        for name, p in qf.named_parameters():
            if "norm" in name:
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    tokens = torch.randn(2, 3, 6, 8)
    valid = torch.tensor([[True, True, True], [True, False, False]])
    got = qf(tokens, valid, (2, 3)).double()
    torch.testing.assert_close(got, ref_lrqformer(qf, tokens, valid, (2, 3), heads=2), atol=2e-5, rtol=1e-4)


def test_dense_loss_by_hand():
    """Two pixels per image: pixel 0 lesion, pixel 1 background in both modalities (CAM of the
    head [1, 0]). Standardised tokens are +-s (s = 1/sqrt(1 + 1e-5)): WLI (s, s, s, s), -(...)
    and NBI (s, s, -s, -s), -(...). Every query token has exactly one open key (its label's
    token in the other modality), so the attention is one-hot and Rec = that key, whatever
    W_q, W_k. Per token: mean_c (diff)^2 = (0 + 0 + 4 s^2 + 4 s^2) / 4 = 2 s^2 in each
    direction, so L_den = 4 s^2 and one direction 2 s^2."""
    fmap = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    head = torch.nn.Linear(2, 1)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.bias.zero_()
    out = Outputs(logits=torch.zeros(1, 1), embedding=torch.zeros(1, 2), features=[fmap], classifier=head)
    batch = Batch(student_x=torch.rand(1, 3, 4, 8), teacher_x=torch.rand(1, 3, 4, 8), y=torch.tensor([0]),
                  twin=torch.zeros(1, dtype=torch.bool), index=torch.arange(1), teacher_index=torch.arange(1),
                  epoch=1, num_epochs=2)
    s2 = 1.0 / (1.0 + 1e-5)
    for name, expected in (("pagkd-den", 4 * s2), ("pagkd-unidir", 2 * s2)):
        d = tiny_pagkd(name, num_classes=1, channels=2, grid=(1, 2), width=4, heads=1)
        with torch.no_grad():
            d.student_proj.weight.copy_(torch.tensor([[1.0, 0], [1, 0], [1, 0], [1, 0]])[:, :, None, None])
            d.teacher_proj.weight.copy_(torch.tensor([[1.0, 0], [1, 0], [-1, 0], [-1, 0]])[:, :, None, None])
        for _ in range(2):  # any SRCA weights: one open key per row
            assert d.losses(out, out, batch)["den"].item() == pytest.approx(expected, rel=1e-6), name
            torch.nn.init.normal_(d.srca.w_q.weight)


@pytest.mark.parametrize(
    ("name", "options", "reference"),
    [
        ("pagkd", {}, {}),
        ("pagkd-unidir", {}, {"directions": "nbi_from_wli"}),
        ("pagkd-den", {"directions": "wli_from_nbi"}, {"directions": "wli_from_nbi"}),
        ("pagkd-plainattn", {}, {"masked": False}),
        ("pagkd-image", {}, {"level": "image"}),
    ],
)
def test_dense_and_prototype_terms_match_the_equations(name, options, reference):
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2])  # an uneven (padded) group
    s, t, batch = hand_outputs(y, seed=14)
    d = tiny_pagkd(name, seed=14, **options)
    got = d.losses(s, t, batch)
    ref = ref_pagkd(d, s, t, batch, **reference)
    assert set(got) - {"ce"} == set(ref)
    for key, value in ref.items():
        assert got[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key
    if name == "pagkd":  # the inputs exercise every case of the relation matrix
        labels = ref_cam_labels(s.features[-1], s.classifier.weight, y) + ref_cam_labels(
            t.features[-1], t.classifier.weight, y)
        assert {v for row in labels for v in row} == {-1, 0, 1}


def test_position_embedding_matches_the_sine_cosine_formula():
    from methods.pagkd import group_position_embedding, sincos_1d

    # large positions make a wrong base (10001 for 10000) visible
    positions = torch.tensor([0, 7, 1000])
    expected = torch.tensor([ref_sincos(int(p), 8) for p in positions], dtype=torch.float32)
    torch.testing.assert_close(sincos_1d(positions, 8), expected, atol=1e-4, rtol=0)
    pos = group_position_embedding(3, 2, 3, 8, device=torch.device("cpu"))
    for slot in range(3):
        for pix in range(6):
            row, col = divmod(pix, 3)
            want = torch.tensor(ref_sincos(row, 4) + ref_sincos(col, 4)) + torch.tensor(ref_sincos(slot, 8))
            torch.testing.assert_close(pos[slot, pix], want.float(), atol=1e-6, rtol=1e-6)


def test_masked_mse_and_average_prototype_with_a_single_element():
    from methods.pagkd import masked_mse

    rec, target = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]]), torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    rows = torch.tensor([[True, False]])  # one token counts: the mean over one row is its own error
    assert masked_mse(rec, target, rows).item() == pytest.approx((1 + 4) / 2)
    tokens = torch.tensor([[[[3.0, -1.0]]], [[[0.5, 2.0]]]])  # 2 groups of one image with one token
    out = AveragePrototypes()(tokens, torch.ones(2, 1, dtype=torch.bool), (1, 1))
    torch.testing.assert_close(out[:, 0], tokens[:, 0, 0])


def test_lrqformer_width_of_its_feed_forward_and_query_init():
    torch.manual_seed(15)
    qf = LRQFormer(128, num_queries=12, blocks=1, heads=16, ffn_ratio=4)
    assert qf.blocks[0].linear1.weight.shape == (4 * 128, 128)  # FFN 4 d, as documented
    assert 0.017 < float(qf.queries.detach().std()) < 0.023  # queries drawn as N(0, 0.02^2), as BLIP-2's


def test_missing_teacher_features_or_heads_are_named():
    y = torch.tensor([0, 0, 1, 1])
    s, t, batch = hand_outputs(y, num_classes=2, seed=16)
    d = tiny_pagkd("pagkd", num_classes=2, seed=16)
    with pytest.raises(RuntimeError, match="feature maps"):
        d.losses(s, Outputs(logits=t.logits, embedding=t.embedding, features=[], classifier=t.classifier), batch)
    for s_head, t_head in ((s.classifier, None), (None, t.classifier)):
        s2 = Outputs(logits=s.logits, embedding=s.embedding, features=s.features, classifier=s_head)
        t2 = Outputs(logits=t.logits, embedding=t.embedding, features=t.features, classifier=t_head)
        with pytest.raises(RuntimeError, match="linear heads"):
            d.losses(s2, t2, batch)


@pytest.mark.parametrize("original", [True, False])
def test_released_terms_match_the_code_on_hand_made_maps(original):
    """Every term of pagkd-released on hand-made maps against the references above: den (both
    directions, every class), add on the twin rows (one image pair each), pro (the code's set
    loss on the one-layer attention prototypes with identity codes) and set_cls; non-default
    temperature, divisor and confuse value."""
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2])  # class 1 has 3 images: the other groups are padded
    groups = ([0, 1], [2, 3, 4], [5, 6])
    s, t, batch = hand_outputs(y, seed=21)
    batch.twin = torch.tensor([True, False, True, False, False, False, True])
    d = tiny_pagkd("pagkd-released", seed=21, temperature=0.5, similarity_divisor=10.0, confuse_value=0.3,
                   original_indexing=original)
    got = d.losses(s, t, batch)
    assert set(got) == {"ce", "pro", "set_cls", "den", "add"}
    w_tok = ref_tokens(s.features[-1], d.student_embed.weight.detach()[:, :, 0, 0])
    n_tok = ref_tokens(t.features[-1], d.teacher_embed.weight.detach()[:, :, 0, 0])
    w_lab = torch.tensor(ref_cam_labels(s.features[-1], s.classifier.weight, y))
    n_lab = torch.tensor(ref_cam_labels(t.features[-1], t.classifier.weight, y))
    den = 0.0
    for rows in groups:
        den += ref_pairwise_group_loss(n_tok[rows], w_tok[rows], n_lab[rows], w_lab[rows], 0.3, original)
        den += ref_pairwise_group_loss(w_tok[rows], n_tok[rows], w_lab[rows], n_lab[rows], 0.3, original)
    assert got["den"].item() == pytest.approx(den, rel=1e-4)
    twins = [0, 2, 6]
    add = sum(ref_pairwise_group_loss(n_tok[[i]], w_tok[[i]], n_lab[[i]], w_lab[[i]], 0.3, True) for i in twins)
    add += sum(ref_pairwise_group_loss(w_tok[[i]], n_tok[[i]], w_lab[[i]], n_lab[[i]], 0.3, True) for i in twins)
    assert got["add"].item() == pytest.approx(add / 3, rel=1e-4)
    # prototypes: 12 queries attend (one multi-head layer) to the group's tokens plus a per-image scalar code
    att = d.qformer.attention
    codes = [[math.sin(0.1 * (j + 0.1)) for j in range(2)]]
    for seed, size in ((42, 3), (57, 2)):
        torch.manual_seed(seed)
        codes.append(torch.rand(size).tolist())
    queries = d.qformer.queries.detach().double()

    def prototypes(tok: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k, rows in enumerate(groups):
            memory = torch.cat([tok[r] + codes[k][j] for j, r in enumerate(rows)])
            out.append(ref_multi_head(queries, memory, att.in_proj_weight.detach().double(),
                                      att.in_proj_bias.detach().double(), att.out_proj.weight.detach().double(),
                                      att.out_proj.bias.detach().double(), heads=2))
        return out

    sets = [p for pair in zip(prototypes(w_tok), prototypes(n_tok), strict=True) for p in pair]  # W0 N0 W1 ...
    unit = [F.normalize(x, dim=0) for x in sets]
    pro = 0.0
    for k in range(3):
        sims = {c: float((unit[2 * k] * unit[c]).sum() / 10.0 / 0.5) for c in range(6) if c != 2 * k}
        pro -= sims[2 * k + 1] - math.log(1 + sum(math.exp(v) for v in sims.values()))
    assert got["pro"].item() == pytest.approx(pro, rel=1e-4)
    head = d.qformer.set_classifier
    logits = torch.stack([x.mean(0) for x in sets]) @ head.weight.detach().double().T + head.bias.detach().double()
    set_cls = F.cross_entropy(logits, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert got["set_cls"].item() == pytest.approx(set_cls.item(), rel=1e-4)


def test_released_options_warmup_and_missing_inputs():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    s, t, batch = hand_outputs(y, seed=22)
    for bad in ({"temperature": 0.0}, {"similarity_divisor": 0.0}):
        with pytest.raises(ValueError, match="positive"):
            tiny_pagkd("pagkd-released", **bad)
    assert tiny_pagkd("pagkd-released", similarity_divisor=0.5, warmup_epochs=3).warmup == 3
    d = tiny_pagkd("pagkd-released", seed=22, warmup_epochs=1)
    batch.epoch = 1  # the first epoch after the warm-up distils
    assert {"den", "pro"} <= set(d.losses(s, t, batch))
    batch.twin = torch.tensor([True, False, False, False, False, False])
    assert "add" not in tiny_pagkd("pagkd-released", seed=22, warmup_epochs=1, paired_add=False).losses(s, t, batch)
    for s2, t2 in ((s, None), (s, Outputs(t.logits, t.embedding, [], t.classifier)),
                   (Outputs(s.logits, s.embedding, s.features, None), t)):
        with pytest.raises(RuntimeError, match="linear heads"):
            d.losses(s2, t2, batch)
    # the student's 1x1 embedding starts as ResNet's convolutions: N(0, 2 / fan_out), fan_out = 128 outputs
    wide = tiny_pagkd("pagkd-released", width=128, heads=16)
    assert wide.student_embed.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.1)
