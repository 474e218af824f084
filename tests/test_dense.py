"""Shared dense-distillation pieces (methods._dense) against direct reference computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from methods._dense import (
    class_activation_map,
    dual_threshold_labels,
    masked_attention,
    pixel_adaptive_refinement,
    relation_mask,
    relation_weight,
)

NEG = float("-inf")


# -- CAM -------------------------------------------------------------------------------
def test_cam_matches_per_pixel_computation_and_grad_cam() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 4, 4, generator=g)
    weight = torch.randn(2, 5, generator=g)
    labels = torch.tensor([0, 1, 1])
    cam = class_activation_map(feats, weight, labels)
    assert cam.shape == (3, 4, 4)
    for b in range(3):
        raw = torch.zeros(4, 4)
        for y in range(4):
            for x in range(4):
                raw[y, x] = max(0.0, float(sum(weight[labels[b], d] * feats[b, d, y, x] for d in range(5))))
        ref = (raw - raw.min()) / (raw.max() - raw.min())
        torch.testing.assert_close(cam[b], ref, atol=1e-5, rtol=1e-5)
    # Grad-CAM of a GAP + linear head is the same map after normalisation.
    f = feats.clone().requires_grad_(True)
    logits = f.mean(dim=(2, 3)) @ weight.T
    grads = torch.autograd.grad(logits.gather(1, labels[:, None]).sum(), f)[0]
    grad_cam = F.relu((grads.mean(dim=(2, 3))[:, :, None, None] * feats).sum(1))
    low, high = grad_cam.flatten(1).min(1).values, grad_cam.flatten(1).max(1).values
    grad_cam = (grad_cam - low[:, None, None]) / (high - low)[:, None, None]
    torch.testing.assert_close(cam, grad_cam, atol=1e-5, rtol=1e-5)


def test_cam_constant_map_is_zero_not_nan() -> None:
    feats = -torch.ones(2, 3, 2, 2)  # ReLU kills everything
    cam = class_activation_map(feats, torch.ones(1, 3), torch.zeros(2, dtype=torch.long))
    assert torch.equal(cam, torch.zeros(2, 2, 2))


def test_cam_rejects_mismatched_head() -> None:
    with pytest.raises(ValueError, match="feature width"):
        class_activation_map(torch.zeros(1, 3, 2, 2), torch.zeros(2, 4), torch.zeros(1, dtype=torch.long))


# -- PAR -------------------------------------------------------------------------------
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _par_reference(image: torch.Tensor, cam: torch.Tensor, num_iter: int, dilations, pos_w: float,
                   scale: float = 0.3) -> torch.Tensor:
    """AFA's PAR written pixel by pixel (one image, image already on the CAM grid)."""
    c, h, w = image.shape

    def nb(y: int, x: int) -> list[tuple[int, int]]:
        return [
            (min(max(y + dy * d, 0), h - 1), min(max(x + dx * d, 0), w - 1)) for d in dilations for dy, dx in _OFFSETS
        ]

    dists = [d * math.hypot(dy, dx) for d in dilations for dy, dx in _OFFSETS]
    mean_d = sum(dists) / len(dists)
    std_d = math.sqrt(sum((v - mean_d) ** 2 for v in dists) / (len(dists) - 1))
    pos = [-((v / (std_d + 1e-8) / scale) ** 2) for v in dists]
    pos_soft = [math.exp(p) / sum(math.exp(q) for q in pos) for p in pos]
    aff = {}
    for y in range(h):
        for x in range(w):
            js = nb(y, x)
            kappa = [0.0] * len(js)
            for ch in range(c):
                vals = [float(image[ch, jy, jx]) for jy, jx in js]
                mu = sum(vals) / len(vals)
                sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
                for n, v in enumerate(vals):
                    kappa[n] += -((abs(float(image[ch, y, x]) - v) / (sd + 1e-8) / scale) ** 2) / c
            z = sum(math.exp(k) for k in kappa)
            aff[y, x] = [math.exp(k) / z + pos_w * p for k, p in zip(kappa, pos_soft, strict=True)]
    m = cam.clone().double()
    for _ in range(num_iter):
        new = torch.zeros_like(m)
        for y in range(h):
            for x in range(w):
                new[y, x] = sum(a * m[jy, jx] for a, (jy, jx) in zip(aff[y, x], nb(y, x), strict=True))
        m = new
    return m.float()


