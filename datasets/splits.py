"""Lesion-level, class-stratified, seeded splits into D_p, D_unp, validation and test.

Every image of a lesion lands in one of train/val/test, never two. An official split
(column ``ImageTable.split``) is kept as published; otherwise lesions are drawn per
class with a seeded generator. Training images with a true twin in the other modality
form D_p (paired); the rest form D_unp (unpaired).
"""

from __future__ import annotations

import numpy as np

from .base import DataError, ImageTable, Splits

MIN_LESIONS_PER_CLASS = 3
# Official split of extra student training lesions reserved for the WLI-oracle reference.
ORACLE_SPLIT = "oracle"


def lesion_labels(table: ImageTable) -> dict[str, int]:
    """One label per lesion; a lesion with images of two classes is an error."""
    out: dict[str, int] = {}
    for lesion, label, src in zip(table.lesion, table.labels, table.source, strict=True):
        prev = out.setdefault(str(lesion), int(label))
        if prev != int(label):
            raise DataError(
                f"lesion {lesion!r} has images of two classes (e.g. {src}); a lesion must have "
                "one label. Fix the lesion_id column of pairs.csv or the file-name prefixes."
            )
    return out


def assign_lesion_splits(
    table: ImageTable,
    classes: list[str],
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> dict[str, str]:
    """Map each lesion to ``train``/``val``/``test``, stratified by class and seeded."""
    labels = lesion_labels(table)
    if any(table.split):
        out: dict[str, str] = {}
        for lesion, split, src in zip(table.lesion, table.split, table.source, strict=True):
            prev = out.setdefault(str(lesion), str(split))
            if prev != split:
                raise DataError(
                    f"lesion {lesion!r} appears in official splits {prev!r} and {split!r} "
                    f"(e.g. {src}); a lesion must stay in one split."
                )
        return out
    rng = np.random.default_rng(seed)
    out = {}
    for c, cname in enumerate(classes):
        lesions = sorted(lesion for lesion, lab in labels.items() if lab == c)
        if len(lesions) < MIN_LESIONS_PER_CLASS:
            raise DataError(
                f"class {cname!r} has {len(lesions)} lesion(s); at least "
                f"{MIN_LESIONS_PER_CLASS} are needed to split by lesion into train/val/test. "
                "Add lesions of this class or remove its folder."
            )
        order = rng.permutation(len(lesions))
        n_test = max(1, round(test_fraction * len(lesions)))
        n_val = max(1, round(val_fraction * len(lesions)))
        for rank, k in enumerate(order):
            out[lesions[k]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def make_splits(
    table: ImageTable,
    classes: list[str],
    student_modality: str,
    teacher_modality: str,
    seed: int,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
) -> Splits:
    """Lesion-level splits; D_p from training twins, D_unp from the rest."""
    lesion_split = assign_lesion_splits(table, classes, seed, val_fraction, test_fraction)
    return splits_from_assignment(table, lesion_split, student_modality, teacher_modality)


def splits_from_assignment(
    table: ImageTable, lesion_split: dict[str, str], student_modality: str, teacher_modality: str
) -> Splits:
    """:class:`Splits` from a lesion -> ``train``/``val``/``test`` map (every lesion of the table)."""
    split = np.array([lesion_split[str(le)] for le in table.lesion])
    is_s = table.modality == student_modality
    is_t = table.modality == teacher_modality
    cross = student_modality != teacher_modality

    train = split == "train"
    paired_s: list[int] = []
    paired_t: list[int] = []
    if cross:
        for i in np.flatnonzero(train & is_s):
            j = int(table.twin[i])
            if j >= 0 and is_t[j] and train[j]:
                paired_s.append(int(i))
                paired_t.append(j)
    in_pair = np.zeros(len(table), dtype=bool)
    in_pair[paired_s] = True
    in_pair[paired_t] = True

    def idx(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask).astype(np.int64)

    empty = np.zeros(0, dtype=np.int64)
    return Splits(
        paired_student=np.asarray(paired_s, dtype=np.int64),
        paired_teacher=np.asarray(paired_t, dtype=np.int64),
        unpaired_student=idx(train & is_s & ~in_pair),
        unpaired_teacher=idx(train & is_t & ~in_pair) if cross else empty,
        val_student=idx((split == "val") & is_s),
        val_teacher=idx((split == "val") & is_t) if cross else empty,
        test_student=idx((split == "test") & is_s),
        test_teacher=idx((split == "test") & is_t) if cross else empty,
        oracle_student=idx((split == ORACLE_SPLIT) & is_s) if cross else empty,
    )


def check_no_lesion_leak(table: ImageTable, splits: Splits) -> None:
    """Raise if any lesion has images in two of train/val/test."""
    roles = {
        "train": [splits.paired_student, splits.paired_teacher, splits.unpaired_student, splits.unpaired_teacher,
                  splits.oracle_student],
        "val": [splits.val_student, splits.val_teacher],
        "test": [splits.test_student, splits.test_teacher],
    }
    seen: dict[str, str] = {}
    for role, arrays in roles.items():
        for arr in arrays:
            for i in arr:
                lesion = str(table.lesion[i])
                if seen.setdefault(lesion, role) != role:
                    raise DataError(f"lesion {lesion!r} is in both {seen[lesion]} and {role} ({table.source[i]})")
