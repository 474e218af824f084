"""What one training job is given: its pools and what its method may know.

:func:`training_setup` is the one place that turns (dataset bundle, regime, profile,
image store) into the :class:`~benchmark.training.train.TrainData` the training loop
reads and the :class:`~methods.DistillerContext` a method builds its modules from, and the
:class:`~benchmark.training.schedule.Schedule` (epochs stretched to the profile's floor
on optimiser steps). A
student job trains on its regime's pools and is selected on the WLI validation images;
a teacher job (``modality`` given) trains on that modality's own training images, the
teacher seeing exactly the student's input, and is selected on that modality's
validation images.
"""

from __future__ import annotations

import numpy as np
import torch

from datasets.base import DatasetBundle
from datasets.regimes import Regime
from datasets.sampling import twin_positions
from methods import Distiller, DistillerContext, ModelSpec

from ..settings.profiles import Profile
from .inputs import ImageStore, TrunkStore
from .schedule import Schedule, schedule
from .train import TrainData, make_sampler


def training_setup(
    bundle: DatasetBundle,
    regime: str,
    profile: Profile,
    store: ImageStore | TrunkStore,
    *,
    method: type[Distiller],
    student: ModelSpec,
    teacher: ModelSpec | None = None,
    modality: str | None = None,
    teacher_store: ImageStore | TrunkStore | None = None,
) -> tuple[TrainData, DistillerContext, Schedule]:
    """The training data, distiller context and schedule of one job.

    Args:
        bundle: the dataset.
        regime: the run's regime (``same`` for a teacher job).
        profile: the resolved profile (batch size, epochs, group size).
        store: the dataset's images on the training device (or the student's frozen
            trunk's outputs on them).
        teacher_store: where the teacher reads its inputs, when not from ``store``.
        method: the distiller class (its sampler decides the steps per epoch).
        student: shapes of the network being trained.
        teacher: shapes of the frozen teacher, if the method has one.
        modality: train a teacher on this modality's own images instead of a student
            on the regime's pools.
    """
    labels = bundle.table.labels
    if modality is None:
        student_pool, teacher_pool = bundle.regime_pools(regime)
        same_view = Regime(regime).same_view
        twin = np.arange(len(student_pool)) if same_view else twin_positions(
            student_pool, teacher_pool, bundle.table.twin)
        val = bundle.splits.val_student
        epochs = profile.epochs
    else:
        student_pool, val, _ = bundle.teacher_pools(modality)
        teacher_pool, same_view, twin = student_pool, True, np.arange(len(student_pool))
        epochs = profile.teacher_epochs
    # The WLI oracle keeps the epochs of its `all` baseline under a step cap: same recipe, k x the data.
    recipe_rows = len(bundle.regime_pools(Regime.ALL)[0]) if modality is None and regime == Regime.ORACLE else None
    plan = schedule(profile, epochs, len(student_pool), teacher=modality is not None, recipe_rows=recipe_rows)
    data = TrainData(
        store=store, student_pool=student_pool, teacher_pool=teacher_pool, twin_position=twin,
        student_labels=labels[student_pool], teacher_labels=labels[teacher_pool],
        val_index=val, val_labels=labels[val],
        num_classes=bundle.num_classes, class_names=bundle.classes, same_view=same_view,
        teacher_store=teacher_store if teacher_store is not store else None,
    )
    ctx = DistillerContext(
        student=student, teacher=teacher, num_classes=bundle.num_classes, regime=regime,
        num_student_train=len(student_pool), num_teacher_train=len(teacher_pool),
        student_labels=torch.as_tensor(data.student_labels), teacher_labels=torch.as_tensor(data.teacher_labels),
        num_epochs=plan.epochs, steps_per_epoch=len(make_sampler(method, data, profile, seed=0)),
        batch_size=profile.batch_size,
    )
    return data, ctx, plan
