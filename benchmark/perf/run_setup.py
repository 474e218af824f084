"""How the perf tool sets up a run: the training pools and the distiller's context come
from the runner's own :func:`benchmark.training.setup.training_setup`; the accelerator is
one per process, made as the runner makes it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

import methods
from datasets.base import DatasetBundle
from methods import DistillerContext

from ..models.backbones import create_backbone
from ..settings.profiles import Profile
from ..training.inputs import ImageStore
from ..training.setup import training_setup
from ..training.train import TrainData


def train_data(bundle: DatasetBundle, regime: str, profile: Profile, store: ImageStore) -> TrainData:
    """``regime``'s student and teacher pools of ``bundle`` over the images in ``store``."""
    spec = create_backbone(profile.backbone, bundle.num_classes).spec(profile.image_size)
    data, _, _ = training_setup(bundle, regime, profile, store, method=methods.get("baseline"), student=spec)
    return data


def distiller_context(
    bundle: DatasetBundle, regime: str, profile: Profile, store: ImageStore, method: str,
    student: Any, teacher: Any | None, epochs: int,
) -> DistillerContext:
    """What ``method`` is built from in an ``epochs``-long run: the two backbones' specs and the training pools."""
    _, ctx, _ = training_setup(
        bundle, regime, dataclasses.replace(profile, epochs=epochs), store, method=methods.get(method),
        student=student.spec(profile.image_size), teacher=teacher.spec(profile.image_size) if teacher else None,
    )
    return ctx


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_ACCELERATOR: Any = None


def accelerator(profile: Profile) -> Any:
    """This process's Accelerator (one per process: its mixed precision is fixed once made)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from ..training.runner import make_accelerator

        _ACCELERATOR = make_accelerator(profile)
    return _ACCELERATOR
