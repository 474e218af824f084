"""The teacher-student gap each method closes."""

from __future__ import annotations

import math

from ...analysis import figures
from ...analysis.bootstrap import gap_closed_cis
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
        cis = _gap_cis(doc, ds, upper)
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
            low, high, why = cis.get((c.regime, c.method), (math.nan, math.nan, "no shared test images"))
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


def _gap_cis(doc: Report, ds: str, teacher: Cell) -> dict[tuple[str, str], tuple[float, float, str]]:
    """Bootstrap CIs of the gap closed (fractions) of every student of a dataset, or NaN and why not.

    Students whose seeds shared with the baseline are the same are computed in one batch
    (:func:`gap_closed_cis`): the baseline's and teacher's resampled AUCs are computed once."""
    tea = shared_test_set([teacher.ok[s] for s in teacher.seeds])
    groups: dict[tuple[str, tuple[int, ...]], list[Cell]] = {}
    for c in doc.r.dataset_cells(ds):
        base = doc.r.cell(ds, c.regime, BASELINE)
        if c.is_reference or c.method == BASELINE or base is None:
            continue
        groups.setdefault((c.regime, tuple(sorted(set(c.ok) & set(base.ok)))), []).append(c)
    out: dict[tuple[str, str], tuple[float, float, str]] = {}
    for (regime, seeds), cells in groups.items():
        base = doc.r.cell(ds, regime, BASELINE)
        pairs = [shared_test_set([base.ok[s] for s in seeds] + [c.ok[s] for s in seeds]) if seeds else None
                 for c in cells]
        usable = [(c, p) for c, p in zip(cells, pairs, strict=True) if p is not None and tea is not None]
        for c, p in zip(cells, pairs, strict=True):
            if p is None or tea is None:
                out[(regime, c.method)] = (math.nan, math.nan, "no shared test images")
        if not usable:
            continue
        y, lesion, probs = usable[0][1]
        n = len(seeds)
        try:
            results = gap_closed_cis(
                y, [p[2][n:] for _, p in usable], probs[:n], lesion, tea[2], tea[0], tea[1], n_boot=doc.n_boot_gap
            )
        except ValueError as err:
            out.update({(regime, c.method): (math.nan, math.nan, str(err)) for c, _ in usable})
            continue
        for (c, _), res in zip(usable, results, strict=True):
            if math.isfinite(res.low):
                out[(regime, c.method)] = (res.low, res.high, "")
            else:
                out[(regime, c.method)] = (math.nan, math.nan,
                                           f"gap not positive in {res.n_undefined} of {res.n_boot} resamples")
    return out
