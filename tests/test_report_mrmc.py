"""The report's statistics equal direct calls of the analysis functions on crafted run files
with a known lesion structure (2-3 views per lesion): primary MRMC test, its power, Hsu's MCB,
the gap-closed interval, single-model intervals, and the WLI-oracle reference row."""

from __future__ import annotations

import csv
import math
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmark.analysis.bootstrap import gap_closed_ci
from benchmark.analysis.clustered_auc import clustered_auc_ci
from benchmark.analysis.mcb import mcb_from_analysis
from benchmark.analysis.mrmc import or_analysis
from benchmark.analysis.power import design_from_analysis, detectable_difference, min_detectable_difference
from benchmark.reporting import build_report
from benchmark.reporting.document import N_BOOT_GAP
from benchmark.training.runfile import SCHEMA_VERSION, run_path, write_json_atomic

N_LESIONS = 48
VIEWS = 2 + (np.arange(N_LESIONS) % 2)  # 2 or 3 views per lesion
LESION = np.repeat(np.arange(N_LESIONS), VIEWS)
Y = LESION % 2
LESION_IDS = [f"L{i:03d}" for i in LESION]
N_BOOT = 300
STUDENTS = {"baseline": 0.5, "kd": 0.7, "strong": 2.0}
SEEDS = (0, 1, 2)


def _prob(name: str, seed: int, strength: float) -> np.ndarray:
    """Scores that share a lesion effect across views, methods and seeds (views are not independent)."""
    lesion_effect = np.random.default_rng(7).normal(size=N_LESIONS)[LESION]
    rng = np.random.default_rng(zlib.crc32(f"{name}/{seed}".encode()))
    logit = strength * Y + lesion_effect + 0.4 * rng.normal(size=len(Y)) + 0.2 * rng.normal() * Y
    p = 1 / (1 + np.exp(-logit))
    return np.c_[1 - p, p]


def _record(regime: str, method: str, seed: int, strength: float, lesion: bool = True) -> dict:
    prob = _prob(f"{regime}/{method}", seed, strength)
    return {
        "schema": SCHEMA_VERSION,
        "status": "ok",
        "dataset": "twin",
        "synthetic": True,
        "regime": regime,
        "method": method,
        "seed": seed,
        "profile": "smoke",
        "config": {"dataset": "twin", "regime": regime, "method": method, "seed": seed,
                   "profile": {"name": "smoke"}},
        "config_hash": f"h-{regime}-{method}-{seed}",
        "provenance": {"versions": {}, "git_commit": "c0ffee", "date": "2026-01-01T00:00:00+00:00"},
        "data": {"provenance": {"generator": "datasets.synthetic"}, "classes": ["a", "b"]},
        "method_info": {"name": method, "summary": method},
        "metrics": {},
        "predictions": {
            "classes": ["a", "b"],
            "y": Y.tolist(),
            "prob": prob.tolist(),
            **({"lesion": LESION_IDS} if lesion else {}),
            "source": [f"{'nbi' if regime == 'teacher' else 'wli'}/{i}.png" for i in range(len(Y))],
        },
        "error": None,
    }


def _write(out: Path, lesion: bool = True) -> None:
    recs = []
    for seed in SEEDS:
        recs.append(_record("teacher", "teacher-nbi", seed, 3.0, lesion))
        oracle = _record("oracle", "baseline", seed, 1.5, lesion)
        oracle["reference"] = "wli-oracle"
        oracle["oracle"] = {"factor": 5, "base_regime": "all", "train_lesions": 240, "base_train_lesions": 48}
        recs.append(oracle)
        recs += [_record("all", m, seed, s, lesion) for m, s in STUDENTS.items()]
    recs.append(_record("all", "partial", 0, 1.0, lesion))  # one seed only: left out of the MCB design
    recs.append(_record("unpaired", "baseline", 0, 0.5, lesion))  # one seed: a single model
    recs.append(_record("unpaired", "kd", 0, 0.7, lesion))
    for rec in recs:
        write_json_atomic(run_path(out, rec["dataset"], rec["regime"], rec["method"], rec["seed"]), rec)


def _probs(regime: str, method: str) -> list[np.ndarray]:
    return [_prob(f"{regime}/{method}", s, STUDENTS.get(method, 1.5)) for s in SEEDS]


def _csv(root: Path, name: str) -> list[dict[str, str]]:
    with (root / "report" / "tables" / f"{name}.csv").open() as fh:
        return list(csv.DictReader(fh))


