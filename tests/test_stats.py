"""Statistics against references: scipy, statsmodels, an explicit DeLong, closed forms,
bootstrap and Monte-Carlo variances, and a published worked example."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from benchmark.analysis.metrics import auc_score, lesion_resample_weights, weighted_auc
from benchmark.analysis.stats import (
    delong_covariance,
    delong_seed_averaged,
    delong_stouffer,
    delong_test,
    friedman_nemenyi,
    holm,
    nemenyi_critical_difference,
    paired_tests,
    placement_values,
    stouffer,
    wilcoxon_min_n,
    wilcoxon_min_p,
)

# ---------------------------------------------------------------------------------------
# slow reference: DeLong 1988 with explicit placement values (psi kernel over all pairs)


def _psi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])


def slow_delong_binary(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    pos = y == 1
    v10, v01, aucs = [], [], []
    for s in scores:
        psi = _psi(s[pos], s[~pos])
        aucs.append(psi.mean())
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10 = np.cov(np.array(v10), ddof=1)
    s01 = np.cov(np.array(v01), ddof=1)
    return np.array(aucs), s10 / pos.sum() + s01 / (~pos).sum()


def slow_delong_macro(y: np.ndarray, probs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Macro OvR AUC: explicit per-class placements, per-image terms averaged over classes,
    covariance summed over true-class strata."""
    k = probs[0].shape[1]
    terms = np.zeros((len(probs), len(y)))
    aucs = np.zeros(len(probs))
    for c in range(k):
        pos = y == c
        for j, p in enumerate(probs):
            psi = _psi(p[pos, c], p[~pos, c])
            aucs[j] += psi.mean() / k
            terms[j, pos] += psi.mean(axis=1) / pos.sum() / k
            terms[j, ~pos] += psi.mean(axis=0) / (~pos).sum() / k
    cov = sum(np.sum(y == c) * np.cov(terms[:, y == c], ddof=1) for c in range(k))
    return aucs, cov


def _correlated_scores(rng: np.random.Generator, m: int, n: int, ties: bool = False):
    y = np.r_[np.ones(m, int), np.zeros(n, int)]
    shared = rng.normal(size=m + n)
    a = 1.0 * y + shared + 0.7 * rng.normal(size=m + n)
    b = 0.6 * y + shared + 0.7 * rng.normal(size=m + n)
    if ties:
        a, b = np.round(a), np.round(b)
    return y, a, b


@pytest.mark.parametrize("ties", [False, True])
def test_fast_delong_equals_explicit_placement_values(ties: bool) -> None:
    y, a, b = _correlated_scores(np.random.default_rng(7), 37, 52, ties)
    auc_fast, cov_fast = delong_covariance(y, [a, b])
    auc_slow, cov_slow = slow_delong_binary(y, [a, b])
    np.testing.assert_allclose(auc_fast, auc_slow, atol=1e-12)
    np.testing.assert_allclose(cov_fast, cov_slow, rtol=1e-10, atol=1e-15)
    # the midrank placement values themselves (Sun & Xu 2014) equal the psi-kernel means
    _, v10, v01 = placement_values(y == 1, np.stack([a, b]))
    np.testing.assert_allclose(v10[0], _psi(a[y == 1], a[y == 0]).mean(1), atol=1e-12)
    np.testing.assert_allclose(v01[1], _psi(b[y == 1], b[y == 0]).mean(0), atol=1e-12)


