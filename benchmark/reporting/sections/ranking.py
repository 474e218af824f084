"""Ranking across datasets: Friedman, Nemenyi and the critical-difference diagram."""

from __future__ import annotations

import math

import pandas as pd

from ...analysis import figures
from ...analysis.stats import friedman_nemenyi
from ..comparisons import ALPHA
from ..document import Report
from ..naming import (
    regime_name,
)
from ..tables import Table, TCell, fmt_p


def friedman_section(doc: Report) -> None:
    doc.emit("## Ranking across datasets (Friedman, Nemenyi)", "")
    blocks: dict[str, dict[str, float]] = {}
    for ds in doc.r.datasets:
        for c in doc.r.dataset_cells(ds):
            if c.is_teacher or not math.isfinite(c.mean("auc")):
                continue
            blocks.setdefault(f"{doc.r.label(ds)} / {regime_name(c.regime)}", {})[c.method] = (
                c.mean("auc")
            )
    frame = pd.DataFrame(blocks).T
    frame, dropped = _complete_design(frame)
    res = friedman_nemenyi(frame, ALPHA)
    doc.emit(
        "Blocks are (dataset, training data) cells, treatments are methods, the score is the mean AUC over "
        "seeds; rank 1 is best. Blocks from the same dataset share test images, so they are not fully "
        "independent: read the ranking as descriptive when most blocks come from one dataset.",
        "",
    )
    if dropped:
        doc.emit("Dropped to make the design complete: " + "; ".join(dropped) + ".", "")
    if res.note:
        doc.emit(f"Not computed: {res.note}.", "")
        return
    doc.emit(
        f"Friedman χ² = {res.statistic:.2f}, p = {fmt_p(res.p)} over {res.n_blocks} blocks and {res.k} methods; "
        f"Nemenyi critical difference at α = {ALPHA}: {res.cd:.2f} ranks.",
        "",
    )
    table = Table(
        "friedman_ranks",
        "Average rank by mean AUC across (dataset, training data) blocks",
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
            f"Critical difference (Nemenyi, α = {ALPHA}, CD = {res.cd:.2f}); {res.n_blocks} blocks"
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