@pytest.mark.parametrize("pos_w", [0.0, 0.01])
def test_par_matches_per_pixel_loop(pos_w: float) -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 4, 4, generator=g)
    cam = torch.rand(2, 4, 4, generator=g)
    out = pixel_adaptive_refinement(image, cam, num_iter=3, dilations=(1, 2), position_weight=pos_w)
    for b in range(2):
        ref = _par_reference(image[b], cam[b], 3, (1, 2), pos_w)
        torch.testing.assert_close(out[b], ref, atol=1e-4, rtol=1e-4)


def test_par_keeps_channels_and_resizes_image_to_cam_grid() -> None:
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 16, 16, generator=g)
    cam = torch.rand(2, 2, 4, 4, generator=g)
    out = pixel_adaptive_refinement(image, cam)
    small = F.interpolate(image, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(out, pixel_adaptive_refinement(small, cam))
    assert out.shape == cam.shape
    # Affinities are a convex combination: a constant map stays constant.
    flat = pixel_adaptive_refinement(image, torch.full((2, 4, 4), 0.4))
    torch.testing.assert_close(flat, torch.full((2, 4, 4), 0.4))


def test_par_propagates_within_colour_regions() -> None:
    # Left half red, right half blue; CAM fires on one left pixel only.
    image = torch.zeros(1, 3, 4, 4)
    image[0, 0, :, :2] = 1.0
    image[0, 2, :, 2:] = 1.0
    cam = torch.zeros(1, 4, 4)
    cam[0, 1, 0] = 1.0
    out = pixel_adaptive_refinement(image, cam, num_iter=5, dilations=(1,))[0]
    assert out[:, :2].min() > out[:, 2:].max()


# -- thresholds and relations ------------------------------------------------------------
def test_dual_threshold_labels() -> None:
    cam = torch.tensor([[0.0, 0.29, 0.3, 0.5], [0.7, 0.71, 1.0, 0.1]])
    labels = dual_threshold_labels(cam)
    assert labels.dtype == torch.long
    assert labels.tolist() == [[0, 0, -1, -1], [-1, 1, 1, 0]]
    assert dual_threshold_labels(cam, low=0.5, high=0.5).tolist() == [[0, 0, 0, -1], [1, 1, 1, 0]]


def test_relation_mask_from_hand_made_labels() -> None:
    lq = torch.tensor([0, 1, -1])
    lk = torch.tensor([1, 0, 1, -1])
    mask = relation_mask(lq, lk)
    expected = torch.tensor(
        [
            [NEG, 0.0, NEG, NEG],
            [0.0, NEG, 0.0, NEG],
            [NEG, NEG, NEG, NEG],
        ]
    )
    assert torch.equal(mask, expected)
    half = relation_mask(lq, lk, ambiguous=0.0)
    assert half[2].tolist() == [0.0, 0.0, 0.0, 0.0] and half[0, 3] == 0.0 and half[0, 0] == NEG
    weight = relation_weight(lq, lk, ambiguous=0.5)
    assert weight.tolist() == [[0.0, 1.0, 0.0, 0.5], [1.0, 0.0, 1.0, 0.5], [0.5, 0.5, 0.5, 0.5]]
    batched = relation_mask(torch.stack([lq, lq.flip(0)]), torch.stack([lk, lk]))
    assert batched.shape == (2, 3, 4)
    assert torch.equal(batched[0], expected) and torch.equal(batched[1], expected.flip(0))


# -- masked attention ---------------------------------------------------------------------
def _qkv(b: int = 2, lq: int = 5, lk: int = 6, d: int = 4, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, lq, d, generator=g), torch.randn(b, lk, d, generator=g), torch.randn(b, lk, 3, generator=g))


