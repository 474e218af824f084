"""The teacher-student gap each method closes."""

from __future__ import annotations

import math

from ...analysis import figures
from ..document import Report
from ..naming import (
    BASELINE,
    regime_name,
)
from ..tables import Table, TCell, pct


def gap_section(doc: Report) -> None:
    rows: dict[str, dict[str, float]] = {}
    table = Table(
        "gap_closed",
        "Share of the teacher–baseline AUC gap closed (%)",
        ["dataset", "training data", "teacher AUC", "baseline AUC", "method", "method AUC", "gap closed"],
        numeric={2, 3, 5, 6},
    )
    skipped = []
    for ds in doc.r.datasets:
        upper = doc.r.upper_bound(ds)
        if upper is None:
            continue
        t_auc = upper.mean("auc")
        for c in doc.r.dataset_cells(ds):
            if c.is_teacher or c.method == BASELINE:
                continue
            base = doc.r.cell(ds, c.regime, BASELINE)
            if base is None:
                continue
            gap = t_auc - base.mean("auc")
            if not (math.isfinite(gap) and gap > 0.005):
                skipped.append(f"{doc.r.label(ds)} / {regime_name(c.regime)}")
                continue
            share = 100 * (c.mean("auc") - base.mean("auc")) / gap
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
                ]
            )
    if not table.rows and not skipped:
        return
    doc.emit("## Teacher–student gap", "")
    doc.emit(
        "Gap closed = (AUC_method − AUC_baseline) / (AUC_teacher − AUC_baseline), with the teacher (the NBI "
        "teacher for cross-modal data) scored on test images of its own modality and the students (baseline "
        "and method, same training data) on the WLI test images; 100% means the student matches the "
        "teacher, negative means worse than the baseline.",
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