def _close(text: str, value: float) -> bool:
    return math.isclose(float(text), value, rel_tol=1e-5, abs_tol=1e-12)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("mrmc")
    _write(out)
    path = build_report(out, n_boot=N_BOOT)
    return out, path.read_text()


def test_primary_test_and_power_equal_direct_calls(built: tuple[Path, str]) -> None:
    root, text = built
    rows = {(r["method"], r["regime"]): r for r in _csv(root, "twin_vs_baseline")}
    assert set(rows) == {("kd", "all"), ("strong", "all"), ("partial", "all"), ("kd", "unpaired")}  # no references
    direct = {m: or_analysis(Y, [_probs("all", m), _probs("all", "baseline")], LESION_IDS, "delong", [m, "baseline"])
              for m in ("kd", "strong")}
    images_as_cases = or_analysis(Y, [_probs("all", "strong"), _probs("all", "baseline")], None)
    m = 2  # the comparisons with a primary p (the one-seed rows have none)
    for method, an in direct.items():
        c = an.contrast(method, "baseline", "RRRC")
        row = rows[(method, "all")]
        assert _close(row["p_mrmc"], c.p) and _close(row["dauc"], c.diff)
        assert _close(row["dauc_ci_low"], c.low) and _close(row["dauc_ci_high"], c.high)
        assert _close(row["detectable_dauc"], detectable_difference(an, alpha=0.05 / m))
        assert _close(row["p_frrc"], an.contrast(method, "baseline", "FRRC").p)
    # the views of a lesion are one case: treating images as cases gives another p
    assert not _close(rows[("strong", "all")]["p_mrmc"], images_as_cases.contrast("1", "2", "RRRC").p)
    assert rows[("kd", "unpaired")]["p_mrmc"] == "" and "one seed" in rows[("kd", "unpaired")]["mrmc_note"]
    # power: the per-dataset line and the summary table
    dd = [detectable_difference(an, alpha=0.05 / m) for an in direct.values()]
    (power,) = _csv(root, "power")
    assert _close(power["detectable_dauc_median"], float(np.median(dd))) and power["holm_family_size"] == "2"
    assert f"**{100 * float(np.median(dd)):.2f} AUC points** (median over the comparisons" in text
    # planned seed counts: the same components with more readers, as a direct call gives them
    planned = {j: float(np.median([min_detectable_difference(design_from_analysis(an), j, None, 0.05 / m)
                                   for an in direct.values()])) for j in (5, 8, 10, 20)}
    for j, v in planned.items():
        assert _close(power[f"planned_{j}_seeds"], v), j
    # the primary test's Holm family is the dataset's table: strong stays significant, marked * in the main table
    assert float(rows[("strong", "all")]["p_mrmc_holm"]) < 0.05
    main = {(r["method"], r["regime"]): r for r in _csv(root, "twin_main")}
    assert main[("strong", "all")]["AUC_sig_vs_baseline"].startswith("*")


def test_oracle_is_a_reference_row_outside_comparisons(built: tuple[Path, str]) -> None:
    root, text = built
    main = {(r["method"], r["regime"]): r for r in _csv(root, "twin_main")}
    assert ("baseline", "oracle") in main
    assert "| WLI oracle (5 x WLI training lesions) | 240 WLI train lesions, 5 x D_p+D_unp | 3 |" in text
    order = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| NBI teacher")
             or line.startswith("| WLI oracle") or line.startswith("| baseline")][:3]
    assert order == ["NBI teacher (upper bound)", "WLI oracle (5 x WLI training lesions)", "baseline"]
    assert "dotted: WLI oracle (5 x WLI training lesions)" in text  # the AUC figure draws its line
    summary = _csv(root, "auc_summary")
    assert any(r["row"].startswith("WLI oracle") for r in summary)
    assert all(r["regime"] != "oracle" for r in _csv(root, "twin_vs_baseline") + _csv(root, "twin_vs_best"))
    assert all(r["regime"] != "oracle" for r in _csv(root, "gap_closed"))
    # not a baseline row either: the summary's baseline is a student regime
    base = next(r for r in summary if r["row"].startswith("student only"))
    assert base["twin [SYNTHETIC]_regime"] != "oracle"


