"""Hsu's MCB and Dunnett's critical values against published tables and independent numerics;
Iman-Davenport against Demšar's (2006) worked example; Friedman over dataset blocks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from benchmark.analysis.mcb import dunnett_one_sided, hsu_mcb, mcb_from_analysis
from benchmark.analysis.mrmc import or_analysis
from benchmark.analysis.ranking import (
    HOLM_FAMILIES,
    dataset_blocks,
    friedman_by_dataset,
    friedman_chi2_from_ranks,
    iman_davenport,
)

FIXTURE = Path(__file__).resolve().parent / "data" / "mrmc"


@pytest.mark.parametrize(
    ("n_comp", "df", "published"),
    # Dunnett (JASA 50:1096, 1955), Table 1a: one-sided, alpha = 0.05, 2 decimals
    [(2, math.inf, 1.92), (3, math.inf, 2.06), (4, math.inf, 2.16), (2, 10, 2.15), (3, 10, 2.34), (4, 10, 2.47),
     (2, 20, 2.03), (3, 20, 2.19), (4, 20, 2.30)],
)
def test_dunnett_one_sided_matches_published_table(n_comp: int, df: float, published: float) -> None:
    assert dunnett_one_sided(n_comp, df) == pytest.approx(published, abs=0.006)


def test_dunnett_one_sided_matches_independent_numerics() -> None:
    # one comparison: the one-sided t (or normal) quantile
    assert dunnett_one_sided(1, 10) == pytest.approx(sps.t.ppf(0.95, 10), abs=1e-6)
    assert dunnett_one_sided(1) == pytest.approx(sps.norm.ppf(0.95), abs=1e-6)
    # three comparisons, infinite df: scipy's multivariate normal cdf (Genz) at the critical value
    c = dunnett_one_sided(3)
    cov = np.full((3, 3), 0.5) + 0.5 * np.eye(3)
    assert sps.multivariate_normal(np.zeros(3), cov).cdf(np.full(3, c)) == pytest.approx(0.95, abs=2e-4)


def test_hsu_mcb_hand_example() -> None:
    """Means 0.80, 0.78, 0.70, se 0.02, infinite df: d = 1.9163 (2 comparisons), d se = 0.038327.
    a: diff +0.02 -> [-0.018327, 0.058327]; b: diff -0.02 -> [-0.058327, 0.018327] (can be best);
    c: diff -0.10 -> [-0.138327, 0] (not the best)."""
    rows = {r.method: r for r in hsu_mcb({"a": 0.80, "b": 0.78, "c": 0.70}, se=0.02)}
    ds = 1.9163319 * 0.02
    assert rows["a"].low == pytest.approx(0.02 - ds, abs=1e-6) and rows["a"].high == pytest.approx(0.02 + ds, abs=1e-6)
    assert rows["b"].low == pytest.approx(-0.02 - ds, abs=1e-6)
    assert rows["b"].high == pytest.approx(-0.02 + ds, abs=1e-6)
    assert rows["c"].high == 0.0 and rows["c"].low == pytest.approx(-0.10 - ds, abs=1e-6)
    assert [rows[m].can_be_best for m in "abc"] == [True, True, False]
    assert not any(r.is_best for r in rows.values())
    # a clear winner is declared the best (lower bound 0); lower-is-better flips the roles
    clear = {r.method: r for r in hsu_mcb({"a": 0.90, "b": 0.78, "c": 0.70}, se=0.02)}
    assert clear["a"].is_best and clear["a"].low == 0.0
    flipped = {r.method: r for r in hsu_mcb({"a": 0.90, "b": 0.78, "c": 0.70}, se=0.02, higher_is_better=False)}
    assert flipped["c"].can_be_best and not flipped["a"].can_be_best


def test_mcb_from_the_vandyke_analysis() -> None:
    """Two treatments: MCB is the one-sided RRRC t test (t = 2.111 on 15.26 df > t_0.95 = 1.75)."""
    d = pd.read_csv(FIXTURE / "vandyke.csv").sort_values(["treatment", "reader", "case"])
    y = d[(d.treatment == 1) & (d.reader == 1)].truth.to_numpy()
    a = or_analysis(y, d.rating.to_numpy(float).reshape(2, 5, len(y)), None, "jackknife", treatments=["SE", "CINE"])
    rows = {r.method: r for r in mcb_from_analysis(a)}
    half = sps.t.ppf(0.95, 15.259674589141746) * 0.02074861837894499
    assert rows["CINE"].is_best and rows["CINE"].high == pytest.approx(0.0438003221 + half, abs=1e-6)
    assert not rows["SE"].can_be_best


def test_iman_davenport_on_demsar_worked_example() -> None:
    """Demšar (JMLR 2006), section 3.2.2: four C4.5 variants on 14 data sets, average ranks
    3.143, 2.000, 2.893, 1.964 give chi2_F = 9.28 and F_F = 3.69; F(3, 39) critical value 2.85."""
    chi2 = friedman_chi2_from_ranks([3.143, 2.000, 2.893, 1.964], 14)
    assert chi2 == pytest.approx(9.28, abs=0.005)
    f, df1, df2, p = iman_davenport(chi2, 14, 4)
    assert f == pytest.approx(3.69, abs=0.005) and (df1, df2) == (3, 39)
    assert sps.f.ppf(0.95, df1, df2) == pytest.approx(2.85, abs=0.005) and p < 0.05


def test_friedman_uses_datasets_as_blocks() -> None:
    rows = []
    for ds, base in (("d1", 0.70), ("d2", 0.80), ("d3", 0.60), ("d4", 0.75)):
        for regime, shift in (("all", 0.0), ("few", -0.05)):
            # b beats c in one regime and loses to it in the other: only the mean over regimes counts
            for method, gain in (("a", 0.06), ("b", 0.05 if regime == "all" else -0.03), ("c", 0.0)):
                rows.append({"dataset": ds, "regime": regime, "method": method, "score": base + shift + gain})
    frame = pd.DataFrame(rows)
    table = dataset_blocks(frame)
    assert table.shape == (4, 3)
    assert table.loc["d1", "b"] == pytest.approx(0.70 - 0.025 + 0.01)
    res = friedman_by_dataset(frame)
    assert res.friedman.n_blocks == 4 and res.friedman.statistic == pytest.approx(8.0)  # identical ranks a>b>c
    assert res.iman_davenport_f == math.inf and res.iman_davenport_p == 0.0
    with pytest.raises(ValueError, match="score"):
        dataset_blocks(frame.drop(columns="score"))
    assert "Against the baseline" in HOLM_FAMILIES
