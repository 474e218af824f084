"""One dataset: its main table, comparisons against the baseline and the best method, ROC and AUC figures."""

from __future__ import annotations

import math

import numpy as np

from ...analysis import figures
from ...analysis.stats import wilcoxon_min_n
from ..comparisons import ALPHA, MARK_DELONG, MARK_T, Comparison, compare, holm_fill
from ..document import Report
from ..naming import (
    BASELINE,
    method_label,
    regime_key,
    regime_label,
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
    students = [c for c in cells if not c.is_teacher]
    vs_base = [
        compare(c, b)
        for c in students
        if c.method != BASELINE and (b := doc.r.cell(ds, c.regime, BASELINE)) is not None
    ]
    holm_fill(vs_base)
    sig = {(c.a.regime, c.a.method): c for c in vs_base}
    best = {m: best_value(c.mean(m) for c in students) for m, _ in METRICS_SHOWN}
    table = Table(
        f"{slug(ds)}_main",
        f"{label}: WLI test set, Acc / F1 / AUC (%)",
        ["method", "training data", "n", "Acc", "F1", "AUC", "AUC 95% CI"],
        numeric={2, 3, 4, 5, 6},
    )
    for c in cells:
        row = [
            TCell(
                method_label(c.method),
                {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "method": c.method},
            ),
            TCell(regime_label(c.regime, c.method), {"regime": c.regime}),
            TCell(str(len(c.seeds)), {"n_seeds": len(c.seeds)}),
        ]
        for m, name in METRICS_SHOWN:
            mean, std = c.mean(m), c.std(m)
            text = pct(mean, std)
            marks = ""
            comp = sig.get((c.regime, c.method))
            if m == "auc" and comp is not None:
                if comp.p_delong_holm < ALPHA:
                    marks += MARK_DELONG
                if comp.p_t_holm < ALPHA:
                    marks += MARK_T
            bold = not c.is_teacher and math.isfinite(mean) and bool(np.isclose(mean, best[m], rtol=0, atol=1e-12))
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
        low, high, _ = doc.ci(c)
        ci_text = f"[{100 * low:.1f}, {100 * high:.1f}]" if math.isfinite(low) else "—"
        row.append(TCell(ci_text, {"AUC_ci_low": low, "AUC_ci_high": high}))
        table.rows.append(row)
    table.notes.append(
        f"{label}. {MARK_DELONG} DeLong, {MARK_T} paired t-test over seeds: different from `{BASELINE}` with the "
        f"same training data, Holm-corrected within this table, α = {ALPHA}. AUC 95% CI: lesion-level bootstrap "
        "of the seed-mean AUC. Teachers are scored on test images of their own modality (upper bound, not a "
        "student)."
    )
    if doc.r.synthetic.get(ds):
        table.notes.append("SYNTHETIC data: rendered twins, not patient images.")
    doc.add_table(table)
    if vs_base:
        doc.add_table(
            comparison_table(doc, ds, "vs_baseline", f"{label}: each method against `{BASELINE}`", vs_base)
        )
    vs_best = []
    for regime in sorted({c.regime for c in students}, key=regime_key):
        group = [c for c in students if c.regime == regime and math.isfinite(c.mean("auc"))]
        if len(group) < 2:
            continue
        top = max(group, key=lambda c: c.mean("auc"))
        vs_best += [compare(c, top) for c in group if c is not top]
    if vs_best:
        holm_fill(vs_best)
        doc.add_table(
            comparison_table(doc,
                ds,
                "vs_best",
                f"{label}: each method against the best method (highest mean AUC) with the same training data",
                vs_best,
            )
        )
    dataset_figures(doc, ds, cells)
    add_curve_figures(doc, ds, cells)


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
            "ΔAUC seeds",
            "t-test p (Holm)",
            "Wilcoxon p (Holm)",
            "ΔAUC DeLong",
            "DeLong p (Holm)",
        ],
        numeric=set(range(3, 9)),
    )
    any_few = False
    for c in comps:
        pr = c.paired
        few = bool(pr.wilcoxon_note) and "Wilcoxon" in pr.wilcoxon_note
        any_few |= few
        dl = c.delong
        table.rows.append(
            [
                TCell(
                    method_label(c.a.method),
                    {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "method": c.a.method},
                ),
                TCell(regime_label(c.a.regime, c.a.method), {"regime": c.a.regime}),
                TCell(c.b.method, {"against": c.b.method}),
                TCell(str(pr.n), {"n_common_seeds": pr.n}),
                TCell(pct(pr.mean_diff, pr.std_diff), {"dauc_mean": pr.mean_diff, "dauc_std": pr.std_diff}),
                TCell(f"{fmt_p(pr.p_t)} ({fmt_p(c.p_t_holm)})", {"p_t": pr.p_t, "p_t_holm": c.p_t_holm}),
                TCell(
                    f"{fmt_p(pr.p_wilcoxon)} ({fmt_p(c.p_w_holm)}){'°' if few else ''}",
                    {"p_wilcoxon": pr.p_wilcoxon, "p_wilcoxon_holm": c.p_w_holm, "wilcoxon_note": pr.wilcoxon_note},
                ),
                TCell(
                    pct(dl.diff) if dl else "—",
                    {
                        "dauc_delong": dl.diff if dl else math.nan,
                        "delong_z": dl.z if dl else math.nan,
                        "delong_mode": dl.method if dl else c.delong_note,
                    },
                ),
                TCell(
                    f"{fmt_p(dl.p)} ({fmt_p(c.p_delong_holm)})" if dl else f"— ({c.delong_note})",
                    {"p_delong": dl.p if dl else math.nan, "p_delong_holm": c.p_delong_holm},
                ),
            ]
        )
    table.notes.append(
        f"{label}. ΔAUC in percentage points (method minus `against`); seeds: mean ± std of the per-seed "
        "differences over common seeds; DeLong: difference of the seed-averaged predictions' AUCs. Raw p with "
        "the Holm-adjusted p in brackets (Holm per test within this table)."
    )
    if any_few:
        table.notes.append(
            f"° too few seeds for the Wilcoxon test to reach p < {ALPHA} (it needs at least "
            f"{wilcoxon_min_n(ALPHA)} seeds with non-zero differences)."
        )
    if any(c.delong is not None and c.delong.method == "stouffer" for c in comps):
        table.notes.append(
            "Some seeds were scored on different test images: those DeLong results combine "
            "per-seed z by Stouffer's method."
        )
    return table


def dataset_figures(doc: Report, ds: str, cells: list[Cell]) -> None:
    label = doc.r.label(ds)
    upper = doc.r.upper_bound(ds)
    panels: dict[str, list[figures.RocCurve]] = {}
    bars: list[figures.AucBar] = []
    for c in cells:
        if c.is_teacher:
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
        paths = figures.auc_bars(
            f"{label}: AUC with 95% lesion-bootstrap CI",
            bars,
            doc.fig_dir / f"auc_{slug(ds)}",
            t_auc,
            method_label(upper.method) if upper else "teacher",
        )
        doc.add_figure(
            paths, f"{label}: mean AUC over seeds; whiskers: 95% lesion-level bootstrap CI of the seed-mean AUC"
        )