def test_open_mask_equals_plain_attention_and_sdpa() -> None:
    q, k, v = _qkv()
    plain = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v  # d = 4 -> 1/sqrt(d) = 1/2
    open_mask = torch.zeros(5, 6)
    torch.testing.assert_close(masked_attention(q, k, v, open_mask), plain)
    torch.testing.assert_close(masked_attention(q, k, v, None), plain)
    torch.testing.assert_close(masked_attention(q, k, v, None), F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(masked_attention(q, k, v, open_mask, chunk_size=2), plain)
    unscaled = torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v
    torch.testing.assert_close(masked_attention(q, k, v, open_mask, scale=1.0), unscaled)


def test_mask_blocks_keys_and_released_multiplicative_variant() -> None:
    q, k, v = _qkv()
    mask = torch.zeros(2, 5, 6)
    mask[..., :3] = NEG
    ref = torch.softmax(q @ k[:, 3:].transpose(1, 2), dim=-1) @ v[:, 3:]
    torch.testing.assert_close(masked_attention(q, k, v, mask, scale=1.0), ref)
    torch.testing.assert_close(masked_attention(q, k, v, mask == 0, scale=1.0), ref)  # bool mask
    weight = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(0))
    logits = (q @ k.transpose(1, 2)) * weight + mask
    ref_w = torch.softmax(logits, dim=-1) @ v
    out_w = masked_attention(q, k, v, mask, scale=1.0, logit_scale=weight)
    torch.testing.assert_close(out_w, ref_w)
    torch.testing.assert_close(masked_attention(q, k, v, mask, scale=1.0, logit_scale=weight, chunk_size=2), ref_w)


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_fully_blocked_rows_give_zero_not_nan(chunk: int | None, weighted: bool) -> None:
    q, k, v = _qkv()
    q, k, v = q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    mask = torch.zeros(2, 5, 6)
    mask[0, 1] = NEG  # row 1 of image 0 sees nothing
    mask[:, 4] = NEG  # row 4 of every image sees nothing
    ls = torch.ones(2, 5, 6) if weighted else None
    out = masked_attention(q, k, v, mask, chunk_size=chunk, logit_scale=ls)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0, 1], torch.zeros(3)) and torch.equal(out[:, 4], torch.zeros(2, 3))
    out.square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert torch.equal(q.grad[0, 1], torch.zeros(4)) and torch.equal(q.grad[:, 4], torch.zeros(2, 4))
    open_rows = masked_attention(q.detach(), k.detach(), v.detach(), torch.zeros(2, 5, 6))
    torch.testing.assert_close(out[1, :4].detach(), open_rows[1, :4])


