"""AUC across datasets: the summary rows and the full method-by-dataset table."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..document import Report
from ..naming import (
    BASELINE,
    ablated,
    method_label,
    method_rank,
    regime_key,
    regime_label,
)
from ..runs import Cell
from ..tables import Table, TCell, best_value, pct


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
        return lambda ds: best_of(ds, lambda c: c.method == method)

    rows: list[tuple[str, Callable[[str], Cell | None]]] = [
        ("teacher (upper bound)", lambda ds: doc.r.upper_bound(ds)),
        ("student only (baseline)", only(BASELINE)),
        (others, lambda ds: best_of(ds, lambda c: not c.is_teacher and c.method not in {BASELINE, *family})),
        *((study.title, only(method)) for method, study in studies.items()),
    ]
    for name, pick in rows:
        row = [TCell(name)]
        for ds in dss:
            c = pick(ds)
            if c is None:
                row.append(TCell("—", {doc.r.label(ds): ""}))
                continue
            who = f" ({c.method})" if c.is_teacher else f" ({c.method}, {regime_label(c.regime, c.method)})"
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
        "in its group. Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(table)

    keys = sorted(
        {(c.method, c.regime) for d in dss for c in doc.r.dataset_cells(d)},
        key=lambda k: (*method_rank(k[0]), regime_key(k[1])),
    )
    full = Table(
        "auc_by_dataset",
        "AUC (%) by method, training data and dataset",
        ["method", "training data", *cols],
        numeric=set(range(2, len(cols) + 2)),
    )
    best = {d: best_value(c.mean("auc") for c in doc.r.dataset_cells(d) if not c.is_teacher) for d in dss}
    for method, regime in keys:
        row = [TCell(method_label(method), {"method": method}), TCell(regime_label(regime, method), {"regime": regime})]
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
                    bold=not c.is_teacher and bool(np.isclose(mean, best[d])),
                )
            )
        full.rows.append(row)
    full.notes.append(
        "Mean ± std over seeds; best student per dataset in bold. Datasets marked [SYNTHETIC] are rendered twins."
    )
    doc.add_table(full)
