"""One dataset: its main table, comparisons against the baseline and the best method, ROC and AUC figures."""

from __future__ import annotations

import math

import numpy as np

from ...analysis import figures
from ...analysis.mcb import mcb_from_analysis
from ...analysis.power import detectable_difference
from ...analysis.stats import wilcoxon_min_n
from ..comparisons import (
    ALPHA,
    MARK_MRMC,
    MARK_T,
    NO_LESIONS,
    POWER,
    Comparison,
    analyse,
    compare,
    holm_fill,
)
from ..document import CI_BOOT, CI_DELONG, MARK_SINGLE, Report
from ..naming import (
    BASELINE,
    method_label,
    regime_key,
    regime_name,
)
from ..runs import Cell
from ..tables import Table, TCell, best_value, fmt_p, pct, slug
from .curves import add_curve_figures

METRICS_SHOWN = (("acc", "Acc"), ("f1", "F1"), ("auc", "AUC"))



def dataset_section(doc: Report, ds: str) -> None:
    label = doc.r.label(ds)
    cells = doc.r.dataset_cells(ds)
    doc.emit(f"## {label}", "")
    if not cells:
        doc.emit("No finished runs for this dataset (see the run inventory).", "")
        return
    students = [c for c in cells if not c.is_reference]
    vs_base = baseline_comparisons(doc, ds)
    sig = {(c.a.regime, c.a.method): c for c in vs_base}
    best = {m: best_value(c.mean(m) for c in students) for m, _ in METRICS_SHOWN}
    table = Table(
        f"{slug(ds)}_main",
        f"{label}: WLI test set, Acc / F1 / AUC (%)",
        ["method", "training data", "n", "Acc", "F1", "AUC", "AUC 95% CI"],
        numeric={2, 3, 4, 5, 6},
    )
    ci_kinds = set()
    for c in cells:
        row = [
            TCell(c.label, {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "method": c.method}),
            TCell(c.data_label, {"regime": c.regime}),
            TCell(str(len(c.seeds)), {"n_seeds": len(c.seeds)}),
        ]
        for m, name in METRICS_SHOWN:
            mean, std = c.mean(m), c.std(m)
            text = pct(mean, std)
            marks = ""
            comp = sig.get((c.regime, c.method))
            if m == "auc" and comp is not None:
                if comp.p_mrmc_holm < ALPHA:
                    marks += MARK_MRMC
                if comp.p_t_holm < ALPHA:
                    marks += MARK_T
            bold = not c.is_reference and math.isfinite(mean) and bool(np.isclose(mean, best[m], rtol=0, atol=1e-12))
            row.append(
                TCell(
                    text,
                    {
                        f"{name}_mean": mean,
                        f"{name}_std": std,
                        **({f"{name}_sig_vs_baseline": marks} if m == "auc" else {}),
                    },
                    bold,
                    marks,
                )
            )
        low, high, how = doc.ci(c)
        ci_kinds.add(how)
        mark = MARK_SINGLE if how == CI_DELONG else ""
        ci_text = f"[{100 * low:.1f}, {100 * high:.1f}]{mark}" if math.isfinite(low) else "—"
        row.append(TCell(ci_text, {"AUC_ci_low": low, "AUC_ci_high": high, "AUC_ci_method": how}))
        table.rows.append(row)
    table.notes.append(
        f"{label}. {MARK_MRMC} primary test (Obuchowski-Rockette MRMC, Hillis ddf, seeds and lesions random), "
        f"{MARK_T} secondary paired t-test over seeds (test lesions fixed): different from `{BASELINE}` with the "
        f"same training data, Holm-corrected within this dataset's comparisons with `{BASELINE}`, α = {ALPHA}. "
        f"AUC 95% CI: {CI_BOOT} of the seed-mean AUC ({doc.n_boot:,} resamples)"
        + (f"; {MARK_SINGLE} one model (one seed): {CI_DELONG} Wald interval" if CI_DELONG in ci_kinds else "")
        + ". Teachers are scored on test images of their own modality and the WLI oracle on the students' test "
        "images; both are reference rows, not students, and take part in no comparison or ranking."
    )
    if doc.r.synthetic.get(ds):
        table.notes.append("SYNTHETIC data: rendered twins, not patient images.")
    doc.add_table(table)
    if vs_base:
        doc.add_table(
            comparison_table(doc, ds, "vs_baseline", f"{label}: each method against `{BASELINE}`", vs_base)
        )
        power_line(doc, ds, vs_base)
    mcb_tables(doc, ds, students)
    dataset_figures(doc, ds, cells)
    add_curve_figures(doc, ds, cells)


