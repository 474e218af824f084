"""AUC across datasets: the summary rows and the full method-by-dataset table."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from datasets.regimes import Regime

from ..comparisons import ALPHA, POWER
from ..document import Report
from ..naming import (
    BASELINE,
    ablated,
    cell_order,
    method_label,
    regime_label,
)
from ..runs import Cell
from ..tables import Table, TCell, best_value, pct
from .per_dataset import baseline_comparisons, detectable_summary, planned_detectable

PLANNED_SEEDS: tuple[int, ...] = (5, 8, 10, 20)
"""Seed counts for which the power table predicts the detectable difference."""


def summary_section(doc: Report) -> None:
    dss = [d for d in doc.r.datasets if doc.r.dataset_cells(d)]
    if not dss:
        return
    doc.emit("## AUC across datasets", "")
    cols = [doc.r.label(d) for d in dss]
    # a method that declares ablations is the one a study is about: it gets its own row,
    # and "strongest other method" leaves out it and its variants
    studies = ablated()
    family = {m for method, study in studies.items() for m in (method, *study.variants())}
    titles = [study.title for study in studies.values()]
    others = f"strongest non-{'/'.join(titles)} method" if titles else "strongest method"
    table = Table(
        "auc_summary",
        "AUC (%) across datasets: teacher upper bound, student-only baseline, " + ", ".join([others, *titles]),
        ["row", *cols],
        numeric=set(range(1, len(cols) + 1)),
    )

    def best_of(ds: str, pred: Callable[[Cell], bool]) -> Cell | None:
        cand = [c for c in doc.r.dataset_cells(ds) if pred(c) and math.isfinite(c.mean("auc"))]
        return max(cand, key=lambda c: c.mean("auc")) if cand else None

    def only(method: str) -> Callable[[str], Cell | None]:
        return lambda ds: best_of(ds, lambda c: c.method == method and not c.is_reference)

    has_oracle = any(doc.r.oracle(ds) is not None for ds in dss)

    rows: list[tuple[str, Callable[[str], Cell | None]]] = [
        ("teacher (upper bound)", lambda ds: doc.r.upper_bound(ds)),
        *((("WLI oracle (k x WLI training lesions)", lambda ds: doc.r.oracle(ds)),) if has_oracle else ()),
        ("student only (baseline)", lambda ds: best_of(ds, lambda c: c.method == BASELINE and not c.is_reference)),
        (others, lambda ds: best_of(ds, lambda c: not c.is_reference and c.method not in {BASELINE, *family})),
        *((study.title, only(method)) for method, study in studies.items()),
    ]
    for name, pick in rows:
        row = [TCell(name)]
        for ds in dss:
            c = pick(ds)
            if c is None:
                row.append(TCell("—", {doc.r.label(ds): ""}))
                continue
            who = (
                f" ({c.method})" if c.is_teacher
                else f" ({c.data_label})" if c.is_oracle
                else f" ({c.method}, {c.data_label})"
            )
            row.append(
                TCell(
                    pct(c.mean("auc"), c.std("auc")) + who,
                    {
                        f"{doc.r.label(ds)}_auc_mean": c.mean("auc"),
                        f"{doc.r.label(ds)}_auc_std": c.std("auc"),
                        f"{doc.r.label(ds)}_method": c.method,
                        f"{doc.r.label(ds)}_regime": c.regime,
                    },
                )
            )
        table.rows.append(row)
    table.notes.append(
        "Each row shows, per dataset, the method and training data with the highest mean AUC "
        "in its group. Reference rows: the NBI teacher (on NBI test images of the same lesions)"
        + (", the WLI oracle (the baseline trained on k x the WLI training lesions of the twin, synthetic "
           "cross-modal twins only; what the student's images could give)" if has_oracle else "")
        + ". Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(table)

    keys = sorted(
        {(c.method, c.regime) for d in dss for c in doc.r.dataset_cells(d)},
        key=lambda k: cell_order(k[1], k[0]),
    )
    full = Table(
        "auc_by_dataset",
        "AUC (%) by method, training data and dataset",
        ["method", "training data", *cols],
        numeric=set(range(2, len(cols) + 2)),
    )
    best = {d: best_value(c.mean("auc") for c in doc.r.dataset_cells(d) if not c.is_reference) for d in dss}
    for method, regime in keys:
        first = next((c for d in dss if (c := doc.r.cell(d, regime, method)) is not None), None)
        rec = first.record if first is not None else None
        row = [
            TCell(method_label(method, regime, rec), {"method": method}),
            TCell(regime_label(regime, method, rec), {"regime": regime}),
        ]
        for d in dss:
            c = doc.r.cell(d, regime, method)
            if c is None:
                row.append(TCell("—", {f"{doc.r.label(d)}_auc_mean": math.nan}))
                continue
            mean = c.mean("auc")
            row.append(
                TCell(
                    pct(mean, c.std("auc")),
                    {f"{doc.r.label(d)}_auc_mean": mean, f"{doc.r.label(d)}_auc_std": c.std("auc")},
                    bold=not c.is_reference and bool(np.isclose(mean, best[d])),
                )
            )
        full.rows.append(row)
    full.notes.append(
        "Mean ± std over seeds; best student per dataset in bold. Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(full)
    reference_table(doc, dss)
    power_table(doc, dss)


def reference_table(doc: Report, dss: list[str]) -> None:
    """Per dataset: the NBI teacher, the WLI oracle and the baseline side by side (synthetic twins with an oracle)."""
    with_oracle = [ds for ds in dss if doc.r.oracle(ds) is not None]
    if not with_oracle:
        return
    table = Table(
        "references",
        "Reference rows: NBI teacher, WLI oracle and student-only baseline, AUC (%) with 95% CI",
        ["dataset", "NBI teacher", "WLI oracle", "baseline", "oracle − baseline", "teacher − oracle"],
        numeric={1, 2, 3, 4, 5},
    )

    def auc_ci(c: Cell | None, name: str) -> TCell:
        if c is None:
            return TCell("—", {f"{name}_auc": math.nan})
        low, high, _ = doc.ci(c)
        ci = f" [{100 * low:.1f}, {100 * high:.1f}]" if math.isfinite(low) else ""
        return TCell(pct(c.mean("auc")) + ci, {f"{name}_auc": c.mean("auc"), f"{name}_ci_low": low,
                                               f"{name}_ci_high": high, f"{name}_seeds": len(c.seeds)})

    for ds in with_oracle:
        teacher, oracle = doc.r.upper_bound(ds), doc.r.oracle(ds)
        base_regime = str(((oracle.record or {}).get("oracle") or {}).get("base_regime", Regime.ALL.value))
        base = doc.r.cell(ds, base_regime, BASELINE)
        t, o, b = (c.mean("auc") if c is not None else math.nan for c in (teacher, oracle, base))
        table.rows.append(
            [
                TCell(doc.r.label(ds), {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds))}),
                auc_ci(teacher, "teacher"),
                auc_ci(oracle, "oracle"),
                auc_ci(base, "baseline"),
                TCell(pct(o - b), {"oracle_minus_baseline": o - b}),
                TCell(pct(t - o), {"teacher_minus_oracle": t - o}),
            ]
        )
    table.notes.append(
        "Mean AUC over seeds with its 95% CI (one model, such as a teacher that serves every seed: its AUC with "
        "the lesion-clustered DeLong interval). NBI teacher: scored on the NBI views of the test lesions. WLI "
        "oracle: `baseline` trained on k x the WLI training lesions of the twin (the factor is in the per-dataset "
        "table); baseline: `baseline` on the training data the oracle multiplies (D_p+D_unp unless the run file "
        "says otherwise). Oracle − baseline is what more WLI data gives the student, the room a distiller has; "
        "teacher − oracle what only the NBI view carries. Only datasets with WLI-oracle runs (synthetic "
        "cross-modal twins) are listed. Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(table)


def power_table(doc: Report, dss: list[str]) -> None:
    """Per dataset: the smallest AUC difference the primary test detects (the per-dataset power lines)."""
    table = Table(
        "power",
        f"Power of the primary test: smallest AUC difference (points) detected with {100 * POWER:.0f}% power",
        ["dataset", "seeds", "test lesions", "comparisons (Holm family)", "α first step", "detectable Δ (median)",
         "range", *(f"with {j} seeds" for j in PLANNED_SEEDS)],
        numeric={1, 2, 3, 4, 5, *range(7, 7 + len(PLANNED_SEEDS))},
    )
    for ds in dss:
        comps = baseline_comparisons(doc, ds)
        summ = detectable_summary(comps)
        if summ is None:
            continue
        med, lo, hi, m = summ
        used = [c for c in comps if c.rrrc is not None]
        seeds = "/".join(map(str, sorted({len(c.mrmc.seeds) for c in used})))
        cases = "/".join(map(str, sorted({c.mrmc.analysis.components.n_cases for c in used})))
        table.rows.append(
            [
                TCell(doc.r.label(ds), {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds))}),
                TCell(seeds, {"seeds": seeds}),
                TCell(cases, {"test_lesions": cases}),
                TCell(str(m), {"holm_family_size": m}),
                TCell(f"{ALPHA / m:.2g}", {"alpha_first_step": ALPHA / m}),
                TCell(f"{100 * med:.2f}", {"detectable_dauc_median": med}),
                TCell(f"{100 * lo:.2f}–{100 * hi:.2f}", {"detectable_dauc_min": lo, "detectable_dauc_max": hi}),
                *(TCell(f"{100 * v:.2f}" if math.isfinite(v) else "—", {f"planned_{j}_seeds": v})
                  for j in PLANNED_SEEDS for v in [planned_detectable(used, j)]),
            ]
        )
    if not table.rows:
        return
    table.notes.append(
        "Primary test: OR/Hillis MRMC (RRRC) of each method against `baseline` with the same training data. "
        f"Detectable Δ: the AUC difference found with {100 * POWER:.0f}% power at α = {ALPHA}/m (Holm's first, "
        "most stringent step over the dataset's m comparisons), from each comparison's measured variance "
        "components (Hillis, Obuchowski & Berbaum 2011); median and range over the comparisons. 'with k seeds': the "
        "median the same variance components and test lesions predict for a grid of k seeds (how the reference "
        "grid's seeds per dataset are chosen). Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(table)
