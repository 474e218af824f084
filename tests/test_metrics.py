"""Per-run metrics and the lesion-level bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from benchmark.analysis.metrics import (
    auc_score,
    bootstrap_ci,
    classification_metrics,
    expected_calibration_error,
    lesion_resample_weights,
    weighted_auc,
    weighted_metrics,
)


def _probs(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.2 * np.eye(k)[y]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, prob


def test_auc_closed_forms() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    separated = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    prob = np.stack([1 - separated, separated], 1)
    assert classification_metrics(y, prob)["auc"] == 1.0
    assert classification_metrics(y, prob[:, ::-1])["auc"] == 0.0
    flat = np.full((6, 2), 0.5)
    assert classification_metrics(y, flat)["auc"] == 0.5
    assert weighted_auc(y, prob)[0] == 1.0
    assert weighted_auc(y, flat)[0] == 0.5


def test_binary_sensitivity_specificity_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    p1 = np.array([0.9, 0.8, 0.6, 0.2, 0.1, 0.3, 0.4, 0.7, 0.2])
    m = classification_metrics(y, np.stack([1 - p1, p1], 1))
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["balanced_acc"] == pytest.approx((3 / 4 + 4 / 5) / 2)
    assert m["acc"] == pytest.approx(7 / 9)
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3))
    assert "sensitivity" not in three and three["auc"] == 1.0


def test_ece_by_hand() -> None:
    # two images at confidence 0.8 (one right), one at 0.6 (right): bins differ
    prob = np.array([[0.8, 0.2], [0.8, 0.2], [0.4, 0.6]])
    y = np.array([0, 1, 1])
    expected = 2 / 3 * abs(0.5 - 0.8) + 1 / 3 * abs(1.0 - 0.6)
    assert expected_calibration_error(y, prob) == pytest.approx(expected)


@pytest.mark.parametrize("k", [2, 3])
def test_weighted_metrics_equal_sklearn_on_repeated_sample(k: int) -> None:
    rng = np.random.default_rng(k)
    y, prob = _probs(rng, 60, k)
    prob = np.round(prob, 2)  # ties in the scores
    w = rng.integers(0, 4, size=(5, 60)).astype(float)
    got = weighted_metrics(y, prob, w)
    for b in range(5):
        idx = np.repeat(np.arange(60), w[b].astype(int))
        ref = classification_metrics(y[idx], prob[idx])
        pred = prob[idx].argmax(1)
        assert got["auc"][b] == pytest.approx(ref["auc"], abs=1e-12)
        assert got["acc"][b] == pytest.approx(accuracy_score(y[idx], pred))
        assert got["balanced_acc"][b] == pytest.approx(balanced_accuracy_score(y[idx], pred))
        assert got["f1"][b] == pytest.approx(
            f1_score(y[idx], pred, average="macro", labels=list(range(k)), zero_division=0)
        )
        assert got["ece"][b] == pytest.approx(ref["ece"])
        if k == 2:
            assert got["sensitivity"][b] == pytest.approx(ref["sensitivity"])
            assert got["specificity"][b] == pytest.approx(ref["specificity"])


def test_auc_score_macro_ovr_matches_sklearn() -> None:
    y, prob = _probs(np.random.default_rng(0), 90, 3)
    assert auc_score(y, prob) == pytest.approx(roc_auc_score(y, prob, multi_class="ovr", average="macro"))


def test_lesion_resampling_keeps_lesions_whole_and_classes_present() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    lesion = ["a", "a", "b", "c", "c", "c", "d"]
    w, n_units = lesion_resample_weights(y, lesion, 200, seed=1)
    assert n_units == 4
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])  # images of a lesion move together
    assert np.all(w[:, :3].sum(1) > 0) and np.all(w[:, 3:].sum(1) > 0)  # stratified: both classes
    # each resample draws 2 lesions per class
    lesion_counts = w[:, [0, 2]].sum(1) + 0  # class 0: lesions a, b
    assert np.all(lesion_counts == 2)
    with pytest.raises(ValueError, match="lesion 'x' has test images of classes"):
        lesion_resample_weights(np.array([0, 1]), ["x", "x"], 10, 0)


def test_bootstrap_ci_deterministic_and_contains_estimate() -> None:
    y, prob = _probs(np.random.default_rng(3), 80, 2)
    lesion = [f"L{i // 2}" if y[i] == y[i - i % 2] else f"M{i}" for i in range(80)]
    a = bootstrap_ci(y, prob, lesion, "auc", n_boot=300, seed=5)
    b = bootstrap_ci(y, prob, lesion, "auc", n_boot=300, seed=5)
    assert a == b
    assert a.low < a.estimate < a.high
    assert a.estimate == pytest.approx(auc_score(y, prob))
    # callable metric goes through the explicit path and agrees with the named one
    c = bootstrap_ci(y, prob, lesion, lambda yy, pp: roc_auc_score(yy, pp[:, 1]), n_boot=60, seed=5)
    a60 = bootstrap_ci(y, prob, lesion, "auc", n_boot=60, seed=5)
    assert (c.low, c.high) == pytest.approx((a60.low, a60.high))
    # a list of seed probabilities: the statistic is the mean over seeds
    d = bootstrap_ci(y, [prob, prob[:, ::-1]], lesion, "auc", n_boot=50, seed=5)
    assert d.estimate == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_ci(y, prob, lesion, "nope", n_boot=5)


def _clustered_population(rng: np.random.Generator, n_lesions: int, per: int, d: float, su: float):
    """Lesion random effect u ~ N(0, su^2) shared by a lesion's images, image noise N(0, 1)."""
    lab = np.repeat(np.arange(2), n_lesions // 2)
    u = rng.normal(0, su, n_lesions)
    y = np.repeat(lab, per)
    lesion = np.repeat(np.arange(n_lesions), per)
    s = d * y + u[lesion] + rng.normal(0, 1, len(y))
    return y, np.stack([-s, s], 1), lesion


def test_lesion_bootstrap_covers_true_auc_near_nominal_rate() -> None:
    """Scores s = d*y + u_lesion + e: true AUC = Phi(d / sqrt(2 (su^2 + 1)))."""
    d, su = 1.0, 1.0
    true_auc = norm.cdf(d / np.sqrt(2 * (su**2 + 1)))
    rng = np.random.default_rng(2024)
    hits_lesion = hits_image = 0
    sims = 200
    for s in range(sims):
        y, prob, lesion = _clustered_population(rng, 40, 4, d, su)
        ci = bootstrap_ci(y, prob, lesion, "auc", n_boot=200, seed=s)
        hits_lesion += ci.low <= true_auc <= ci.high
        ci_img = bootstrap_ci(y, prob, None, "auc", n_boot=200, seed=s)
        hits_image += ci_img.low <= true_auc <= ci_img.high
    cover_lesion, cover_image = hits_lesion / sims, hits_image / sims
    assert 0.89 <= cover_lesion <= 0.99, cover_lesion
    # resampling images ignores the lesion clusters and undercovers clearly
    assert cover_image < cover_lesion - 0.1, (cover_image, cover_lesion)
