"""The teacher-student gap each method closes."""

from __future__ import annotations

import math

from ...analysis import figures
from ...analysis.bootstrap import gap_closed_ci
from ..comparisons import shared_test_set
from ..document import Report
from ..naming import (
    BASELINE,
    regime_name,
)
from ..runs import Cell
from ..tables import Table, TCell, pct


def gap_section(doc: Report) -> None:
    rows: dict[str, dict[str, float]] = {}
    table = Table(
        "gap_closed",
        "Share of the teacher–baseline AUC gap closed (%)",
        ["dataset", "training data", "teacher AUC", "baseline AUC", "method", "method AUC", "gap closed",
         "95% CI"],
        numeric={2, 3, 5, 6, 7},
    )
    skipped = []
    for ds in doc.r.datasets:
        upper = doc.r.upper_bound(ds)
        if upper is None:
            continue
        t_auc = upper.mean("auc")
        for c in doc.r.dataset_cells(ds):
            if c.is_reference or c.method == BASELINE:
                continue
            base = doc.r.cell(ds, c.regime, BASELINE)
            if base is None:
                continue
            gap = t_auc - base.mean("auc")
            if not (math.isfinite(gap) and gap > 0.005):
                skipped.append(f"{doc.r.label(ds)} / {regime_name(c.regime)}")
                continue
            share = 100 * (c.mean("auc") - base.mean("auc")) / gap
            low, high, why = _gap_ci(doc, c, base, upper)
            col = f"{doc.r.label(ds)} / {regime_name(c.regime)}"
            rows.setdefault(c.method, {})[col] = share
            table.rows.append(
                [
                    TCell(doc.r.label(ds), {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds))}),
                    TCell(regime_name(c.regime), {"regime": c.regime}),
                    TCell(pct(t_auc), {"teacher_auc": t_auc}),
                    TCell(pct(base.mean("auc")), {"baseline_auc": base.mean("auc")}),
                    TCell(c.method),
                    TCell(pct(c.mean("auc")), {"method_auc": c.mean("auc")}),
                    TCell(f"{share:.0f}%", {"gap_closed_pct": share}),
                    TCell(
                        f"[{100 * low:.0f}%, {100 * high:.0f}%]" if math.isfinite(low) else f"— ({why})",
                        {"gap_ci_low_pct": 100 * low, "gap_ci_high_pct": 100 * high, "gap_ci_note": why},
                    ),
                ]
            )
    if not table.rows and not skipped:
        return
    doc.emit("## Teacher–student gap", "")
    doc.emit(
        "Gap closed = (AUC_method − AUC_baseline) / (AUC_teacher − AUC_baseline), with the teacher (the NBI "
        "teacher for cross-modal data) scored on test images of its own modality and the students (baseline "
        "and method, same training data) on the WLI test images; 100% means the student matches the "
        "teacher, negative means worse than the baseline. 95% CI: two-stage percentile bootstrap "
        f"({doc.n_boot_gap:,} resamples) drawing test lesions (one draw shared by the student, baseline and "
        "teacher images, matched by lesion id) and, independently, seeds of each model; undefined (—) when more "
        "than 2.5% of resamples have no positive teacher-baseline gap.",
        "",
    )
    if skipped:
        doc.emit(
            "Not defined where the teacher is not above the baseline by at least 0.5 AUC points: "
            + "; ".join(sorted(set(skipped)))
            + ".",
            "",
        )
    if table.rows:
        doc.add_table(table)
        paths = figures.gap_closed_figure(
            "Teacher–baseline AUC gap closed per method"
            + (" (incl. SYNTHETIC data)" if any(doc.r.synthetic.values()) else ""),
            rows,
            doc.fig_dir / "gap_closed",
        )
        doc.add_figure(paths, "Share of the teacher / student-only baseline AUC gap each method closes")


def _gap_ci(doc: Report, student: Cell, base: Cell, teacher: Cell) -> tuple[float, float, str]:
    """Bootstrap CI of the gap closed (fractions), or NaN and why not."""
    seeds = sorted(set(student.ok) & set(base.ok))
    pair = shared_test_set([student.ok[s] for s in seeds] + [base.ok[s] for s in seeds]) if seeds else None
    tea = shared_test_set([teacher.ok[s] for s in teacher.seeds])
    if pair is None or tea is None:
        return math.nan, math.nan, "no shared test images"
    y, lesion, probs = pair
    try:
        res = gap_closed_ci(
            y, probs[: len(seeds)], probs[len(seeds) :], lesion, tea[2], tea[0], tea[1], n_boot=doc.n_boot_gap
        )
    except ValueError as err:
        return math.nan, math.nan, str(err)
    if not math.isfinite(res.low):
        return math.nan, math.nan, f"gap not positive in {res.n_undefined} of {res.n_boot} resamples"
    return res.low, res.high, ""
