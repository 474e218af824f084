"""Ranking across datasets (datasets as blocks): Friedman with Iman-Davenport, Nemenyi and the critical-difference
diagram."""

from __future__ import annotations

import math

import pandas as pd

from ...analysis import figures
from ...analysis.ranking import dataset_blocks, friedman_by_dataset
from ..comparisons import ALPHA
from ..document import Report
from ..tables import Table, TCell, p_is


def friedman_section(doc: Report) -> None:
    doc.emit("## Ranking across datasets (Friedman, Iman-Davenport, Nemenyi)", "")
    rows = [
        {"dataset": doc.r.label(ds), "method": c.method, "score": c.mean("auc")}
        for ds in doc.r.datasets
        for c in doc.r.dataset_cells(ds)
        if not c.is_reference and math.isfinite(c.mean("auc"))
    ]
    long = pd.DataFrame(rows, columns=["dataset", "method", "score"])
    frame, dropped = _complete_design(dataset_blocks(long)) if len(long) else (pd.DataFrame(), [])
    kept = long[long["method"].isin(frame.columns) & long["dataset"].isin(frame.index)]
    doc.emit(
        "Blocks are datasets, treatments are methods; a method's score on a dataset is its mean AUC over seeds, "
        "averaged over the training data it was run with on that dataset; rank 1 is best. Training data of one "
        "dataset share its test images, so they are not independent blocks and are averaged, not ranked "
        "separately (Demšar 2006). Reference rows (teachers, WLI oracle) are not ranked.",
        "",
    )
    if dropped:
        doc.emit("Dropped to make the design complete: " + "; ".join(dropped) + ".", "")
    if kept.empty:
        doc.emit("Not computed: no student scores.", "")
        return
    ranking = friedman_by_dataset(kept, alpha=ALPHA)
    res = ranking.friedman
    if res.note:
        doc.emit(f"Not computed: {res.note}.", "")
        return
    df1, df2 = ranking.iman_davenport_df
    doc.emit(
        f"Friedman χ² = {res.statistic:.2f} (df {res.k - 1}), {p_is(res.p)}; Iman-Davenport "
        f"F = {ranking.iman_davenport_f:.2f} (df {df1:.0f}, {df2:.0f}), {p_is(ranking.iman_davenport_p)}; "
        f"over {res.n_blocks} datasets and {res.k} methods. Nemenyi critical difference at α = {ALPHA}: "
        f"{res.cd:.2f} ranks.",
        "",
    )
    table = Table(
        "friedman_ranks",
        "Average rank by mean AUC across datasets (blocks)",
        ["method", "average rank"],
        numeric={1},
    )
    for m, rk in res.ranks.sort_values().items():
        table.rows.append([TCell(str(m)), TCell(f"{rk:.2f}", {"average_rank": rk})])
    if any(doc.r.synthetic.values()):
        table.notes.append(
            "Includes SYNTHETIC datasets: " + ", ".join(d for d in doc.r.datasets if doc.r.synthetic.get(d)) + "."
        )
    doc.add_table(table)
    try:
        paths = figures.cd_diagram(
            f"Critical difference (Nemenyi, α = {ALPHA}, CD = {res.cd:.2f}); {res.n_blocks} datasets"
            + (" incl. SYNTHETIC data" if any(doc.r.synthetic.values()) else ""),
            res.ranks,
            res.nemenyi,
            res.cd,
            doc.fig_dir / "critical_difference",
        )
        doc.add_figure(
            paths,
            "Critical-difference diagram: average ranks (1 = best); methods joined by a bar "
            "are not significantly different by the Nemenyi test",
        )
    except Exception as err:  # a drawing failure must not lose the report
        doc.emit(f"(critical-difference diagram not drawn: {type(err).__name__}: {err})", "")


def _complete_design(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop blocks or methods with missing scores, whichever loses fewer scores, until complete."""
    dropped: list[str] = []
    frame = frame.copy()
    while frame.size and frame.isna().any().any():
        col_missing = frame.isna().sum(axis=0)
        row_missing = frame.isna().sum(axis=1)
        col = col_missing.idxmax()
        row = row_missing.idxmax()
        loss_col = int(frame[col].notna().sum())
        loss_row = int(frame.loc[row].notna().sum())
        if loss_col <= loss_row:
            frame = frame.drop(columns=[col])
            dropped.append(f"method {col} (missing in {int(col_missing[col])} block(s))")
        else:
            frame = frame.drop(index=[row])
            dropped.append(f"block {row} (missing {int(row_missing[row])} method(s))")
    return frame, dropped
