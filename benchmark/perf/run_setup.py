"""How the perf tool sets up a run: the training pools, the distiller's context and the
accelerator, built as the runner builds them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from datasets.base import DatasetBundle
from datasets.sampling import twin_positions
from methods import DistillerContext

from ..inputs import ImageStore
from ..profiles import Profile
from ..train import TrainData


def train_data(bundle: DatasetBundle, regime: str, store: ImageStore) -> TrainData:
    """``regime``'s student and teacher pools of ``bundle`` over the images in ``store``."""
    s_pool, t_pool = bundle.regime_pools(regime)
    labels = bundle.table.labels
    twin = np.arange(len(s_pool)) if regime == "same" else twin_positions(s_pool, t_pool, bundle.table.twin)
    return TrainData(
        store=store, student_pool=s_pool, teacher_pool=t_pool, twin_position=twin,
        student_labels=labels[s_pool], teacher_labels=labels[t_pool],
        val_index=bundle.splits.val_student, val_labels=labels[bundle.splits.val_student],
        num_classes=bundle.num_classes, class_names=bundle.classes, same_view=regime == "same",
    )


def distiller_context(
    data: TrainData, regime: str, profile: Profile, student: Any, teacher: Any | None, epochs: int
) -> DistillerContext:
    """What a distiller is built from: the two backbones' specs and the training pools."""
    return DistillerContext(
        student=student.spec(profile.image_size), teacher=teacher.spec(profile.image_size) if teacher else None,
        num_classes=data.num_classes, regime=regime, num_student_train=len(data.student_pool),
        num_teacher_train=len(data.teacher_pool), student_labels=torch.as_tensor(data.student_labels),
        teacher_labels=torch.as_tensor(data.teacher_labels), num_epochs=epochs, steps_per_epoch=0,
        batch_size=profile.batch_size,
    )


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


_ACCELERATOR: Any = None


def accelerator(profile: Profile) -> Any:
    """This process's Accelerator (one per process: its mixed precision is fixed once made)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from ..runner import make_accelerator

        _ACCELERATOR = make_accelerator(profile)
    return _ACCELERATOR