def test_macro_delong_equals_explicit_and_reduces_to_binary() -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 3, 90)
    pa = rng.dirichlet(np.ones(3), 90) + 0.8 * np.eye(3)[y]
    pb = rng.dirichlet(np.ones(3), 90) + 0.4 * np.eye(3)[y]
    pa, pb = pa / pa.sum(1, keepdims=True), pb / pb.sum(1, keepdims=True)
    auc_fast, cov_fast = delong_covariance(y, [pa, pb])
    auc_slow, cov_slow = slow_delong_macro(y, [pa, pb])
    np.testing.assert_allclose(auc_fast, auc_slow, atol=1e-12)
    np.testing.assert_allclose(cov_fast, cov_slow, rtol=1e-10)
    assert auc_fast[0] == pytest.approx(auc_score(y, pa))
    # two classes given as (N, 2) probabilities: identical to the binary positive-class form
    yb, a, b = _correlated_scores(rng, 30, 40)
    sig = 1 / (1 + np.exp(-a)), 1 / (1 + np.exp(-b))
    two = [np.stack([1 - s, s], 1) for s in sig]
    _, cov_two = delong_covariance(yb, two)
    _, cov_one = delong_covariance(yb, list(sig))
    np.testing.assert_allclose(cov_two, cov_one, rtol=1e-12)


def test_delong_closed_forms() -> None:
    rng = np.random.default_rng(0)
    y, a, b = _correlated_scores(rng, 25, 25)
    same = delong_test(y, a, a)
    assert same.p == 1.0 and same.z == 0.0 and same.diff == 0.0
    # a monotone transform leaves every rank, hence the AUC and the test, unchanged
    assert delong_test(y, a, np.exp(a)).p == 1.0
    perfect = np.where(y == 1, 2.0, -2.0) + 0.01 * rng.normal(size=50)
    res = delong_test(y, perfect, np.zeros(50))
    assert res.auc_a == 1.0 and res.auc_b == 0.5
    swapped = delong_test(y, b, a)
    forward = delong_test(y, a, b)
    assert swapped.z == pytest.approx(-forward.z) and swapped.p == pytest.approx(forward.p)


def test_delong_variance_matches_bootstrap_and_monte_carlo() -> None:
    """The DeLong variance of AUC_a - AUC_b estimates its sampling variance: compare with
    (1) the stratified bootstrap variance on one sample and (2) the variance over many
    simulated samples (class counts fixed, as DeLong conditions on them)."""
    rng = np.random.default_rng(42)
    m = n = 60
    y, a, b = _correlated_scores(rng, m, n)
    _, cov = delong_covariance(y, [a, b])
    var_delong = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    w, _ = lesion_resample_weights(y, None, 4000, seed=1)
    diffs = weighted_auc(y, np.stack([-a, a], 1), w) - weighted_auc(y, np.stack([-b, b], 1), w)
    assert np.var(diffs) == pytest.approx(var_delong, rel=0.15)

    sims, est = [], []
    for _ in range(600):
        ys, sa, sb = _correlated_scores(rng, m, n)
        au, cv = delong_covariance(ys, [sa, sb])
        sims.append(au[0] - au[1])
        est.append(cv[0, 0] + cv[1, 1] - 2 * cv[0, 1])
    assert np.mean(est) == pytest.approx(np.var(sims, ddof=1), rel=0.15)


