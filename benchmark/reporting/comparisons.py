"""Comparisons of two cells: paired tests over seeds, DeLong over the test images, Holm within a table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..analysis.stats import DeLongResult, delong_seed_averaged, delong_stouffer, holm, paired_tests
from .runs import Cell, Run

ALPHA = 0.05
MARK_DELONG = "*"
MARK_T = "†"


@dataclass
class Comparison:
    a: Cell
    b: Cell
    paired: Any
    delong: DeLongResult | None
    delong_note: str = ""
    p_t_holm: float = math.nan
    p_w_holm: float = math.nan
    p_delong_holm: float = math.nan


def shared_test_set(runs: Sequence[Run]) -> tuple[np.ndarray, list[str] | None, list[np.ndarray]] | None:
    """Labels, lesions and probabilities of runs scored on the same images, aligned by image."""
    if not runs or any(r.y is None for r in runs):
        return None
    first = runs[0]
    keys0 = first.image_keys()
    probs = [first.prob]
    for r in runs[1:]:
        keys = r.image_keys()
        if keys0 is not None and keys is not None:
            if set(keys) != set(keys0) or len(keys) != len(keys0):
                return None
            pos = {k: i for i, k in enumerate(keys)}
            order = np.array([pos[k] for k in keys0])
            if not np.array_equal(r.y[order], first.y):
                return None
            probs.append(r.prob[order])
        else:
            if len(r.y) != len(first.y) or not np.array_equal(r.y, first.y) or r.lesion != first.lesion:
                return None
            probs.append(r.prob)
    if len({p.shape[1] for p in probs}) != 1:
        return None
    return first.y, first.lesion, probs


def compare(a: Cell, b: Cell) -> Comparison:
    """A against B: paired tests over common seeds on AUC, DeLong over the test images."""
    seeds = sorted(set(a.ok) & set(b.ok))
    paired = paired_tests(a.values("auc", seeds), b.values("auc", seeds), ALPHA)
    use = seeds or None
    runs_a = [a.ok[s] for s in (use or a.seeds)]
    runs_b = [b.ok[s] for s in (use or b.seeds)]
    delong = None
    note = ""
    shared = shared_test_set(runs_a + runs_b)
    try:
        if shared is not None:
            y, _, probs = shared
            delong = delong_seed_averaged(y, probs[: len(runs_a)], probs[len(runs_a) :])
        elif seeds:
            per = [shared_test_set([a.ok[s], b.ok[s]]) for s in seeds]
            if all(p is not None for p in per):
                delong = delong_stouffer([p[0] for p in per], [p[2][0] for p in per], [p[2][1] for p in per])
            else:
                note = "not on the same test images"
        else:
            note = "not on the same test images"
    except ValueError as err:
        note = str(err)
    return Comparison(a, b, paired, delong, note)


def holm_fill(comparisons: list[Comparison]) -> None:
    for attr, getter in (
        ("p_t_holm", lambda c: c.paired.p_t),
        ("p_w_holm", lambda c: c.paired.p_wilcoxon),
        ("p_delong_holm", lambda c: c.delong.p if c.delong else math.nan),
    ):
        adj = holm([getter(c) for c in comparisons])
        for c, v in zip(comparisons, adj, strict=True):
            setattr(c, attr, float(v))
