"""Backbones by timm name, wrapped to return :class:`methods.Outputs`.

Any timm model that implements ``forward_intermediates`` works (ResNets,
EfficientNets, MobileNetV3, ConvNeXt, ...). The suite adds small CNNs to timm's
registry for CPU profiles: ``kdbench_cnn4`` (4 conv stages, 16-32-64-128 channels,
total stride 8, so a 32-px image still gives a 4x4 map for dense methods; 27 MFLOPs per
32-px image), ``kdbench_cnn4_os4`` (the same layers with an output stride of 4: the last
stage keeps the third stage's resolution, so a 24-px image gives the 6x6 map that CAMs,
SRCA and masked attention need; 27 MFLOPs per 24-px image, 1.8x ``kdbench_cnn4``),
``kdbench_cnn4_os4_mid`` (the same with 16-32-48-96 channels, 0.69x the FLOPs; the ``cpu``
profile's network) and
``kdbench_cnn4_wide`` (twice the width, 4x the FLOPs). They are sized so that the
reference grid's ~800 runs fit a 2-core CPU: at 32 px a teacher forward pass of
ResNet-18 alone would cost more than the whole student step.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.models import register_model
from torch import Tensor, nn

from methods.base import ModelSpec, Outputs

from .trunk import StagePlan, stage_plan


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages (default strides 1, 2, 2, 2) with two convs each, global
    average pooling and a linear head. timm-compatible: ``forward_features``,
    ``forward_head``, ``forward_intermediates``, ``get_classifier``, ``num_features``."""

    def __init__(
        self,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        num_classes: int = 1000,
        in_chans: int = 3,
        strides: tuple[int, ...] | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        strides = strides or tuple(1 if k == 0 else 2 for k in range(len(widths)))
        if len(strides) != len(widths):
            raise ValueError(f"SmallCNN: {len(widths)} widths but {len(strides)} strides")
        stages = []
        cin = in_chans
        reduction = 1
        self.feature_info = []
        for k, (w, stride) in enumerate(zip(widths, strides, strict=True)):
            stages.append(nn.Sequential(_conv_bn_relu(cin, w, stride), _conv_bn_relu(w, w, 1)))
            cin = w
            reduction *= stride
            self.feature_info.append({"num_chs": w, "reduction": reduction, "module": f"stages.{k}"})
        self.stages = nn.ModuleList(stages)
        self.num_features = widths[-1]
        self.fc = nn.Linear(widths[-1], num_classes)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward_intermediates(self, x: Tensor, **_: Any) -> tuple[Tensor, list[Tensor]]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return x, feats

    def forward_features(self, x: Tensor) -> Tensor:
        return self.forward_intermediates(x)[0]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def kdbench_cnn4(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """The suite's CPU student: 4 stages, 16-32-64-128 channels, stride 8."""
    return SmallCNN((16, 32, 64, 128), **kwargs)


@register_model
def kdbench_cnn4_os4(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """``kdbench_cnn4`` with output stride 4 (strides 1, 2, 2, 1): 6x6 last map at 24 px."""
    return SmallCNN((16, 32, 64, 128), strides=(1, 2, 2, 1), **kwargs)


@register_model
def kdbench_cnn4_os4_mid(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """``kdbench_cnn4_os4`` with the last two stages at three quarters of the width
    (16-32-48-96): the same 6x6 map at 24 px for 0.69x the FLOPs."""
    return SmallCNN((16, 32, 48, 96), strides=(1, 2, 2, 1), **kwargs)


@register_model
def kdbench_cnn4_wide(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """The suite's CPU teacher: 4 stages, 32-64-128-256 channels, stride 8."""
    return SmallCNN((32, 64, 128, 256), **kwargs)


class Backbone(nn.Module):
    """A timm classifier whose forward returns :class:`Outputs`.

    ``features`` are the stage maps from ``forward_intermediates``; its last entry is
    the map that is pooled into ``embedding`` (for models with a conv head after the
    last stage, such as EfficientNet, that head's map is appended). MobileNetV3 pools
    *before* its 1x1 conv head, so there ``features[-1]`` is the head's input and a CAM
    from ``classifier.weight`` does not apply; CAM-based methods reject such backbones.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.weights: dict[str, Any] = {"spec": "", "origin": "random"}
        self.trunk_depth = 0
        self._plan: StagePlan | None = None
        if not hasattr(model, "forward_intermediates"):
            raise ValueError(
                f"timm model {name!r} has no forward_intermediates(); pick a backbone that "
                "supports it (resnet*, efficientnet*, mobilenetv3*, convnext*, kdbench_cnn4)"
            )

    @property
    def classifier(self) -> nn.Linear:
        head = self.model.get_classifier()
        if not isinstance(head, nn.Linear):
            raise TypeError(f"backbone {self.name!r} has a {type(head).__name__} head; a Linear head is required")
        return head

    def freeze_trunk(self, depth: int) -> None:
        """Freeze the stem and the first ``depth`` stages (:mod:`benchmark.models.trunk`):
        their parameters stop requiring gradients and :meth:`forward` from then on takes
        the trunk's output (what :meth:`trunk` returns), not images. ``0`` does nothing."""
        if depth <= 0:
            return
        plan = stage_plan(self.model, self.name)
        if depth >= len(plan.stages):
            raise ValueError(f"frozen_stages={depth} leaves nothing to train: backbone {self.name!r} has "
                             f"{len(plan.stages)} stages")
        self._plan, self.trunk_depth = plan, depth
        for p in plan.trunk(depth).parameters():
            p.requires_grad_(False)

    def trunk(self) -> nn.Module:
        """The frozen stem and stages (``nn.Identity`` without a frozen trunk)."""
        return self._plan.trunk(self.trunk_depth) if self._plan is not None else nn.Identity()

    def forward(self, x: Tensor) -> Outputs:
        if self._plan is not None:
            final, stages = self._plan.top(x, self.trunk_depth)
        else:
            final, stages = self.model.forward_intermediates(x)
        features = list(stages)
        if features and features[-1].shape == final.shape:
            features[-1] = final
        else:
            features.append(final)
        embedding = self.model.forward_head(final, pre_logits=True)
        logits = self.classifier(embedding)
        return Outputs(logits=logits, embedding=embedding, features=features, classifier=self.classifier)

    def from_image(self, x: Tensor) -> Outputs:
        """The whole network on images, frozen trunk included (what a deployed model runs)."""
        if self._plan is None:
            return self(x)
        trunk = self.trunk()
        was_training = trunk.training
        trunk.eval()  # the trunk is frozen with the statistics its features were cached with
        with torch.no_grad():
            x = trunk(x)
        trunk.train(was_training)
        return self(x)

    @torch.no_grad()
    def spec(self, image_size: int) -> ModelSpec:
        """Shapes at ``image_size`` from one dry forward pass (eval mode, batch of 1)."""
        was_training = self.training
        self.eval()
        param = next(self.parameters())
        out = self.from_image(torch.zeros(1, 3, image_size, image_size, device=param.device, dtype=param.dtype))
        self.train(was_training)
        return ModelSpec(
            name=self.name,
            num_classes=int(out.logits.shape[1]),
            embedding_dim=int(out.embedding.shape[1]),
            feature_channels=tuple(int(f.shape[1]) for f in out.features),
            feature_sizes=tuple((int(f.shape[2]), int(f.shape[3])) for f in out.features),
        )


def create_backbone(name: str, num_classes: int, pretrained: str = "", **kwargs: Any) -> Backbone:
    """Build a timm model by name, optionally loading weights, wrapped as a :class:`Backbone`.

    ``pretrained``: ``""`` for random init, ``builtin`` for the ImageNet weights that ship
    inside a registry package, ``timm`` for timm's ImageNet weights from the local Hugging
    Face cache, or a local checkpoint path (see :mod:`benchmark.models.weights`). The returned
    backbone's ``weights`` attribute holds the provenance (origin, file, sha256).
    A name tagged ``.imagenet`` (``efficientnet_lite0.imagenet``) means ``builtin``.
    """
    from .weights import load_pretrained, resolve_backbone

    timm_name, pretrained = resolve_backbone(name, pretrained)
    try:
        model = timm.create_model(timm_name, pretrained=False, num_classes=num_classes, **kwargs)
    except RuntimeError as err:
        close = timm.list_models(f"*{timm_name[:6]}*")[:5]
        raise ValueError(f"unknown backbone {name!r} ({err}); similar timm names: {close}") from err
    weights = load_pretrained(model, timm_name, pretrained) if pretrained else {"spec": "", "origin": "random"}
    backbone = Backbone(model, name)
    backbone.weights = weights  # provenance of the initial weights, for the run file
    return backbone
