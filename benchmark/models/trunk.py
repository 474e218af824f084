"""A backbone as a stem, an ordered list of stages and a neck, so that its first stages
can be frozen and computed once (partial fine-tuning with a cached trunk).

On a few dozen images, fine-tuning all of an ImageNet network distorts features that a
linear probe shows to be good (Kumar et al., "Fine-Tuning can Distort Pretrained
Features and Underperform Out-of-Distribution", ICLR 2022); freezing the early stages
and training only the last ones is the usual remedy on small medical sets, and it makes
a CPU run cheap: the frozen trunk's output of every image is computed once and read
from memory at each step (:class:`benchmark.training.inputs.TrunkStore`).

Supported families: timm's EfficientNet/MobileNet-style models (``conv_stem``,
``bn1``, ``blocks``, ``conv_head``, ``bn2``), timm's ResNets (``conv1`` ...
``layer4``) and the suite's :class:`~benchmark.models.backbones.SmallCNN`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class StagePlan:
    """A network's forward pass up to its pooled map: ``neck(stages[-1](... stages[0](stem(x))))``.

    Attributes:
        stem: layers before the first stage (``nn.Identity`` when there are none).
        stages: the stages in order; the trunk of depth ``k`` is the stem and ``stages[:k]``.
        feature_stages: indices of the stages whose outputs the backbone reports as
            intermediate feature maps (timm's ``feature_info``).
        neck: layers between the last stage and the pooling (EfficientNet's 1x1 conv
            head and its batch norm; ``nn.Identity`` for ResNets).
    """

    stem: nn.Module
    stages: list[nn.Module]
    feature_stages: frozenset[int]
    neck: nn.Module

    def trunk(self, depth: int) -> nn.Sequential:
        return nn.Sequential(self.stem, *self.stages[:depth])

    def top(self, x: Tensor, depth: int) -> tuple[Tensor, list[Tensor]]:
        """The pooled map and the intermediate maps of the stages after the trunk."""
        maps = []
        for k in range(depth, len(self.stages)):
            x = self.stages[k](x)
            if k in self.feature_stages:
                maps.append(x)
        return self.neck(x), maps


def _feature_indices(model: nn.Module, prefix: str) -> frozenset[int]:
    found = set()
    for info in getattr(model, "feature_info", []):
        module = info["module"] if isinstance(info, dict) else ""
        if module.startswith(prefix):
            found.add(int(module[len(prefix):].split(".")[0]))
    return frozenset(found)


def stage_plan(model: nn.Module, name: str) -> StagePlan:
    """The :class:`StagePlan` of a timm model, or a ``ValueError`` naming the families supported."""
    if all(hasattr(model, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):
        return StagePlan(stem=nn.Sequential(model.conv_stem, model.bn1), stages=list(model.blocks),
                         feature_stages=_feature_indices(model, "blocks."),
                         neck=nn.Sequential(model.conv_head, model.bn2))
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer4")):
        stages = [getattr(model, f"layer{k}") for k in range(1, 5)]
        return StagePlan(stem=nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool), stages=stages,
                         feature_stages=frozenset(range(4)), neck=nn.Identity())
    if hasattr(model, "stages") and hasattr(model, "fc") and isinstance(model.stages, nn.ModuleList):
        return StagePlan(stem=nn.Identity(), stages=list(model.stages),
                         feature_stages=frozenset(range(len(model.stages))), neck=nn.Identity())
    raise ValueError(
        f"backbone {name!r} cannot be split into a frozen trunk and trained stages (profile field "
        "frozen_stages); supported: timm EfficientNet/MobileNet-style models, timm ResNets and kdbench_cnn4*. "
        "Use --frozen-stages 0 to fine-tune the whole network."
    )