def baseline_comparisons(doc: Report, ds: str) -> list[Comparison]:
    """Every student against ``baseline`` with the same training data: one Holm family per dataset (cached)."""
    if ds not in doc.vs_baseline:
        comps = [
            compare(c, b)
            for c in doc.r.dataset_cells(ds)
            if not c.is_reference and c.method != BASELINE and (b := doc.r.cell(ds, c.regime, BASELINE)) is not None
        ]
        holm_fill(comps)
        doc.vs_baseline[ds] = comps
    return doc.vs_baseline[ds]


def detectable_summary(comps: list[Comparison]) -> tuple[float, float, float, int] | None:
    """(median, min, max) of the primary test's detectable difference over a family, and the family size."""
    vals = [c.detectable for c in comps if math.isfinite(c.detectable)]
    if not vals:
        return None
    return float(np.median(vals)), min(vals), max(vals), comps[0].family_size


def planned_detectable(comps: list[Comparison], seeds: int) -> float:
    """Median over a family of the difference the primary test would detect with ``seeds`` seeds.

    The same variance components, test lesions and Holm first-step alpha as
    :func:`detectable_summary`; only the number of readers (seeds) changes. How the
    reference grid's seeds per dataset are chosen (README, "What the reference report shows").
    """
    m = comps[0].family_size if comps else 0
    vals = []
    for c in comps:
        if c.rrrc is None or not m:
            continue
        try:
            vals.append(detectable_difference(c.mrmc.analysis, n_readers=seeds, alpha=ALPHA / m, power=POWER))
        except ValueError:
            continue
    return float(np.median(vals)) if vals else math.nan


def power_line(doc: Report, ds: str, comps: list[Comparison]) -> None:
    summ = detectable_summary(comps)
    if summ is None:
        doc.emit(
            "Power: not computed (the primary test needs at least 2 common seeds on shared test images).", ""
        )
        return
    med, lo, hi, m = summ
    seeds = sorted({len(c.mrmc.seeds) for c in comps if c.rrrc is not None})
    cases = sorted({c.mrmc.analysis.components.n_cases for c in comps if c.rrrc is not None})
    spread = f"; range {100 * lo:.2f}–{100 * hi:.2f}" if hi > lo else ""
    doc.emit(
        f"**Power of the primary test ({doc.r.label(ds)}).** Smallest AUC difference detected with "
        f"{100 * POWER:.0f}% power at α = {ALPHA}/{m} = {ALPHA / m:.2g} (Holm's first step over the {m} "
        f"comparison(s) with `{BASELINE}`), from the measured OR variance components with "
        f"{'/'.join(map(str, seeds))} seeds and {'/'.join(map(str, cases))} test lesions: "
        f"**{100 * med:.2f} AUC points** (median over the comparisons{spread})."
        + (f" Note: {comps[0].mrmc.cases_note}." if comps[0].mrmc.cases_note else ""),
        "",
    )


