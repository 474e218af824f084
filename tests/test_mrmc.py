"""MRMC (Obuchowski-Rockette / Hillis) and lesion-clustered AUC against published values,
hand computations and brute force.

The Van Dyke (1993) fixture in ``tests/data/mrmc`` holds the ratings and 190 published
values (RJafroc, MRMCaov, OR-DBM MRMC) with per-value tolerances; every value except the
"unbiased" covariance estimator (not implemented here) is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from benchmark.analysis.clustered_auc import auc_covariance, clustered_auc_ci, clustered_delong_test
from benchmark.analysis.mrmc import error_covariances, or_analysis
from benchmark.analysis.stats import delong_covariance, delong_test

FIXTURE = Path(__file__).resolve().parent / "data" / "mrmc"  # vandyke.csv + reference_values.json (with sources)


def _vandyke() -> tuple[np.ndarray, np.ndarray]:
    d = pd.read_csv(FIXTURE / "vandyke.csv").sort_values(["treatment", "reader", "case"])
    y = d[(d.treatment == 1) & (d.reader == 1)].truth.to_numpy()
    ratings = d.rating.to_numpy(dtype=float).reshape(2, 5, len(y))
    return y, ratings


def _computed_values() -> dict[str, float]:
    """Every quantity of the published Van Dyke analyses, computed here, keyed like reference_values.json."""
    y, ratings = _vandyke()
    out: dict[str, float] = {}
    for method, key in (("jackknife", "jackknife"), ("delong", "DeLong")):
        a = or_analysis(y, ratings, None, method)
        c = a.components
        if method == "jackknife":
            for i in range(2):
                for j in range(5):
                    out[f"auc[t{i + 1},r{j + 1}]"] = a.auc[i, j]
                    out[f"jackknife.auc_StdErr[t{i + 1},r{j + 1}]"] = np.sqrt(a.cov[i * 5 + j, i * 5 + j])
                out[f"auc_mean[t{i + 1}]"] = a.auc[i].mean()
            out["auc_diff[t1-t2]"] = a.rrrc.contrasts[0].diff
            out.update(msT=c.ms_t, msR=c.ms_r, msTR=c.ms_tr)
            for i, s in enumerate(a.rrfc.single):
                out[f"msR_single[t{i + 1}]"] = s.se**2 * 5
            r = a.rrfc
            out.update({"RRFC.F": r.statistic, "RRFC.df2": r.df2, "RRFC.p": r.p})
            out["RRFC.diff_StdErr"] = r.contrasts[0].se
            out["RRFC.diff_CI_lower"], out["RRFC.diff_CI_upper"] = r.contrasts[0].low, r.contrasts[0].high
            for i, s in enumerate(r.single):
                out[f"RRFC.single[t{i + 1}].StdErr"] = s.se
                out[f"RRFC.single[t{i + 1}].CI_lower"], out[f"RRFC.single[t{i + 1}].CI_upper"] = s.low, s.high
        comp = {"Var": c.var, "Cov1": c.cov1, "Cov2": c.cov2, "Cov3": c.cov3, "VarR": c.var_r, "VarTR": c.var_tr}
        comp.update(rho_Cov1=c.rho1, rho_Cov2=c.rho2, rho_Cov3=c.rho3)
        out.update({f"{key}.{k}": v for k, v in comp.items()})
        ec = error_covariances(a.cov, 2, 5)
        for i in range(2):
            out[f"{key}.Var_single[t{i + 1}]"] = ec["var_t"][i]
            out[f"{key}.Cov2_single[t{i + 1}]"] = ec["cov2_t"][i]
        for j in range(5):
            out[f"{key}.Var_reader[r{j + 1}]"] = ec["var_r"][j]
            out[f"{key}.Cov1_reader[r{j + 1}]"] = ec["cov1_r"][j]
        r = a.rrrc
        dc = r.contrasts[0]
        out.update(
            {
                f"{key}.RRRC.denominator": r.denominator,
                f"{key}.RRRC.F": r.statistic,
                f"{key}.RRRC.ddf_H": r.df2,
                f"{key}.RRRC.p": r.p,
                f"{key}.RRRC.diff_StdErr": dc.se,
                f"{key}.RRRC.diff_t": dc.statistic,
                f"{key}.RRRC.diff_CI_lower": dc.low,
                f"{key}.RRRC.diff_CI_upper": dc.high,
            }
        )
        for i, s in enumerate(r.single):
            base = f"{key}.RRRC.single[t{i + 1}]"
            out.update({f"{base}.StdErr": s.se, f"{base}.df": s.df})
            out.update({f"{base}.CI_lower": s.low, f"{base}.CI_upper": s.high})
        f = a.frrc
        fc = f.contrasts[0]
        out.update(
            {
                f"{key}.FRRC.denominator": f.denominator,
                f"{key}.FRRC.X2": f.statistic,
                f"{key}.FRRC.p": f.p,
                f"{key}.FRRC.diff_StdErr": fc.se,
                f"{key}.FRRC.diff_z": fc.statistic,
                f"{key}.FRRC.diff_CI_lower": fc.low,
                f"{key}.FRRC.diff_CI_upper": fc.high,
            }
        )
        for i, s in enumerate(f.single):
            base = f"{key}.FRRC.single[t{i + 1}]"
            out.update({f"{base}.StdErr": s.se, f"{base}.CI_lower": s.low, f"{base}.CI_upper": s.high})
        for j, pr in enumerate(f.per_reader):
            base = f"{key}.FRRC.reader[r{j + 1}]"
            out.update({f"{base}.diff": pr.diff, f"{base}.StdErr": pr.se, f"{base}.z": pr.statistic, f"{base}.p": pr.p})
            out.update({f"{base}.CI_lower": pr.low, f"{base}.CI_upper": pr.high})
        # reader 1 analysed alone (FRRC with one reader)
        one = or_analysis(y, ratings[:, :1], None, method)
        assert one.rrrc is None and one.rrfc is None
        out.update(
            {
                f"{key}.reader1_only.X2": one.frrc.statistic,
                f"{key}.reader1_only.p": one.frrc.p,
                f"{key}.reader1_only.Var": one.components.var,
                f"{key}.reader1_only.Cov1": one.components.cov1,
                f"{key}.reader1_only.Var[t1]": one.cov[0, 0],
                f"{key}.reader1_only.Var[t2]": one.cov[1, 1],
            }
        )
        # treatment 1 analysed alone: the per-reader AUC variances
        _, cov_t1 = auc_covariance(y, ratings[0], None, method)
        for j in range(5):
            out[f"{key}.treatment1_only.Var[r{j + 1}]"] = cov_t1[j, j]
    pooled, _ = auc_covariance(np.tile(y, 10), ratings.reshape(1, -1), None)
    out["auc_pooled_all_ratings"] = pooled[0]
    return out


def test_vandyke_published_values() -> None:
    """All 177 published jackknife, DeLong and covariance-free Van Dyke values within their tolerances."""
    ref = json.loads((FIXTURE / "reference_values.json").read_text())["values"]
    expected = [v for v in ref if v["cov"] != "unbiased"]
    assert len(expected) >= 170
    got = _computed_values()
    missing = [v["id"] for v in expected if v["id"] not in got]
    assert not missing, f"not computed: {missing}"
    bad = [
        (v["id"], v["value"], float(got[v["id"]]))
        for v in expected
        if not abs(float(got[v["id"]]) - v["value"]) <= v["tol"] + 1e-12
    ]
    assert not bad, f"{len(bad)} values outside tolerance, e.g. {bad[:5]}"
    # the check covers every family of the fixture
    families = {re.sub(r"\[.*?\]", "", v["id"]).split(".")[0] for v in expected}
    assert {"jackknife", "DeLong", "RRFC", "auc", "msT"} <= families


def test_mrmc_contrast_sign_and_names() -> None:
    y, ratings = _vandyke()
    a = or_analysis(y, ratings, None, "jackknife", treatments=["SE", "CINE"])
    fwd, back = a.contrast("SE", "CINE"), a.contrast("CINE", "SE")
    assert fwd.diff == pytest.approx(-back.diff) and fwd.p == pytest.approx(back.p)
    assert fwd.low == pytest.approx(-back.high)
    with pytest.raises(KeyError):
        a.contrast("SE", "nope")


# ---------------------------------------------------------------------------------------
# lesion-clustered AUC


def _psi(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])


def test_clustered_delong_hand_example() -> None:
    """Lesions P1 (0.9, 0.6) and P2 (0.4) positive, N1 (0.5, 0.3) and N2 (0.7) negative.

    By hand: AUC = 6/9; V10 = (5/3, 1/3), V01 = (5/3, 1/3); S10 = S01 = 2/(1*3) * 2/9 = 4/27;
    Var = S10/3 + S01/3 = 8/81 (the image-level DeLong variance is 6/81). Jackknife: leaving out
    P1, P2, N1, N2 gives 1/3, 5/6, 1/3, 5/6, so Var = 3/4 * 4 * (1/4)^2 = 3/16.
    """
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.9, 0.6, 0.4, 0.5, 0.3, 0.7])
    lesion = ["P1", "P1", "P2", "N1", "N1", "N2"]
    auc, var = auc_covariance(y, s[None], lesion, "delong")
    assert auc[0] == pytest.approx(2 / 3) and var[0, 0] == pytest.approx(8 / 81, rel=1e-12)
    _, var_img = auc_covariance(y, s[None], None, "delong")
    assert var_img[0, 0] == pytest.approx(6 / 81, rel=1e-12)
    _, var_jk = auc_covariance(y, s[None], lesion, "jackknife")
    assert var_jk[0, 0] == pytest.approx(3 / 16, rel=1e-12)
    ci = clustered_auc_ci(y, s, lesion)
    assert ci.se == pytest.approx(np.sqrt(8 / 81)) and ci.n_lesions == 4 and ci.n_images == 6


def _views(rng: np.random.Generator, n_les: int) -> tuple[np.ndarray, np.ndarray]:
    views = rng.integers(2, 4, n_les)
    lesion = np.repeat(np.arange(n_les), views)
    label = (np.arange(n_les) % 2)[lesion]
    return label, lesion


def test_one_view_per_lesion_equals_image_level_delong() -> None:
    """Binary and 3-class macro AUC: clustered covariance with singleton lesions = DeLong (validated in test_stats)."""
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(23, int), np.zeros(31, int)]
    shared = rng.normal(size=54)
    a, b = y + shared + rng.normal(size=54), 0.5 * y + shared + rng.normal(size=54)
    auc, cov = auc_covariance(y, np.stack([a, b]), [f"l{i}" for i in range(54)])
    auc_ref, cov_ref = delong_covariance(y, [a, b])
    np.testing.assert_allclose(auc, auc_ref, atol=1e-12)
    np.testing.assert_allclose(cov, cov_ref, rtol=1e-10)
    # explicit psi kernel (independent of any midrank formula)
    psi = _psi(a[y == 1], a[y == 0])
    explicit = np.var(psi.mean(1), ddof=1) / 23 + np.var(psi.mean(0), ddof=1) / 31
    assert cov[0, 0] == pytest.approx(explicit, rel=1e-10)
    res, ref = clustered_delong_test(y, a, b, None), delong_test(y, a, b)
    assert res.p == pytest.approx(ref.p, rel=1e-10) and res.z == pytest.approx(ref.z, rel=1e-10)
    y3 = rng.integers(0, 3, 80)
    p1 = rng.dirichlet(np.ones(3), 80) + 0.7 * np.eye(3)[y3]
    p2 = rng.dirichlet(np.ones(3), 80) + 0.3 * np.eye(3)[y3]
    auc3, cov3 = auc_covariance(y3, np.stack([p1, p2]), None)
    auc3_ref, cov3_ref = delong_covariance(y3, [p1, p2])
    np.testing.assert_allclose(auc3, auc3_ref, atol=1e-12)
    np.testing.assert_allclose(cov3, cov3_ref, rtol=1e-10)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_jackknife_equals_brute_force_leave_one_lesion_out(n_classes: int) -> None:
    rng = np.random.default_rng(5)
    _, lesion = _views(rng, 24)
    y = lesion % n_classes
    if n_classes == 2:  # one lesion with both classes exercises the within-lesion pair term
        y[lesion == 0] = [0, 1, 1][: int((lesion == 0).sum())]
        scores = np.round(y + rng.normal(size=(2, len(y))), 1)
    else:
        scores = rng.dirichlet(np.ones(3), (2, len(y))) + 0.5 * np.eye(3)[y]

    def fom(s: np.ndarray, yy: np.ndarray) -> float:
        if n_classes == 2:
            return roc_auc_score(yy, s)
        return float(np.mean([roc_auc_score(yy == c, s[:, c]) for c in range(3)]))

    jack = np.array([[fom(scores[r][lesion != k], y[lesion != k]) for k in range(24)] for r in range(2)])
    dev = jack - jack.mean(1, keepdims=True)
    expected = 23 / 24 * dev @ dev.T
    auc, cov = auc_covariance(y, scores, lesion, "jackknife")
    np.testing.assert_allclose(auc, [fom(scores[r], y) for r in range(2)], atol=1e-12)
    np.testing.assert_allclose(cov, expected, rtol=1e-9)


def test_clustered_delong_variance_matches_monte_carlo() -> None:
    """With a shared lesion effect across 2-3 views, the clustered variance tracks the true sampling
    variance of the AUC difference; the image-level DeLong variance falls well short of it."""
    rng = np.random.default_rng(11)
    label, lesion = _views(rng, 80)
    reps = 1500
    les_eff = rng.normal(size=(reps, 80))[:, lesion]
    shared_a = rng.normal(size=(reps, 80))[:, lesion] * 0.8
    a = 1.0 * label + les_eff + shared_a + 0.5 * rng.normal(size=(reps, len(label)))
    b = 1.0 * label + les_eff + 0.8 * rng.normal(size=(reps, 80))[:, lesion] + 0.5 * rng.normal(size=(reps, len(label)))
    scores = np.stack([a, b], axis=1)
    auc, cov = auc_covariance(label, scores, lesion, "delong")
    _, cov_img = auc_covariance(label, scores, None, "delong")
    _, cov_jk = auc_covariance(label, scores, lesion, "jackknife")
    contrast = np.array([1.0, -1.0])
    true_var = np.var(auc @ contrast, ddof=1)
    est = np.mean(np.einsum("i,rij,j->r", contrast, cov, contrast))
    est_jk = np.mean(np.einsum("i,rij,j->r", contrast, cov_jk, contrast))
    est_img = np.mean(np.einsum("i,rij,j->r", contrast, cov_img, contrast))
    assert est == pytest.approx(true_var, rel=0.15)
    assert est_jk == pytest.approx(true_var, rel=0.15)
    assert est_img < 0.7 * true_var


def test_bad_input_names_the_fix() -> None:
    y = np.array([1, 1, 0, 0])
    with pytest.raises(ValueError, match="one lesion id per test image"):
        auc_covariance(y, np.ones((1, 4)), ["a", "b"])
    with pytest.raises(ValueError, match="jackknife"):
        auc_covariance(y, np.arange(4.0)[None], ["a", "a", "b", "c"], "bootstrap")
    with pytest.raises(ValueError, match="same seeds"):
        or_analysis(y, [[np.ones(4), np.ones(4)], [np.ones(4)]], None)


def test_or_analysis_probability_forms_agree() -> None:
    """(I, J, N, 2) probabilities give the binary analysis of the class-1 scores; a 3-class analysis
    uses the macro one-vs-rest AUC of each (method, seed)."""
    rng = np.random.default_rng(8)
    lesion = np.repeat(np.arange(40), 2)
    y = lesion % 2
    p1 = 1 / (1 + np.exp(-(y + rng.normal(size=(2, 3, 80)))))
    two = or_analysis(y, np.stack([1 - p1, p1], -1), lesion)
    one = or_analysis(y, p1, lesion)
    np.testing.assert_allclose(two.cov, one.cov, rtol=1e-12)
    assert two.rrrc.p == pytest.approx(one.rrrc.p, rel=1e-12)
    y3 = lesion % 3
    p3 = rng.dirichlet(np.ones(3), (2, 3, 80)) + 0.5 * np.eye(3)[y3]
    three = or_analysis(y3, p3, lesion, "jackknife")
    macro = np.mean([roc_auc_score(y3 == c, p3[1, 2, :, c]) for c in range(3)])
    assert three.auc[1, 2] == pytest.approx(macro, abs=1e-12)