def test_macro_delong_variance_matches_monte_carlo() -> None:
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), [30, 25, 35])
    diffs, est = [], []
    for _ in range(300):
        shared = rng.normal(size=(90, 3))
        la = 1.0 * np.eye(3)[y] + shared + 0.6 * rng.normal(size=(90, 3))
        lb = 0.6 * np.eye(3)[y] + shared + 0.6 * rng.normal(size=(90, 3))
        auc, cov = delong_covariance(y, [la, lb])
        diffs.append(auc[0] - auc[1])
        est.append(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert np.mean(est) == pytest.approx(np.var(diffs, ddof=1), rel=0.2)


def test_published_example_hanley_mcneil_1982() -> None:
    """Hanley & McNeil, Radiology 143:29-36 (1982), Table 1: CT ratings (1-5) of 58
    normal and 51 abnormal cases; the paper reports AUC 0.893 and SE 0.032 (their
    exponential approximation, which DeLong's nonparametric SE should come close to)."""
    normal = np.repeat(np.arange(1, 6), [33, 6, 6, 11, 2])
    abnormal = np.repeat(np.arange(1, 6), [3, 2, 2, 11, 33])
    y = np.r_[np.zeros(58, int), np.ones(51, int)]
    score = np.r_[normal, abnormal].astype(float)
    auc, cov = delong_covariance(y, [score])
    assert round(float(auc[0]), 3) == 0.893
    assert math.sqrt(cov[0, 0]) == pytest.approx(0.032, abs=0.004)


def test_delong_over_seeds() -> None:
    rng = np.random.default_rng(3)
    y, a, b = _correlated_scores(rng, 40, 40)
    seeds_a = [a + 0.3 * rng.normal(size=80) for _ in range(3)]
    seeds_b = [b + 0.3 * rng.normal(size=80) for _ in range(3)]
    avg = delong_seed_averaged(y, seeds_a, seeds_b)
    ref = delong_test(y, np.mean(seeds_a, 0), np.mean(seeds_b, 0))
    assert avg.p == ref.p and avg.method == "seed-averaged"
    st = delong_stouffer([y] * 3, seeds_a, seeds_b)
    zs = [delong_test(y, sa, sb).z for sa, sb in zip(seeds_a, seeds_b, strict=True)]
    assert st.z == pytest.approx(sum(zs) / math.sqrt(3))
    assert stouffer([1.96])[1] == pytest.approx(0.05, abs=1e-3)


# ---------------------------------------------------------------------------------------
# paired tests, Holm, Friedman


def test_paired_tests_match_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.8, 0.02, 8)
    b = a - 0.01 + rng.normal(0, 0.01, 8)
    res = paired_tests(a, b)
    assert res.p_t == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert res.t == pytest.approx(sps.ttest_rel(a, b).statistic)
    assert res.p_wilcoxon == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert res.mean_diff == pytest.approx(np.mean(a - b))
    assert res.wilcoxon_note == ""


def test_wilcoxon_minimum_p_and_notes() -> None:
    assert wilcoxon_min_p(3) == 0.25 and wilcoxon_min_p(5) == 0.0625 and wilcoxon_min_p(6) == 0.03125
    assert wilcoxon_min_n(0.05) == 6
    # the exact test reaches its minimum when every difference has the same sign
    assert sps.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0]).pvalue == pytest.approx(wilcoxon_min_p(5))
    three = paired_tests([0.9, 0.8, 0.85], [0.7, 0.6, 0.65])
    assert "2/2^3" in three.wilcoxon_note and "at least 6 seeds" in three.wilcoxon_note
    one = paired_tests([0.9], [0.8])
    assert math.isnan(one.p_t) and "paired t-test needs at least 2" in one.wilcoxon_note
    constant = paired_tests([0.9, 0.8, 0.7], [0.8, 0.7, 0.6])
    assert constant.p_t == 0.0 and constant.mean_diff == pytest.approx(0.1)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_tests([1, 2], [1])


def test_holm_matches_statsmodels() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, 0.02])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
    with_nan = holm([0.01, np.nan, 0.04])
    assert math.isnan(with_nan[1])
    np.testing.assert_allclose(with_nan[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])


def test_friedman_nemenyi_matches_scipy_and_cd_table() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.9, 8)
    table = pd.DataFrame({"a": base + 0.05, "b": base + 0.02 + rng.uniform(-0.01, 0.01, 8), "c": base})
    res = friedman_nemenyi(table)
    ref = sps.friedmanchisquare(table["a"], table["b"], table["c"])
    assert res.statistic == pytest.approx(ref.statistic) and res.p == pytest.approx(ref.pvalue)
    assert res.ranks["a"] < res.ranks["b"] < res.ranks["c"]  # rank 1 = best (highest AUC)
    assert res.ranks["a"] == 1.0 and res.ranks["c"] == 3.0
    assert res.nemenyi.loc["a", "c"] < 0.05
    # Demšar (2006) Table 5: q_0.05 = 2.343 for k = 3; CD = q sqrt(k(k+1)/(6N))
    assert nemenyi_critical_difference(3, 8) == pytest.approx(2.343 * math.sqrt(12 / 48), abs=1e-3)
    small = friedman_nemenyi(table[["a", "b"]])
    assert math.isnan(small.p) and "at least 3 methods" in small.note
