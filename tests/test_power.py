"""Power of the OR/Hillis RRRC test against published values, a closed-form limit, monotonicity
and a Monte-Carlo simulation of the OR model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.analysis.mrmc import or_analysis, rrrc_batch
from benchmark.analysis.power import (
    PowerDesign,
    design_from_analysis,
    detectable_difference,
    min_detectable_difference,
    rrrc_power,
)

FIXTURE = Path(__file__).resolve().parent / "data" / "mrmc"


def _vandyke_analysis():
    d = pd.read_csv(FIXTURE / "vandyke.csv").sort_values(["treatment", "reader", "case"])
    y = d[(d.treatment == 1) & (d.reader == 1)].truth.to_numpy()
    return or_analysis(y, d.rating.to_numpy(float).reshape(2, 5, len(y)), None, "jackknife")


def test_power_matches_published_rjafroc_values() -> None:
    """RJafroc SsPowerGivenJK(dataset02, "Wilcoxon", OR, RRRC) on the Van Dyke pilot (jackknife components):
    effect -0.043800322 with J = 10, K = 165 -> 0.80541995 (its test suite, tolerance 1e-8);
    J = 6, K = 111 -> 0.5526116 (its test suite); J = 6, K = 112 -> 0.5555789 (its sample-size vignette)."""
    design = design_from_analysis(_vandyke_analysis())
    assert design.n_cases == 114
    assert rrrc_power(-0.043800322, design, 10, 165) == pytest.approx(0.80541995, abs=1e-8)
    assert rrrc_power(-0.0438003221, design, 6, 111) == pytest.approx(0.5526116, abs=5e-8)
    assert rrrc_power(-0.0438003221, design, 6, 112) == pytest.approx(0.5555789, abs=5e-7)


def test_detectable_difference_inverts_power() -> None:
    a = _vandyke_analysis()
    mdd = detectable_difference(a)
    assert rrrc_power(mdd, design_from_analysis(a), 5) == pytest.approx(0.8, abs=1e-9)
    assert rrrc_power(mdd, design_from_analysis(a), 5, alpha=0.01) < 0.8
    # Holm's first step (alpha / m) needs a larger difference
    assert detectable_difference(a, alpha=0.05 / 30) > mdd


def test_large_sample_limit_is_the_normal_formula() -> None:
    """With E[MS(T:R)] = 0 the ddf is infinite and the test is a z test:
    delta = (z_{1 - alpha/2} + z_{power}) sqrt(2 D / J) up to the negligible opposite tail."""
    design = PowerDesign(var_tr=0.0, var=0.002, cov1=0.001, cov2=0.0015, cov3=0.0005, n_cases=500)
    j = 4
    d = 0.002 - 0.001 + (j - 1) * 0.001
    by_hand = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * np.sqrt(2 * d / j)
    assert min_detectable_difference(design, j) == pytest.approx(by_hand, rel=1e-5)


def test_detectable_difference_shrinks_with_readers_and_cases() -> None:
    design = PowerDesign(var_tr=2e-4, var=8e-4, cov1=3.5e-4, cov2=3.4e-4, cov3=2.4e-4, n_cases=114)
    by_readers = [min_detectable_difference(design, j) for j in (2, 3, 5, 10, 40)]
    by_cases = [min_detectable_difference(design, 5, k) for k in (50, 114, 500, 5000)]
    assert all(np.diff(by_readers) < 0) and all(np.diff(by_cases) < 0)
    # cases alone cannot remove the treatment-by-reader variance: the limit is the RRFC-type floor
    floor = min_detectable_difference(PowerDesign(2e-4, 0.0, 0.0, 0.0, 0.0, 114), 5)
    assert by_cases[-1] > floor and by_cases[-1] == pytest.approx(floor, rel=0.05)
    with pytest.raises(ValueError, match="2 readers"):
        min_detectable_difference(design, 1)


def test_power_matches_monte_carlo_of_the_or_model() -> None:
    """Simulate AUC tables from the OR model with known error covariances and the difference the
    power formula says is detected 80 % of the time; the RRRC test rejects about 80 % of them."""
    rng = np.random.default_rng(0)
    var_tr, var, cov1, cov2, cov3 = 3e-4, 8e-4, 3.5e-4, 3.4e-4, 2.4e-4
    n_t, n_r, reps = 2, 5, 4000
    design = PowerDesign(var_tr, var, cov1, cov2, cov3, 100)
    delta = min_detectable_difference(design, n_r)
    t = np.repeat(np.arange(n_t), n_r)
    r = np.tile(np.arange(n_r), n_t)
    same_t, same_r = t[:, None] == t[None, :], r[:, None] == r[None, :]
    sigma = np.select([same_t & same_r, ~same_t & same_r, same_t & ~same_r], [var, cov1, cov2], cov3)
    eps = rng.multivariate_normal(np.zeros(n_t * n_r), sigma, reps).reshape(reps, n_t, n_r)
    tr = rng.normal(0, np.sqrt(var_tr), (reps, n_t, n_r))
    readers = rng.normal(0, 0.03, (reps, 1, n_r))
    auc = 0.8 + np.array([delta, 0.0])[None, :, None] + readers + tr + eps
    p = rrrc_batch(auc, np.broadcast_to(sigma, (reps, *sigma.shape)))["p"]
    assert np.mean(p < 0.05) == pytest.approx(0.8, abs=0.03)
    # and under the null the same simulation rejects about alpha
    p0 = rrrc_batch(auc - np.array([delta, 0.0])[None, :, None], np.broadcast_to(sigma, (reps, *sigma.shape)))["p"]
    assert 0.03 <= np.mean(p0 < 0.05) <= 0.07
