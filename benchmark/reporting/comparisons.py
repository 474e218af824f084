"""Comparisons of cells: the primary MRMC test, its secondary tests, Holm within a table, and power.

The primary test of "method A vs. method B" is the Obuchowski-Rockette analysis with Hillis's
denominator degrees of freedom, random readers and random cases (RRRC,
:mod:`benchmark.analysis.mrmc`): training seeds are the readers, test lesions the cases (all
views of a lesion one case), the covariance of the per-seed AUCs over lesions is the clustered
DeLong estimate (Obuchowski 1997). Its figure of merit is the mean of per-seed AUCs, the number
the tables show, so a difference and its test have the same sign.

DeLong (clustered structural components) rather than the jackknife is the primary covariance:
it is the closed-form estimator with one image per lesion reducing exactly to DeLong's, the same
estimator gives the single-model intervals, and the two agree closely on the benchmark's design
(the null simulation of :mod:`benchmark.analysis.nullsim` holds both near the nominal level).

Secondary tests, each answering a narrower question:
- FRRC (seeds fixed, lesions random; with one seed it is the lesion-clustered DeLong test of two
  models): are *these trained models* different on new lesions? It ignores training randomness.
- paired t-test and Wilcoxon over seeds on the per-seed AUCs: would new seeds differ *on these
  test lesions*? They ignore the sampling of test lesions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..analysis.clustered_auc import ClusteredAUC, clustered_auc_ci
from ..analysis.mrmc import Contrast, ORAnalysis, or_analysis
from ..analysis.power import detectable_difference
from ..analysis.stats import PairedResult, holm, paired_tests
from .runs import Cell, Run

ALPHA = 0.05
POWER = 0.8
COV_METHOD = "delong"
MARK_MRMC = "*"
MARK_T = "†"
NO_LESIONS = "no lesion ids in the run files: each test image counted as its own case"


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


@dataclass
class Analysis:
    """An OR analysis of several cells over their common seeds, or why there is none."""

    analysis: ORAnalysis | None
    seeds: list[int]
    note: str = ""
    cases_note: str = ""


def analyse(cells: Sequence[Cell], seeds: Sequence[int] | None = None) -> Analysis:
    """OR/Hillis analysis of ``cells`` (treatments) x common seeds (readers) on their shared test images."""
    common = sorted(set.intersection(*(set(c.ok) for c in cells))) if seeds is None else list(seeds)
    if not common:
        return Analysis(None, [], "no common seeds")
    shared = shared_test_set([c.ok[s] for c in cells for s in common])
    if shared is None:
        return Analysis(None, common, "not on the same test images")
    y, lesion, probs = shared
    n = len(common)
    grid = [probs[i * n : (i + 1) * n] for i in range(len(cells))]
    try:
        res = or_analysis(
            y, grid, lesion, COV_METHOD, [c.method for c in cells], [f"seed{s}" for s in common], ALPHA
        )
    except ValueError as err:
        return Analysis(None, common, str(err))
    return Analysis(res, common, "", "" if lesion else NO_LESIONS)


@dataclass
class Comparison:
    """Cell ``a`` against cell ``b``: the primary RRRC contrast, FRRC, and the paired tests over seeds."""

    a: Cell
    b: Cell
    paired: PairedResult
    mrmc: Analysis
    p_mrmc_holm: float = math.nan
    p_frrc_holm: float = math.nan
    p_t_holm: float = math.nan
    p_w_holm: float = math.nan
    detectable: float = math.nan
    family_size: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rrrc(self) -> Contrast | None:
        an = self.mrmc.analysis
        return an.contrast(self.a.method, self.b.method, "RRRC") if an is not None and an.rrrc else None

    @property
    def frrc(self) -> Contrast | None:
        an = self.mrmc.analysis
        return an.contrast(self.a.method, self.b.method, "FRRC") if an is not None else None


def compare(a: Cell, b: Cell) -> Comparison:
    """A against B over their common seeds: OR/Hillis MRMC (primary), FRRC and paired tests (secondary)."""
    seeds = sorted(set(a.ok) & set(b.ok))
    paired = paired_tests(a.values("auc", seeds), b.values("auc", seeds), ALPHA)
    return Comparison(a, b, paired, analyse([a, b], seeds))


def holm_fill(comparisons: list[Comparison]) -> None:
    """Holm-adjust each test's p-values over ``comparisons`` (one family per test), and the power
    of the primary test at Holm's first step (alpha / number of comparisons with a primary p)."""
    for attr, getter in (
        ("p_mrmc_holm", lambda c: c.rrrc.p if c.rrrc else math.nan),
        ("p_frrc_holm", lambda c: c.frrc.p if c.frrc else math.nan),
        ("p_t_holm", lambda c: c.paired.p_t),
        ("p_w_holm", lambda c: c.paired.p_wilcoxon),
    ):
        adj = holm([getter(c) for c in comparisons])
        for c, v in zip(comparisons, adj, strict=True):
            setattr(c, attr, float(v))
    m = sum(1 for c in comparisons if c.rrrc is not None and math.isfinite(c.rrrc.p))
    for c in comparisons:
        c.family_size = m
        if c.rrrc is not None and m:
            try:
                c.detectable = detectable_difference(c.mrmc.analysis, alpha=ALPHA / m, power=POWER)
            except ValueError:
                c.detectable = math.nan


def single_model_ci(run: Run) -> ClusteredAUC | None:
    """Lesion-clustered DeLong CI (Obuchowski 1997) of one model's AUC, or None without predictions."""
    if run.y is None or run.prob is None:
        return None
    prob = run.prob[:, 1] if run.prob.shape[1] == 2 else run.prob
    return clustered_auc_ci(run.y, prob, run.lesion, 1 - ALPHA)
