"""The report being built: its Markdown lines, the tables and figures it has written,
and the confidence intervals it has computed (each once)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..analysis.bootstrap import DEFAULT_RESAMPLES, lesion_bootstrap_ci
from .comparisons import Comparison, shared_test_set, single_model_ci
from .runs import Cell, Results
from .tables import Table

N_BOOT = DEFAULT_RESAMPLES
"""Resamples of the lesion-level BCa bootstrap behind the tables' AUC intervals."""
N_BOOT_GAP = 10_000
"""Resamples of the gap-closed interval (lesions and seeds; the slowest interval of the report)."""
CI_BOOT = "BCa lesion bootstrap"
CI_DELONG = "lesion-clustered DeLong"
MARK_SINGLE = "‡"


class Report:
    def __init__(
        self, results: Results, out_dir: Path, title: str, n_boot: int = N_BOOT, n_boot_gap: int = N_BOOT_GAP
    ) -> None:
        self.r = results
        self.out = out_dir
        self.assets = out_dir / "report"
        self.tables_dir = self.assets / "tables"
        self.fig_dir = self.assets / "figures"
        self.title = title
        self.n_boot = n_boot
        self.n_boot_gap = min(n_boot, n_boot_gap)
        self.md: list[str] = []
        self.tables: list[Table] = []
        self.figures: list[Path] = []
        self.written: set[Path] = set()
        """Every table and figure file this build wrote."""
        self.ci_cache: dict[tuple[str, str, str], tuple[float, float, str]] = {}
        self.vs_baseline: dict[str, list[Comparison]] = {}

    # -- helpers --------------------------------------------------------------------------
    def emit(self, *lines: str) -> None:
        self.md.extend(lines)

    def add_table(self, table: Table) -> None:
        self.tables.append(table)
        self.written.update(table.write(self.tables_dir))
        rel = f"report/tables/{table.name}"
        self.emit(f"**{table.title}**", "", table.markdown(), "")
        for n in table.notes:
            self.emit(n, "")
        self.emit(f"Files: [{table.name}.csv]({rel}.csv), [{table.name}.tex]({rel}.tex)", "")

    def add_figure(self, paths: list[Path], caption: str) -> None:
        self.figures.extend(paths)
        self.written.update(paths)
        png = paths[0].relative_to(self.out).as_posix()
        svg = paths[1].relative_to(self.out).as_posix()
        self.emit(f"![{caption}]({png})", "", f"*{caption}* ([SVG]({svg}))", "")

    def ci(self, cell: Cell) -> tuple[float, float, str]:
        """95% CI of the seed-mean AUC of a cell and how it was computed: a lesion-level BCa
        bootstrap for several seeds, the lesion-clustered DeLong interval for a single model."""
        key = (cell.dataset, cell.regime, cell.method)
        if key in self.ci_cache:
            return self.ci_cache[key]
        runs = [cell.ok[s] for s in cell.seeds]
        shared = shared_test_set(runs)
        out: tuple[float, float, str] = (math.nan, math.nan, "no predictions")
        try:
            if len(runs) == 1 and (one := single_model_ci(runs[0])) is not None:
                out = (one.low, one.high, CI_DELONG)
            elif shared is not None:
                y, lesion, probs = shared
                res = lesion_bootstrap_ci(y, probs, lesion, "auc", self.n_boot, seed=0)
                out = (res.low, res.high, CI_BOOT)
            elif all(r.y is not None for r in runs) and runs:
                cis = [lesion_bootstrap_ci(r.y, r.prob, r.lesion, "auc", self.n_boot, seed=0) for r in runs]
                out = (
                    float(np.mean([c.low for c in cis])),
                    float(np.mean([c.high for c in cis])),
                    f"{CI_BOOT}, mean of per-seed CIs (seeds scored on different images)",
                )
        except ValueError as err:
            out = (math.nan, math.nan, str(err))
        self.ci_cache[key] = out
        return out