def test_mcb_and_gap_closed_interval_equal_direct_calls(built: tuple[Path, str]) -> None:
    root, text = built
    names = list(STUDENTS)
    an = or_analysis(Y, [_probs("all", m) for m in names], LESION_IDS, "delong", names)
    expected = {r.method: r for r in mcb_from_analysis(an)}
    rows = [r for r in _csv(root, "twin_vs_best") if r["regime"] == "all"]
    assert {r["method"] for r in rows} == set(names)  # the one-seed method is left out, not the whole design
    assert "partial with D_p+D_unp (too few seeds shared with the others)" in text
    for r in rows:
        e = expected[r["method"]]
        assert _close(r["mcb_low"], e.low) and _close(r["mcb_high"], e.high)
        assert r["verdict"] == ("best" if e.is_best else "can be best" if e.can_be_best else "not best")
    assert "p_" not in "".join(rows[0])  # no p-values against the best
    gap = next(r for r in _csv(root, "gap_closed") if r["method"] == "strong")
    teacher = [_prob("teacher/teacher-nbi", s, 3.0) for s in SEEDS]
    res = gap_closed_ci(Y, _probs("all", "strong"), _probs("all", "baseline"), LESION_IDS, teacher, Y, LESION_IDS,
                        n_boot=min(N_BOOT, N_BOOT_GAP))
    assert _close(gap["gap_ci_low_pct"], 100 * res.low) and _close(gap["gap_ci_high_pct"], 100 * res.high)


def test_single_model_interval_is_the_clustered_delong_ci(built: tuple[Path, str]) -> None:
    root, _ = built
    row = next(r for r in _csv(root, "twin_main") if (r["method"], r["regime"]) == ("kd", "unpaired"))
    ci = clustered_auc_ci(Y, _prob("unpaired/kd", 0, 0.7), LESION_IDS)
    assert row["AUC_ci_method"] == "lesion-clustered DeLong"
    assert _close(row["AUC_ci_low"], ci.low) and _close(row["AUC_ci_high"], ci.high)
    multi = next(r for r in _csv(root, "twin_main") if (r["method"], r["regime"]) == ("kd", "all"))
    assert multi["AUC_ci_method"] == "BCa lesion bootstrap"


def test_run_files_without_lesion_ids_count_images_as_cases(tmp_path: Path) -> None:
    _write(tmp_path, lesion=False)
    text = build_report(tmp_path, n_boot=50).read_text()
    row = next(r for r in _csv(tmp_path, "twin_vs_baseline") if (r["method"], r["regime"]) == ("strong", "all"))
    an = or_analysis(Y, [_probs("all", "strong"), _probs("all", "baseline")], None)
    assert _close(row["p_mrmc"], an.contrast("1", "2", "RRRC").p)
    assert "no lesion ids in the run files: each test image counted as its own case" in text


def test_reference_table_sets_teacher_oracle_and_baseline_side_by_side(built: tuple[Path, str]) -> None:
    root, _ = built
    (row,) = _csv(root, "references")
    from sklearn.metrics import roc_auc_score

    def seed_mean(name: str, strength: float) -> float:
        return float(np.mean([roc_auc_score(Y, _prob(name, s, strength)[:, 1]) for s in SEEDS]))

    teacher, oracle = seed_mean("teacher/teacher-nbi", 3.0), seed_mean("oracle/baseline", 1.5)
    base = seed_mean("all/baseline", 0.5)
    assert _close(row["teacher_auc"], teacher) and _close(row["oracle_auc"], oracle)
    assert _close(row["baseline_auc"], base) and row["baseline_seeds"] == "3"  # D_p+D_unp, not the one-seed D_unp
    assert _close(row["oracle_minus_baseline"], oracle - base)


def test_null_simulation_rates_are_quoted(built: tuple[Path, str]) -> None:
    from benchmark.reporting.sections.reading import null_rates

    _, text = built
    rates = null_rates().rates
    assert f"is {rates['or_delong']:.3f} for the primary test" in text
    assert 0.03 <= rates["or_delong"] <= 0.07 < rates["delong_seed_averaged"]


def test_auc_figure_draws_the_teacher_and_oracle_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.analysis import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, stem: drawn.append(fig) or [])
    bars = [figures.AucBar("D_p", "kd", 0.7, 0.65, 0.75)]
    figures.auc_bars("t", bars, tmp_path / "a", 0.9, "teacher", oracle_auc=0.8, oracle_label="WLI oracle")
    figures.auc_bars("t", bars, tmp_path / "b", 0.9, "teacher")
    with_oracle, without = ([(line.get_ydata()[0], line.get_linestyle(), line.get_label())
                             for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
                            for fig in drawn)  # labelled lines: the reference lines, not the CI whiskers
    assert (0.8, ":", "WLI oracle 0.800") in with_oracle and (0.9, "--", "teacher 0.900") in with_oracle
    assert [y for y, _, _ in without] == [0.9]
