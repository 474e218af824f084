"""Class-matched batch samplers.

Every batch pairs a student-side row with a teacher-side row of the same class:

- the true twin when the student image has one in the teacher pool (``twin=True``);
- otherwise a same-class teacher image drawn uniformly, afresh every epoch (a
  pseudo-pair, ``twin=False``).

So a paired batch is a batch of twins, and an unpaired batch gives instance-level
methods class-matched pseudo-pairs and group-level methods per-class groups, from one
sampler. Two orderings:

- :class:`ClassMatchedSampler`: every student image once per epoch, shuffled.
- :class:`GroupSampler`: class-balanced batches for group-level methods (PaGKD):
  every class appears in every batch with exactly ``group_size`` rows, rows ordered
  by class; an epoch has as many batches as the student pool fills. A class with
  fewer images than ``group_size`` is sampled with replacement within its group, and
  :attr:`GroupSampler.underfilled` reports it.

Positions are indices into the student and teacher *pools* (not the image table).
Both samplers are deterministic for ``(seed, epoch)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import DataError


@dataclass
class BatchPlan:
    """Pool positions of one batch: student rows, teacher rows, and which are twins."""

    student: np.ndarray
    teacher: np.ndarray
    twin: np.ndarray


class _TeacherMatcher:
    """Draws the teacher row for each student row: the twin, or a same-class image."""

    def __init__(
        self,
        student_labels: np.ndarray,
        teacher_labels: np.ndarray,
        twin_position: np.ndarray,
        class_names: list[str] | None = None,
    ) -> None:
        self.student_labels = np.asarray(student_labels, dtype=np.int64)
        self.teacher_labels = np.asarray(teacher_labels, dtype=np.int64)
        self.twin_position = np.asarray(twin_position, dtype=np.int64)
        if len(self.twin_position) != len(self.student_labels):
            raise ValueError("twin_position must have one entry per student image")
        self.by_class = {int(c): np.flatnonzero(self.teacher_labels == c) for c in np.unique(self.teacher_labels)}
        missing = sorted(set(np.unique(self.student_labels).tolist()) - set(self.by_class))
        if missing:
            names = [class_names[c] if class_names else str(c) for c in missing]
            raise DataError(
                f"class(es) {names} have student images but no teacher images in this regime's "
                "training data, so no class-matched pair can be formed. Add teacher-modality "
                "images of these classes or train in a regime that has them."
            )

    def match(self, student_pos: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        teacher = self.twin_position[student_pos].copy()
        twin = teacher >= 0
        labels = self.student_labels[student_pos]
        for c in np.unique(labels[~twin]):
            rows = np.flatnonzero(~twin & (labels == c))
            pool = self.by_class[int(c)]
            teacher[rows] = pool[rng.integers(0, len(pool), size=len(rows))]
        return teacher, twin


class ClassMatchedSampler:
    """Each student image once per epoch in random order, with class-matched teacher rows.

    A last batch of a single row is dropped (batch norm cannot train on one row).
    """

    def __init__(
        self,
        student_labels: np.ndarray,
        teacher_labels: np.ndarray,
        twin_position: np.ndarray,
        batch_size: int,
        seed: int,
        class_names: list[str] | None = None,
    ) -> None:
        self.matcher = _TeacherMatcher(student_labels, teacher_labels, twin_position, class_names)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.underfilled: dict[int, int] = {}

    def __len__(self) -> int:
        n = len(self.matcher.student_labels)
        full, rest = divmod(n, self.batch_size)
        return full + (1 if rest >= 2 else 0)

    def epoch(self, epoch: int) -> list[BatchPlan]:
        rng = np.random.default_rng([self.seed, epoch, 0])
        order = rng.permutation(len(self.matcher.student_labels))
        plans = []
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            if len(rows) < 2:
                continue
            teacher, twin = self.matcher.match(rows, rng)
            plans.append(BatchPlan(rows, teacher, twin))
        return plans


class GroupSampler:
    """Class-balanced batches: ``group_size`` rows of every class, ordered by class."""

    def __init__(
        self,
        student_labels: np.ndarray,
        teacher_labels: np.ndarray,
        twin_position: np.ndarray,
        group_size: int,
        num_classes: int,
        seed: int,
        class_names: list[str] | None = None,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {group_size}")
        self.matcher = _TeacherMatcher(student_labels, teacher_labels, twin_position, class_names)
        self.group_size = int(group_size)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        labels = self.matcher.student_labels
        self.by_class = {c: np.flatnonzero(labels == c) for c in range(self.num_classes)}
        empty = [c for c, rows in self.by_class.items() if len(rows) == 0]
        if empty:
            names = [class_names[c] if class_names else str(c) for c in empty]
            raise DataError(
                f"class(es) {names} have no student images in this regime's training data; a "
                "group sampler needs every class. Add images of these classes."
            )
        self.underfilled = {c: len(r) for c, r in self.by_class.items() if len(r) < self.group_size}

    def __len__(self) -> int:
        per_batch = self.group_size * self.num_classes
        return max(1, -(-len(self.matcher.student_labels) // per_batch))

    def epoch(self, epoch: int) -> list[BatchPlan]:
        rng = np.random.default_rng([self.seed, epoch, 1])
        n_batches = len(self)
        # Per class, a stream of shuffled passes long enough for every batch.
        streams = {}
        for c, rows in self.by_class.items():
            need = n_batches * self.group_size
            if len(rows) < self.group_size:
                streams[c] = rng.choice(rows, size=need, replace=True)
            else:
                passes = -(-need // len(rows))
                streams[c] = np.concatenate([rng.permutation(rows) for _ in range(passes)])[:need]
        plans = []
        for b in range(n_batches):
            sl = slice(b * self.group_size, (b + 1) * self.group_size)
            rows = np.concatenate([streams[c][sl] for c in range(self.num_classes)])
            teacher, twin = self.matcher.match(rows, rng)
            plans.append(BatchPlan(rows, teacher, twin))
        return plans


def twin_positions(student_pool: np.ndarray, teacher_pool: np.ndarray, table_twin: np.ndarray) -> np.ndarray:
    """For each student pool entry, the teacher-pool position of its twin, or -1."""
    where = {int(t): k for k, t in enumerate(teacher_pool)}
    return np.array([where.get(int(table_twin[s]), -1) for s in student_pool], dtype=np.int64)