def comparison_table(doc: Report, ds: str, kind: str, title: str, comps: list[Comparison]) -> Table:
    label = doc.r.label(ds)
    table = Table(
        f"{slug(ds)}_{kind}",
        title,
        [
            "method",
            "training data",
            "against",
            "n",
            "ΔAUC",
            "95% CI (MRMC)",
            "MRMC p (Holm)",
            "detectable Δ",
            "FRRC p (Holm)",
            "t-test p (Holm)",
            "Wilcoxon p (Holm)",
        ],
        numeric=set(range(3, 11)),
    )
    any_few = False
    notes = set()
    for c in comps:
        pr = c.paired
        few = bool(pr.wilcoxon_note) and "Wilcoxon" in pr.wilcoxon_note
        any_few |= few
        r, f = c.rrrc, c.frrc
        an = c.mrmc.analysis
        diff = float(an.auc[0].mean() - an.auc[1].mean()) if an is not None else pr.mean_diff
        why = c.mrmc.note or ("one seed: no RRRC" if an is not None and r is None else "")
        if why:
            notes.add(why)
        table.rows.append(
            [
                TCell(c.a.label, {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "method": c.a.method}),
                TCell(c.a.data_label, {"regime": c.a.regime}),
                TCell(c.b.method, {"against": c.b.method}),
                TCell(str(pr.n), {"n_common_seeds": pr.n}),
                TCell(pct(diff, digits=2), {"dauc": diff, "dauc_seed_std": pr.std_diff}),
                TCell(
                    f"[{100 * r.low:.2f}, {100 * r.high:.2f}]" if r else "—",
                    {"dauc_ci_low": r.low if r else math.nan, "dauc_ci_high": r.high if r else math.nan,
                     "mrmc_df": r.df if r else math.nan},
                ),
                TCell(
                    f"{fmt_p(r.p)} ({fmt_p(c.p_mrmc_holm)})" if r else f"— ({why or '—'})",
                    {"p_mrmc": r.p if r else math.nan, "p_mrmc_holm": c.p_mrmc_holm, "mrmc_note": why},
                ),
                TCell(pct(c.detectable, digits=2), {"detectable_dauc": c.detectable, "holm_family": c.family_size}),
                TCell(
                    f"{fmt_p(f.p)} ({fmt_p(c.p_frrc_holm)})" if f else "—",
                    {"p_frrc": f.p if f else math.nan, "p_frrc_holm": c.p_frrc_holm},
                ),
                TCell(f"{fmt_p(pr.p_t)} ({fmt_p(c.p_t_holm)})", {"p_t": pr.p_t, "p_t_holm": c.p_t_holm}),
                TCell(
                    f"{fmt_p(pr.p_wilcoxon)} ({fmt_p(c.p_w_holm)}){'°' if few else ''}",
                    {"p_wilcoxon": pr.p_wilcoxon, "p_wilcoxon_holm": c.p_w_holm, "wilcoxon_note": pr.wilcoxon_note},
                ),
            ]
        )
    table.notes.append(
        f"{label}. ΔAUC in percentage points: mean of per-seed AUCs of the method minus that of `against` over "
        "their common seeds (the tables' AUC and the MRMC figure of merit). Primary test: MRMC = "
        "Obuchowski-Rockette RRRC with Hillis ddf, seeds random readers, test lesions random cases (all views of "
        "a lesion one case), lesion-clustered DeLong covariance; its 95% CI is for ΔAUC. Detectable Δ: smallest "
        f"AUC difference this comparison's design detects with {100 * POWER:.0f}% power at Holm's first step "
        "(α / number of rows with a primary p). Secondary: FRRC (these seeds fixed, lesions random; with "
        "one seed the lesion-clustered DeLong test) answers whether these trained models differ on new lesions; "
        "the paired t-test and Wilcoxon over seeds answer whether new seeds would differ on these test lesions "
        "(they ignore lesion sampling). Raw p with the Holm-adjusted p in brackets: one Holm family per test "
        "over this table's rows."
    )
    if NO_LESIONS in {c.mrmc.cases_note for c in comps}:
        table.notes.append(f"Note: {NO_LESIONS}; views of one lesion are then treated as independent.")
    if any_few:
        table.notes.append(
            f"° too few seeds for the Wilcoxon test to reach p < {ALPHA} (it needs at least "
            f"{wilcoxon_min_n(ALPHA)} seeds with non-zero differences)."
        )
    if doc.r.synthetic.get(ds):
        table.notes.append("SYNTHETIC data: rendered twins, not patient images.")
    return table


def crossed(cells: list[Cell]) -> tuple[list[Cell], list[str]]:
    """A fully crossed design for MCB: leave out the methods with the fewest seeds until the rest share
    at least 2 seeds; returns the cells kept and the methods left out."""
    kept = sorted(cells, key=lambda c: (-len(c.seeds), c.method))
    left_out: list[str] = []
    while len(kept) >= 2 and len(set.intersection(*(set(c.ok) for c in kept))) < 2:
        left_out.append(kept.pop().method)
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(kept, key=lambda c: order[id(c)]), left_out