def test_chunked_gradients_equal_unchunked() -> None:
    q, k, v = _qkv(lq=7)
    mask = relation_mask(torch.tensor([0, 1, 1, 0, -1, 1, 0]), torch.tensor([0, 1, 0, 1, 1, -1]))
    grads = []
    for chunk in (None, 3):
        qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
        masked_attention(qs, ks, vs, mask, chunk_size=chunk).sum().backward()
        grads.append((qs.grad, ks.grad, vs.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_masked_attention_shape_errors() -> None:
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="do not fit"):
        masked_attention(q, k[..., :3], v, None)


def test_reference_profile_gives_dense_methods_at_least_6x6_maps() -> None:
    from benchmark.models.backbones import create_backbone
    from benchmark.settings.profiles import get_profile

    cpu = get_profile("cpu")
    for name in (cpu.backbone, cpu.teacher_backbone):
        h, w = create_backbone(name, 3).spec(cpu.image_size).feature_sizes[-1]
        assert h >= 6 and w >= 6, name


def test_output_stride_4_cnn_keeps_the_third_stage_resolution() -> None:
    from benchmark.models.backbones import create_backbone

    net = create_backbone("kdbench_cnn4_os4", 2)
    spec = net.spec(24)
    assert spec.feature_sizes == ((24, 24), (12, 12), (6, 6), (6, 6))
    assert [f["reduction"] for f in net.model.feature_info] == [1, 2, 4, 4]
    # Same parameters as kdbench_cnn4: only the last stage's stride differs.
    plain = create_backbone("kdbench_cnn4", 2)
    assert [p.shape for p in net.parameters()] == [p.shape for p in plain.parameters()]


# -- edge cases against direct computations ----------------------------------------------
def test_cam_of_a_strictly_positive_map_spans_zero_to_one() -> None:
    feats = torch.tensor([[[[1.0, 2.0], [3.0, 5.0]]]])  # (1, 1, 2, 2), min 1 > 0 after the ReLU
    cam = class_activation_map(feats, torch.tensor([[2.0]]), torch.tensor([0]))
    torch.testing.assert_close(cam[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_bad_inputs_of_par_and_relation_masks_raise() -> None:
    image, cam = torch.rand(2, 3, 4, 4), torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="batch size"):
        pixel_adaptive_refinement(image[:1], cam)
    with pytest.raises(ValueError, match="dilations"):
        pixel_adaptive_refinement(image, cam, dilations=(1, 0))
    with pytest.raises(ValueError, match="flat"):
        relation_mask(torch.tensor([0, 1]), torch.tensor([[0, 1]]))
    one = pixel_adaptive_refinement(image, cam[:, None], num_iter=2)  # (B, 1, h, w) keeps its channel axis
    assert one.shape == (2, 1, 4, 4)
    torch.testing.assert_close(one[:, 0], pixel_adaptive_refinement(image, cam, num_iter=2))


@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_par_position_term_at_a_visible_weight(scale: float) -> None:
    # at rgb_scale 0.3 the position softmax sits on the nearest neighbours; at 3.0 every neighbour counts
    g = torch.Generator().manual_seed(4)
    image, cam = torch.rand(1, 3, 4, 4, generator=g), torch.rand(1, 4, 4, generator=g)
    out = pixel_adaptive_refinement(image, cam, num_iter=2, dilations=(1, 2), position_weight=1.0, rgb_scale=scale)
    ref = _par_reference(image[0], cam[0], 2, (1, 2), 1.0, scale)
    torch.testing.assert_close(out[0], ref, atol=1e-4, rtol=1e-4)


def test_chunked_attention_with_grad_keeps_the_logit_scale_and_a_missing_mask() -> None:
    q, k, v = _qkv()
    weight = torch.rand(2, 5, 6, generator=torch.Generator().manual_seed(1))
    qs = q.clone().requires_grad_()
    ref = torch.softmax(q @ k.transpose(1, 2) * weight, dim=-1) @ v
    torch.testing.assert_close(masked_attention(qs, k, v, None, scale=1.0, logit_scale=weight, chunk_size=1), ref)
    plain = torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1) @ v
    torch.testing.assert_close(masked_attention(qs, k, v, None, chunk_size=2), plain)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "limit", "chunk", "rows"),
    [
        ((2, 5, 4), (2, 6, 4), 59, None, [4, 1]),  # 60 logits > 59: 59 // (2 x 6) = 4 rows a chunk
        ((2, 5, 4), (1, 6, 4), 59, None, [4, 1]),  # batch from the broadcast of q and k
        ((1, 5, 4), (2, 6, 4), 59, None, [4, 1]),
        ((2, 5, 4), (2, 6, 4), 60, None, [5]),  # not above the limit: one block
        ((2, 5, 4), (2, 6, 4), 11, None, [1, 1, 1, 1, 1]),  # at least one row
        ((2, 5, 4), (2, 6, 4), 11, 3, [3, 2]),  # an explicit chunk size wins
        ((5, 4), (6, 4), 29, None, [4, 1]),  # unbatched: 30 logits
        ((1, 5, 4), (1, 1, 4), 4, None, [4, 1]),  # one key: 4 // 1
    ],
)
def test_automatic_chunking_plan(monkeypatch: pytest.MonkeyPatch, q_shape, k_shape, limit, chunk, rows) -> None:
    """Above _AUTO_CHUNK_ELEMENTS logits the query rows go in chunks of limit // (batch x Lk)
    (at least 1); the values equal one softmax over all keys."""
    from methods import _dense

    g = torch.Generator().manual_seed(5)
    q, k = torch.randn(*q_shape, generator=g), torch.randn(*k_shape, generator=g)
    v = torch.randn(*k_shape[:-1], 3, generator=g)
    seen: list[int] = []
    attend = _dense._attend

    def counting(q_rows, *args, **kwargs):
        seen.append(q_rows.shape[-2])
        return attend(q_rows, *args, **kwargs)

    monkeypatch.setattr(_dense, "_AUTO_CHUNK_ELEMENTS", limit)
    monkeypatch.setattr(_dense, "_attend", counting)
    out = masked_attention(q, k, v, None, scale=1.0, chunk_size=chunk)
    assert seen == rows
    torch.testing.assert_close(out, torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v)
