"""How long a network trains: epochs with a floor on optimiser steps.

A schedule counted only in epochs starves small datasets: 50 training images in
batches of 32 make 2 steps an epoch, 16 in 8 epochs. The profile's ``min_steps`` is a
floor: a run trains for ``max(epochs, ceil(min_steps / steps_per_epoch))`` epochs, so
a small training set still gets at least ``min_steps`` optimiser steps, while a large
one keeps the profile's epochs. A teacher can have a floor of its own
(``teacher_min_steps``). The profile's ``max_steps`` caps a student the other way: a
run whose epochs would take more steps trains ``max(1, max_steps // steps_per_epoch)``
epochs (a compute budget; teachers have no cap). The WLI oracle is capped at the epochs
of its ``all`` baseline (``recipe_rows``): the same recipe on k times the data.
Validation (model selection) keeps the profile's cadence in epochs of the profile, i.e.
about ``epochs / val_every`` validations whatever the stretch or cap. The steps actually
taken are recorded in every run file (``timing.steps``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..settings.profiles import Profile


@dataclass(frozen=True)
class Schedule:
    epochs: int
    """Epochs to train (the profile's, stretched to reach ``min_steps`` or cut to ``max_steps``)."""
    val_every: int
    """Validate every this many epochs (and after the last)."""
    steps_per_epoch: int
    min_steps: int


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Optimiser steps in one pass over ``num_train`` rows (a last batch of one row is dropped)."""
    full, rest = divmod(max(0, num_train), max(1, batch_size))
    return max(1, full + (1 if rest >= 2 else 0))


def schedule(
    profile: Profile, epochs: int, num_train: int, *, teacher: bool = False, recipe_rows: int | None = None
) -> Schedule:
    """The schedule of a network trained for ``epochs`` profile epochs on ``num_train`` rows.

    A teacher (``teacher=True``) trains to at least ``max(min_steps, teacher_min_steps)``
    steps, a student to at least ``min_steps`` and, when the profile has ``max_steps``, to
    at most the epochs that keep ``recipe_rows`` rows (default ``num_train``) under it.
    """
    if profile.max_steps and profile.min_steps > profile.max_steps:
        raise ValueError(f"profile {profile.name!r}: min_steps {profile.min_steps} is above max_steps "
                         f"{profile.max_steps}; lower one of them (--min-steps / --max-steps)")
    per_epoch = steps_per_epoch(num_train, profile.batch_size)
    floor = max(profile.min_steps, profile.teacher_min_steps) if teacher else profile.min_steps
    needed = math.ceil(floor / per_epoch) if floor > 0 else 0
    total = max(epochs, needed)
    stretch = max(1, total // max(1, epochs))
    val_every = max(1, profile.val_every) * stretch
    if profile.max_steps > 0 and not teacher:
        allowed = max(1, profile.max_steps // steps_per_epoch(recipe_rows or num_train, profile.batch_size))
        if total > allowed:
            val_every = max(1, math.ceil(val_every * allowed / total))
            total = allowed
    return Schedule(epochs=total, val_every=val_every, steps_per_epoch=per_epoch, min_steps=floor)
