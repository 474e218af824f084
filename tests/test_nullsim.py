"""The null simulation: the primary OR/Hillis test holds its level on the benchmark's design
(2-3 views per lesion, seeds of varying quality), the old image-level tests do not."""

from __future__ import annotations

import numpy as np

from benchmark.analysis.nullsim import TESTS, NullDesign, format_result, null_pvalues, run_null_simulation


def test_or_hillis_holds_alpha_and_image_level_delong_does_not() -> None:
    res = run_null_simulation(replicates=300, seed=1)
    for name in ("or_delong", "or_jackknife"):
        # 300 replicates: a Monte-Carlo s.e. of 0.013 at 0.05; the band is about -3 / +4 s.e.
        assert 0.01 <= res.rates[name] <= 0.10, res.rates
    assert res.rates["delong_image_seed0"] > 0.25
    assert res.rates["delong_seed_averaged"] > 0.15
    assert res.rates["paired_t_seeds"] > res.rates["or_delong"]
    text = format_result(res)
    assert all(name in text for name in TESTS)


def test_or_hillis_detects_a_real_difference() -> None:
    """Not a test that never rejects: with method 0 better by 1.0 logit unit of separation it
    rejects in most replicates."""
    p = null_pvalues(np.random.default_rng(2), NullDesign(), 100, effect=1.0)
    assert np.mean(p["or_delong"] < 0.05) > 0.8
    assert np.mean(p["or_jackknife"] < 0.05) > 0.8
