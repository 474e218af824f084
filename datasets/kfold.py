"""Lesion-level, class-stratified k-fold cross-validation with an inner validation split.

The protocol of small real datasets: the lesions are dealt into ``k`` folds, stratified
by class and seeded; fold ``f`` is the test set of split ``f``, and the lesions of the
other folds are its training data, of which a stratified ``inner_val_fraction`` is held
out as that split's validation set (model selection never sees the test fold). Every
lesion is a test lesion in exactly one fold, so pooling the k folds' test predictions
scores every lesion once per training seed.

A fold is a :class:`~datasets.base.DatasetBundle` like any other: same table and
dataset id, its own :class:`~datasets.base.Splits`, and ``provenance["folds"]`` naming
``k``, the fold and the seed (so fingerprints, teacher keys and run hashes differ per
fold). An official split of the source is not used under k-fold.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .base import DataError, DatasetBundle
from .splits import check_no_lesion_leak, lesion_labels, splits_from_assignment

INNER_VAL_FRACTION = 0.2
"""Share of each class's training lesions held out for model selection in every fold."""


def assign_folds(labels: dict[str, int], k: int, seed: int, classes: list[str] | None = None) -> dict[str, int]:
    """Map each lesion to a fold in ``0..k-1``, stratified by class and seeded.

    Per class, the sorted lesions are shuffled and dealt round-robin; each class starts
    dealing where the previous one stopped, so fold sizes differ by at most one lesion
    overall and by at most one lesion per class.
    """
    if k < 2:
        raise DataError(f"k-fold cross-validation needs k >= 2 folds, got {k}")
    rng = np.random.default_rng([seed, k, 0x6B66])
    out: dict[str, int] = {}
    start = 0
    for c in sorted(set(labels.values())):
        lesions = sorted(lesion for lesion, lab in labels.items() if lab == c)
        if len(lesions) < k:
            name = classes[c] if classes is not None else str(c)
            raise DataError(
                f"class {name!r} has {len(lesions)} lesion(s); {k}-fold cross-validation needs at least {k} "
                f"lesions per class. Use fewer folds (--folds {max(2, len(lesions))}) or one fixed split (--folds 0)."
            )
        for rank, j in enumerate(rng.permutation(len(lesions))):
            out[lesions[j]] = (start + rank) % k
        start = (start + len(lesions)) % k
    return out


def inner_validation(labels: dict[str, int], fraction: float, seed: int, fold: int) -> set[str]:
    """A stratified, seeded ``fraction`` of ``labels``' lesions (at least one per class,
    and at least one left for training): the inner validation set of one fold."""
    rng = np.random.default_rng([seed, fold, 0x7661])
    out: set[str] = set()
    for c in sorted(set(labels.values())):
        lesions = sorted(lesion for lesion, lab in labels.items() if lab == c)
        n_val = min(len(lesions) - 1, max(1, round(fraction * len(lesions))))
        out.update(lesions[j] for j in rng.permutation(len(lesions))[:n_val])
    return out


def fold_assignment(
    labels: dict[str, int], k: int, fold: int, seed: int, inner_val_fraction: float = INNER_VAL_FRACTION,
    classes: list[str] | None = None,
) -> dict[str, str]:
    """Lesion -> ``train``/``val``/``test`` of fold ``fold`` of ``k``."""
    if not 0 <= fold < k:
        raise DataError(f"fold {fold} is outside 0..{k - 1}")
    fold_of = assign_folds(labels, k, seed, classes)
    train = {lesion: lab for lesion, lab in labels.items() if fold_of[lesion] != fold}
    for c in sorted(set(labels.values())):
        if sum(1 for lab in train.values() if lab == c) < 2:
            name = classes[c] if classes is not None else str(c)
            raise DataError(f"class {name!r} has fewer than 2 training lesions in fold {fold} of {k}; use fewer folds")
    val = inner_validation(train, inner_val_fraction, seed, fold)
    return {
        lesion: "test" if fold_of[lesion] == fold else "val" if lesion in val else "train" for lesion in labels
    }


def fold_bundle(
    bundle: DatasetBundle, k: int, fold: int, seed: int, inner_val_fraction: float = INNER_VAL_FRACTION
) -> DatasetBundle:
    """Fold ``fold`` of ``k`` of ``bundle``: same images, this fold's lesion-level splits."""
    table = bundle.table
    labels = lesion_labels(table)
    assignment = fold_assignment(labels, k, fold, seed, inner_val_fraction, bundle.classes)
    splits = splits_from_assignment(table, assignment, bundle.student_modality, bundle.teacher_modality)
    check_no_lesion_leak(table, splits)
    notes = list(bundle.notes)
    if any(table.split):
        notes.append(f"{k}-fold cross-validation by lesion: the source's official split is not used.")
    return dataclasses.replace(
        bundle,
        splits=splits,
        provenance={**bundle.provenance, "folds": {"k": k, "fold": fold, "seed": seed,
                                                   "inner_val_fraction": inner_val_fraction}},
        notes=notes,
    )


def lesion_count(bundle: DatasetBundle) -> int:
    return len(set(map(str, bundle.table.lesion)))
