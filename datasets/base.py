"""The data contract between dataset sources and the harness.

Every source (synthetic twin, generic folder, published layout) produces one
:class:`ImageTable`: all images decoded once to uint8 at the profile's size, with
per-image label, lesion id, modality, twin index and (optionally) an official split.
:func:`datasets.splits.make_splits` turns it into lesion-level :class:`Splits`, and
:class:`DatasetBundle` carries both plus provenance to the harness.

This package never imports ``methods`` or ``benchmark``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .regimes import REGIMES, Regime

CROSS_MODAL = ("wli", "nbi")
SPLIT_NAMES = ("train", "val", "test")


class DataError(ValueError):
    """Unusable input data; the message names the path and the fix."""


@dataclass
class ImageTable:
    """All images of a dataset, decoded once.

    Attributes:
        images: ``(N, H, W, 3)`` uint8 at the profile's image size.
        labels: ``(N,)`` int64 class indices.
        lesion: ``(N,)`` lesion ids (str); every image of a lesion stays in one split.
        modality: ``(N,)`` modality names (``"wli"``, ``"nbi"``, or one single
            modality such as ``"derm"``).
        source: ``(N,)`` file path, or ``synthetic://<dataset>/<k>`` for rendered images.
        twin: ``(N,)`` int64 index of the other-modality image of the same lesion that
            forms a true pair with this one, ``-1`` when none.
        split: ``(N,)`` official split (``train``/``val``/``test``) or ``""`` when the
            source has none and splits are drawn by lesion.
    """

    images: np.ndarray
    labels: np.ndarray
    lesion: np.ndarray
    modality: np.ndarray
    source: np.ndarray
    twin: np.ndarray
    split: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in ("labels", "lesion", "modality", "source", "twin", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ImageTable.{name} has {len(getattr(self, name))} rows, images {n}")
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"ImageTable.images must be (N,H,W,3) uint8, got {self.images.shape} {self.images.dtype}")

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Splits:
    """Index arrays into the :class:`ImageTable`, by role.

    ``paired_student[i]`` and ``paired_teacher[i]`` are twins (same lesion, student and
    teacher modality). Unpaired arrays hold images of lesions outside D_p. Validation
    and test hold images of held-out lesions in each modality; the student is scored
    on ``test_student``, the teacher (upper bound) on ``test_teacher``.
    ``oracle_student`` holds the extra student-modality training images that only the
    WLI-oracle reference trains on (synthetic twins rendered with an oracle factor).
    """

    paired_student: np.ndarray
    paired_teacher: np.ndarray
    unpaired_student: np.ndarray
    unpaired_teacher: np.ndarray
    val_student: np.ndarray
    val_teacher: np.ndarray
    test_student: np.ndarray
    test_teacher: np.ndarray
    oracle_student: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items()}


@dataclass
class DatasetBundle:
    """A dataset ready for the harness.

    Attributes:
        dataset_id: the id every output uses; synthetic twins end in ``-synthetic``.
        name: the catalogue name asked for (``ih_polyp``).
        synthetic: ``True`` for rendered data; reports label it wherever a number appears.
        classes: class names, index = label.
        student_modality / teacher_modality: ``wli``/``nbi`` for cross-modal data; the
            same single modality for same-modality datasets.
        table, splits: the images and their lesion-level splits.
        provenance: how the data was made (root and file-list hash, or generator
            parameters and seed), recorded in every run file.
        notes: one-line facts the report repeats (e.g. images skipped as unreadable).
    """

    dataset_id: str
    name: str
    synthetic: bool
    classes: list[str]
    student_modality: str
    teacher_modality: str
    table: ImageTable
    splits: Splits
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            where = self.provenance.get("root") or self.name
            found = ", ".join(repr(c) for c in self.classes) or "none"
            raise DataError(
                f"dataset {self.dataset_id!r} at {where} has {len(self.classes)} class ({found}); classification "
                "needs at least 2 classes. Add a folder per class (<root>/<modality>/<class>/<image>)."
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def cross_modal(self) -> bool:
        return self.student_modality != self.teacher_modality

    def regimes(self) -> tuple[Regime, ...]:
        """Regimes this dataset can serve, in :data:`REGIMES` order."""
        if not self.cross_modal:
            return (Regime.SAME,)
        s = self.splits
        has_paired = len(s.paired_student) > 0
        has_unpaired = len(s.unpaired_student) > 0 and len(s.unpaired_teacher) > 0
        serves = {Regime.SAME: True, Regime.PAIRED: has_paired, Regime.UNPAIRED: has_unpaired,
                  Regime.ALL: has_paired and has_unpaired}
        return tuple(r for r in REGIMES if serves[r])

    def regime_pools(self, regime: str) -> tuple[np.ndarray, np.ndarray]:
        """(student pool, teacher pool) of table indices for a regime's training data.

        ``paired``: D_p twins; ``unpaired``: D_unp; ``all``: both; ``same``: the
        student modality's training images on both sides. ``oracle`` (not a distillation
        regime, not in :meth:`regimes`): the student pool of ``all`` plus the extra
        oracle images, for the student-only WLI-oracle reference; teacher pool of ``all``.
        """
        s = self.splits
        if regime == Regime.ORACLE:
            if not len(s.oracle_student):
                raise DataError(f"dataset {self.dataset_id!r} has no WLI-oracle images; only synthetic "
                                "cross-modal twins rendered with an oracle factor (profile oracle_factor) have them")
            student, teacher = self.regime_pools(Regime.ALL)
            return np.concatenate([student, s.oracle_student]), teacher
        if regime not in self.regimes():
            raise DataError(
                f"dataset {self.dataset_id!r} cannot serve regime {regime!r}; "
                f"it serves {', '.join(self.regimes())}"
            )
        regime = Regime(regime)
        if regime.same_view:
            pool = np.concatenate([s.paired_student, s.unpaired_student])
            return pool, pool
        pools = {Regime.PAIRED: (s.paired_student, s.paired_teacher),
                 Regime.UNPAIRED: (s.unpaired_student, s.unpaired_teacher)}
        if regime in pools:
            return pools[regime]
        return (
            np.concatenate([s.paired_student, s.unpaired_student]),
            np.concatenate([s.paired_teacher, s.unpaired_teacher]),
        )

    def teaching_modality(self, regime: str) -> str:
        """The modality the teacher of ``regime`` is trained on and sees."""
        return Regime(regime).teaching_modality(self.student_modality, self.teacher_modality)

    def teacher_pools(self, modality: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(train, val, test) table indices for training a teacher on ``modality``."""
        s = self.splits
        if modality == self.teacher_modality and self.cross_modal:
            return (np.concatenate([s.paired_teacher, s.unpaired_teacher]), s.val_teacher, s.test_teacher)
        if modality == self.student_modality:
            return (np.concatenate([s.paired_student, s.unpaired_student]), s.val_student, s.test_student)
        raise DataError(f"dataset {self.dataset_id!r} has no {modality!r} images")


@dataclass
class LoadOptions:
    """How a source decodes images.

    Attributes:
        image_size: square side of the decoded uint8 arrays.
        on_bad_image: ``skip`` (warn, naming each file, and go on) or ``error``.
        cache_dir: where decoded arrays are cached (``None``: no cache).
        modality_list: optional CSV naming each file's modality, for layouts whose
            folders do not say it (PICCOLO, PolypsSet).
    """

    image_size: int
    on_bad_image: str = "skip"
    cache_dir: Path | None = None
    modality_list: Path | None = None


@dataclass
class RawDataset:
    """What a source yields before splitting: the table and its metadata."""

    table: ImageTable
    classes: list[str]
    student_modality: str
    teacher_modality: str
    provenance: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
