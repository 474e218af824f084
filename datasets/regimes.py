"""Data regimes: which training data a run distils from, and what follows from it.

- ``paired``   D_p: lesions seen in both modalities; every teacher row is the student
  row's twin.
- ``unpaired`` D_unp: WLI and NBI images of different lesions; teacher rows are
  same-class pseudo-pairs.
- ``all``      D_p + D_unp.
- ``same``     same-modality KD: the teacher sees the student's own image.

and one reference regime, not a distillation regime (not in :data:`REGIMES`):

- ``oracle``   the WLI oracle: the baseline on D_p + D_unp plus k x more WLI training
  lesions (synthetic twins only), showing what more of the student's own images give.

This is the one home of the regime vocabulary: every other module asks a
:class:`Regime` its questions (which modality teaches, whether twins exist, whether
the regime is cross-modal) instead of testing names. It is a leaf: it imports nothing
from the project, so it is the one module of :mod:`datasets` that :mod:`methods` may
import (methods declare the regimes they accept); ``methods`` never imports any other
part of ``datasets``, and ``datasets`` never imports ``methods`` or ``benchmark``
(``tests/test_layering.py`` checks both).
"""

from __future__ import annotations

from enum import Enum


class Regime(str, Enum):
    """A data regime; compares equal to its name (``Regime.SAME == "same"``)."""

    PAIRED = "paired"
    UNPAIRED = "unpaired"
    ALL = "all"
    SAME = "same"
    ORACLE = "oracle"

    __str__ = str.__str__
    __format__ = str.__format__

    @property
    def distils(self) -> bool:
        """A distillation regime (every one but the ``oracle`` reference)."""
        return self is not Regime.ORACLE

    @property
    def cross_modal(self) -> bool:
        """The teacher sees the other modality (NBI) than the student (WLI)."""
        return self in (Regime.PAIRED, Regime.UNPAIRED, Regime.ALL)

    @property
    def has_twins(self) -> bool:
        """Some training rows pair a student image with its other-modality twin."""
        return self in (Regime.PAIRED, Regime.ALL)

    @property
    def same_view(self) -> bool:
        """The teacher sees exactly the student's (augmented) input."""
        return self is Regime.SAME

    @property
    def label(self) -> str:
        """The paper's name of the training data (table rows and columns)."""
        return _LABELS[self]

    def teaching_modality(self, student_modality: str, teacher_modality: str) -> str:
        """The modality the teacher is trained on and sees: the dataset's teacher
        modality in a cross-modal regime (and for the oracle, which has no teacher), the
        student's own in ``same``."""
        return student_modality if self.same_view else teacher_modality


_LABELS = {Regime.PAIRED: "D_p", Regime.UNPAIRED: "D_unp", Regime.ALL: "D_p+D_unp", Regime.SAME: "same image",
           Regime.ORACLE: "WLI oracle"}

REGIMES: tuple[Regime, ...] = tuple(r for r in Regime if r.distils)
"""Every distillation regime, in the order tables and listings show them."""

CROSS_MODAL: frozenset[Regime] = frozenset(r for r in Regime if r.cross_modal)
"""``paired``, ``unpaired`` and ``all``: what a cross-modal method accepts."""

WITH_TWINS: frozenset[Regime] = frozenset(r for r in Regime if r.has_twins)
"""``paired`` and ``all``: what a method that needs true twins accepts."""


def parse_regime(name: str) -> Regime:
    """The regime called ``name``; a clear error names the valid ones."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; regimes are {', '.join(REGIMES)}")
    return Regime(name)
