"""Class-matched and group batch samplers."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.base import DataError
from datasets.sampling import ClassMatchedSampler, GroupSampler, twin_positions

STUDENT = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
TEACHER = np.array([0, 1, 2, 2, 1, 0, 2])
TWIN = np.array([0, -1, -1, 1, -1, 2, -1, -1, -1, 4])  # student 0 <-> teacher 0, ...


def test_class_matched_covers_every_student_once_with_same_class_partners() -> None:
    sampler = ClassMatchedSampler(STUDENT, TEACHER, TWIN, batch_size=4, seed=3)
    for epoch in range(3):
        plans = sampler.epoch(epoch)
        rows = np.concatenate([p.student for p in plans])
        assert sorted(rows.tolist()) == list(range(len(STUDENT)))
        for p in plans:
            assert (TEACHER[p.teacher] == STUDENT[p.student]).all()
            assert (p.twin == (TWIN[p.student] >= 0)).all()
            assert (p.teacher[p.twin] == TWIN[p.student[p.twin]]).all()


def test_class_matched_is_deterministic_and_redraws_pseudo_pairs_each_epoch() -> None:
    a = ClassMatchedSampler(STUDENT, TEACHER, TWIN, 4, seed=1)
    b = ClassMatchedSampler(STUDENT, TEACHER, TWIN, 4, seed=1)
    for e in range(2):
        pa, pb = a.epoch(e), b.epoch(e)
        assert all((x.student == y.student).all() and (x.teacher == y.teacher).all() for x, y in zip(pa, pb,
                                                                                                  strict=True))
    e0 = np.concatenate([p.student for p in a.epoch(0)])
    e1 = np.concatenate([p.student for p in a.epoch(1)])
    assert not (e0 == e1).all()


def test_group_sampler_has_every_class_with_fixed_count_ordered_by_class() -> None:
    sampler = GroupSampler(STUDENT, TEACHER, TWIN, group_size=2, num_classes=3, seed=0)
    plans = sampler.epoch(0)
    assert len(plans) == len(sampler) == 2
    for p in plans:
        assert STUDENT[p.student].tolist() == [0, 0, 1, 1, 2, 2]
        assert (TEACHER[p.teacher] == STUDENT[p.student]).all()
    assert sampler.underfilled == {}


def test_group_sampler_reports_and_fills_small_classes() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1])
    sampler = GroupSampler(labels, np.array([0, 1]), np.full(6, -1), group_size=3, num_classes=2, seed=0)
    assert sampler.underfilled == {1: 1}
    for p in sampler.epoch(0):
        assert labels[p.student].tolist() == [0, 0, 0, 1, 1, 1]


def test_missing_teacher_class_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="no teacher images"):
        ClassMatchedSampler(np.array([0, 1]), np.array([0, 0]), np.array([-1, -1]), 2, 0, ["hyper", "adenoma"])


def test_twin_positions_maps_table_twins_into_the_teacher_pool() -> None:
    table_twin = np.array([3, 2, 1, 0])
    pos = twin_positions(np.array([0, 1]), np.array([2, 3]), table_twin)
    assert pos.tolist() == [1, 0]


def test_prepare_stage_stream_is_valid_and_distinct_from_training_epochs() -> None:
    from benchmark.training.train import PREPARE_EPOCH

    sampler = ClassMatchedSampler(STUDENT, TEACHER, TWIN, 4, seed=0)
    prep = np.concatenate([p.student for p in sampler.epoch(PREPARE_EPOCH)])
    assert sorted(prep.tolist()) == list(range(len(STUDENT)))
    assert not (prep == np.concatenate([p.student for p in sampler.epoch(0)])).all()
    group = GroupSampler(STUDENT, TEACHER, TWIN, group_size=2, num_classes=3, seed=0)
    assert len(group.epoch(PREPARE_EPOCH)) == len(group)
