"""Lesion bootstrap (BCa, 10,000 resamples) and the gap-closed interval against scipy's BCa,
a brute-force jackknife and the delta method with clustered DeLong covariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from benchmark.analysis.bootstrap import gap_closed_ci, lesion_bootstrap_ci
from benchmark.analysis.clustered_auc import auc_covariance, clustered_auc_ci


def _probs(score: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-score))
    return np.stack([1 - p, p], axis=-1)


def _rank_auc(y: np.ndarray, s: np.ndarray, axis: int = -1) -> np.ndarray:
    rk = sps.rankdata(s, axis=axis)
    n1 = y.sum(axis=axis)
    return ((rk * y).sum(axis=axis) - n1 * (n1 + 1) / 2) / (n1 * (y.shape[axis] - n1))


def test_bca_matches_scipy_bca() -> None:
    """One image per lesion, unstratified: the same interval as scipy.stats.bootstrap(method="BCa"),
    up to Monte-Carlo error (10,000 resamples each)."""
    rng = np.random.default_rng(0)
    y = (np.arange(150) < 60).astype(int)
    s = 1.2 * y + rng.normal(size=150)
    prob = _probs(s)
    ours = lesion_bootstrap_ci(y, prob, None, "auc", 10_000, seed=1, stratified=False)
    ref = sps.bootstrap((y, prob[:, 1]), _rank_auc, paired=True, vectorized=True, n_resamples=10_000,
                        method="BCa", random_state=3).confidence_interval
    assert ours.n_boot == 10_000 and ours.method == "bca"
    assert ours.low == pytest.approx(ref.low, abs=0.008) and ours.high == pytest.approx(ref.high, abs=0.008)
    correct = (prob.argmax(1) == y).astype(float)
    ours_acc = lesion_bootstrap_ci(y, prob, None, "acc", 10_000, seed=1, stratified=False)
    ref_acc = sps.bootstrap((correct,), np.mean, n_resamples=10_000, method="BCa", random_state=3).confidence_interval
    assert ours_acc.low == pytest.approx(ref_acc.low, abs=0.01)
    assert ours_acc.high == pytest.approx(ref_acc.high, abs=0.01)


def test_bca_acceleration_is_the_leave_one_lesion_out_jackknife() -> None:
    rng = np.random.default_rng(4)
    views = rng.integers(2, 4, 40)
    lesion = np.repeat(np.arange(40), views)
    y = (lesion % 2 == 0).astype(int)
    s = np.exp(0.8 * y + rng.normal(size=len(y)))  # skewed scores; AUC only sees ranks
    res = lesion_bootstrap_ci(y, _probs(np.log(s)), lesion, "auc", 2000, seed=0)
    jack = np.array([roc_auc_score(y[lesion != k], s[lesion != k]) for k in range(40)])
    dev = jack.mean() - jack
    assert res.acceleration == pytest.approx(np.sum(dev**3) / (6 * np.sum(dev**2) ** 1.5), rel=1e-9, abs=1e-12)
    assert res.n_lesions == 40
    assert res.low < res.estimate < res.high


def test_clustered_bootstrap_agrees_with_clustered_delong() -> None:
    """Views of a lesion share a lesion effect: the lesion bootstrap's width matches the clustered
    DeLong interval (both resample / model lesions), and is wider than an image-level bootstrap."""
    rng = np.random.default_rng(7)
    views = rng.integers(2, 4, 300)
    lesion = np.repeat(np.arange(300), views)
    y = (lesion < 150).astype(int)
    s = y + rng.normal(size=300)[lesion] + 0.5 * rng.normal(size=len(y))
    prob = _probs(s)
    boot = lesion_bootstrap_ci(y, prob, lesion, "auc", 10_000, seed=2)
    dl = clustered_auc_ci(y, prob, lesion)
    assert (boot.high - boot.low) == pytest.approx(dl.high - dl.low, rel=0.1)
    img = lesion_bootstrap_ci(y, prob, None, "auc", 2000, seed=2, method="percentile")
    assert (img.high - img.low) < 0.85 * (boot.high - boot.low)


def test_gap_closed_interval_matches_delta_method() -> None:
    """One seed per model, all on the same images: the bootstrap interval of
    (S - B) / (T - B) agrees with the delta method on the clustered DeLong covariance of (S, B, T)."""
    rng = np.random.default_rng(1)
    views = rng.integers(2, 4, 300)
    lesion = np.repeat(np.arange(300), views)
    y = (lesion < 150).astype(int)
    shared = rng.normal(size=300)[lesion]
    t = 2.0 * y + shared + 0.6 * rng.normal(size=len(y))
    b = 1.0 * y + shared + 0.6 * rng.normal(size=len(y))
    s = 1.4 * y + shared + 0.6 * rng.normal(size=len(y))
    res = gap_closed_ci(y, [_probs(s)], [_probs(b)], lesion, [_probs(t)], n_boot=3000, seed=0)
    auc, cov = auc_covariance(y, np.stack([s, b, t]), lesion)
    a_s, a_b, a_t = auc
    g = (a_s - a_b) / (a_t - a_b)
    grad = np.array([1 / (a_t - a_b), (a_s - a_t) / (a_t - a_b) ** 2, -(a_s - a_b) / (a_t - a_b) ** 2])
    se = math.sqrt(grad @ cov @ grad)
    assert res.estimate == pytest.approx(g, abs=1e-12)
    assert res.n_undefined == 0
    assert (res.high - res.low) == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert res.low < g < res.high


def test_gap_closed_undefined_without_a_gap_and_teacher_on_own_images() -> None:
    rng = np.random.default_rng(3)
    lesion = np.repeat(np.arange(60), 2)
    y = (lesion < 30).astype(int)
    b = [_probs(y + rng.normal(size=120)) for _ in range(3)]
    s = [_probs(y + rng.normal(size=120)) for _ in range(3)]
    same = gap_closed_ci(y, s, b, lesion, b, n_boot=1000)
    assert math.isnan(same.low) and same.n_undefined > 25
    # teacher scored on its own images (one per lesion, other modality), matched by lesion id
    ty = (np.arange(60) < 30).astype(int)
    teacher = [_probs(3 * ty + rng.normal(size=60))]
    res = gap_closed_ci(y, s, b, lesion, teacher, teacher_y=ty, teacher_lesion=np.arange(60), n_boot=1000)
    assert res.teacher_auc > res.baseline_auc and math.isfinite(res.low) and res.low < res.estimate < res.high


@pytest.mark.parametrize("k", [2, 3])
def test_lesion_auc_bilinear_form_equals_the_weighted_auc(k: int) -> None:
    """The fast seed-mean AUC of resampled lesions (UnitAUC) against the image-weighted AUC of the
    same draws: 1-3 views per lesion, tied scores, two seeds, binary and macro one-vs-rest; and its
    closed-form leave-one-lesion-out values against recomputed ones."""
    from benchmark.analysis.bootstrap import UnitAUC, _draw_counts, _metric, _units

    rng = np.random.default_rng(3)
    views = rng.integers(1, 4, size=40)
    les = np.repeat(np.arange(40), views)
    y = les % k
    probs = []
    for _ in range(2):
        logits = rng.normal(size=(len(y), k)) + np.eye(k)[y]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        probs.append(np.round(p, 1))  # many ties
    index, unit_label = _units(y, les)
    fast = UnitAUC(y, probs, index, len(unit_label))
    counts = _draw_counts(rng, unit_label, 50, stratified=True)
    np.testing.assert_allclose(fast.values(counts), _metric(y, probs, counts[:, index], "auc"), rtol=0, atol=1e-6)
    loo = (index[None, :] != np.arange(len(unit_label))[:, None]).astype(float)
    np.testing.assert_allclose(fast.jackknife(), _metric(y, probs, loo, "auc"), rtol=0, atol=1e-12)


def test_gap_closed_batch_equals_one_call_per_student() -> None:
    """Several students against one baseline and teacher (students of 3 and of 2 seeds): each
    result is the one its own gap_closed_ci call gives."""
    from benchmark.analysis.bootstrap import gap_closed_cis

    rng = np.random.default_rng(11)
    les = np.repeat(np.arange(30), 2)
    y = les % 2

    def probs(strength: float, n: int) -> list[np.ndarray]:
        out = []
        for _ in range(n):
            p = 1 / (1 + np.exp(-(strength * y + rng.normal(size=len(y)))))
            out.append(np.c_[1 - p, p])
        return out

    base, teacher = probs(0.5, 3), probs(3.0, 3)
    students = [probs(1.0, 3), probs(2.0, 2), probs(1.5, 3)]
    batch = gap_closed_cis(y, students, base, les, teacher, n_boot=400, chunk=150)
    for stu, got in zip(students, batch, strict=True):
        one = gap_closed_ci(y, stu, base, les, teacher, n_boot=400, chunk=150)
        assert (got.estimate, got.low, got.high, got.n_undefined) == (one.estimate, one.low, one.high, one.n_undefined)
    assert batch[0].low != batch[2].low