def mcb_tables(doc: Report, ds: str, students: list[Cell]) -> None:
    """Per training data: Hsu's MCB intervals against the best of the other methods (no p-values)."""
    label = doc.r.label(ds)
    table = Table(
        f"{slug(ds)}_vs_best",
        f"{label}: each method against the best of the others with the same training data (Hsu's MCB)",
        ["method", "training data", "n", "AUC", "Δ to best other", f"MCB {100 * (1 - ALPHA):.0f}% interval", "verdict"],
        numeric={2, 3, 4, 5},
    )
    skipped = []
    for regime in sorted({c.regime for c in students}, key=regime_key):
        group = [c for c in students if c.regime == regime and math.isfinite(c.mean("auc"))]
        if len(group) < 2:
            continue
        group, left_out = crossed(group)
        if left_out and len(group) >= 2:
            skipped.append(f"{', '.join(left_out)} with {regime_name(regime)} (too few seeds shared with the others)")
        an = analyse(group) if len(group) >= 2 else None
        if an is None or an.analysis is None or an.analysis.rrrc is None:
            why = an.note if an is not None and an.note else "fewer than 2 common seeds"
            skipped.append(f"{regime_name(regime)} ({why})")
            continue
        by_method = {c.method: c for c in group}
        for row in sorted(mcb_from_analysis(an.analysis), key=lambda r: -r.mean):
            c = by_method[row.method]
            verdict = "best" if row.is_best else "can be best" if row.can_be_best else "not best"
            table.rows.append(
                [
                    TCell(c.label, {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "method": c.method}),
                    TCell(c.data_label, {"regime": regime}),
                    TCell(str(len(an.seeds)), {"n_common_seeds": len(an.seeds)}),
                    TCell(pct(row.mean), {"auc_mean_common_seeds": row.mean}),
                    TCell(pct(row.diff_to_best_other, digits=2), {"dauc_to_best_other": row.diff_to_best_other}),
                    TCell(
                        f"[{100 * row.low + 0.0:.2f}, {100 * row.high + 0.0:.2f}]",
                        {"mcb_low": row.low, "mcb_high": row.high},
                    ),
                    TCell(verdict, {"verdict": verdict}),
                ]
            )
    if not table.rows:
        if skipped:
            doc.emit(f"Against the best method: not computed for {'; '.join(skipped)}.", "")
        return
    table.notes.append(
        f"{label}. Hsu's multiple comparisons with the best (constrained intervals, simultaneous "
        f"{100 * (1 - ALPHA):.0f}% per training data) for AUC(method) − max AUC(other methods), in AUC points, "
        "from one OR/Hillis MRMC analysis of all methods with that training data (common seeds; error term "
        "2 MSden / J, Hillis ddf). The intervals account for picking the best from the same data, so no p-values "
        "are shown. Verdict: `not best` when the upper bound is 0, `best` when the lower bound is 0, otherwise "
        "`can be best`."
    )
    if skipped:
        table.notes.append("Not computed: " + "; ".join(skipped) + ".")
    if doc.r.synthetic.get(ds):
        table.notes.append("SYNTHETIC data: rendered twins, not patient images.")
    doc.add_table(table)


def dataset_figures(doc: Report, ds: str, cells: list[Cell]) -> None:
    label = doc.r.label(ds)
    upper = doc.r.upper_bound(ds)
    panels: dict[str, list[figures.RocCurve]] = {}
    bars: list[figures.AucBar] = []
    for c in cells:
        if c.is_reference:
            continue
        runs = [c.ok[s] for s in c.seeds if c.ok[s].y is not None]
        if runs:
            try:
                tpr_by = [figures.mean_roc(r.y, [r.prob])[0] for r in runs]
                arr = np.array(tpr_by)
                std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
                panels.setdefault(regime_name(c.regime), []).append(
                    figures.RocCurve(f"{c.method} ({c.mean('auc'):.3f})", arr.mean(0), std)
                )
            except ValueError:
                pass
        low, high, _ = doc.ci(c)
        bars.append(figures.AucBar(regime_name(c.regime), c.method, c.mean("auc"), low, high))
    if upper is not None:
        runs = [upper.ok[s] for s in upper.seeds if upper.ok[s].y is not None]
        if runs:
            try:
                arr = np.array([figures.mean_roc(r.y, [r.prob])[0] for r in runs])
                std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
                curve = figures.RocCurve(
                    f"{method_label(upper.method)} ({upper.mean('auc'):.3f})", arr.mean(0), std, dashed=True
                )
                for p in panels.values():
                    p.append(curve)
            except ValueError:
                pass
    if panels:
        paths = figures.roc_figure(
            f"{label}: ROC on the test set (mean over seeds, band ±1 std)",
            panels,
            doc.fig_dir / f"roc_{slug(ds)}",
        )
        doc.add_figure(
            paths,
            f"{label}: ROC curves per training regime, mean over seeds with a ±1 std band; "
            "dashed: teacher on its own modality's test images",
        )
    if bars:
        t_auc = upper.mean("auc") if upper is not None else None
        oracle = doc.r.oracle(ds)
        o_auc = oracle.mean("auc") if oracle is not None and oracle.ok else None
        paths = figures.auc_bars(
            f"{label}: AUC with 95% CI",
            bars,
            doc.fig_dir / f"auc_{slug(ds)}",
            t_auc,
            method_label(upper.method) if upper else "teacher",
            oracle_auc=o_auc, oracle_label=oracle.label if oracle is not None else "WLI oracle",
        )
        doc.add_figure(
            paths,
            f"{label}: mean AUC over seeds; whiskers: 95% CI of the seed-mean AUC ({CI_BOOT}; a single model: "
            f"{CI_DELONG}); dashed: the teacher on its own modality"
            + (f"; dotted: {oracle.label}" if oracle is not None and o_auc is not None else ""),
        )
