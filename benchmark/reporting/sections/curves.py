"""Training curves from run files, and the runs whose curves ask for a look.

Every run file keeps its ``history``: per epoch the mean of each unweighted loss term
over the epoch's steps and, at validated epochs, the validation AUC. From it:

- :class:`RunCurve`: one run's validation AUC per epoch and its distillation loss per
  epoch, i.e. the weighted sum of every student loss term except the task's
  cross-entropy ``ce`` (weights: the method's defaults overridden by the run's config,
  as in training; the adversary's own terms ``adv_*`` are left out);
- :func:`cell_mean`: mean and std over the seeds of one (dataset, regime, method);
- :func:`runs_to_look_at`: runs whose validation AUC ends at least :data:`AUC_DROP`
  below its own peak (collapse after a good epoch), or one of whose distillation terms
  reaches at least :data:`GROWTH` times its first-epoch magnitude (a diverging term);
- :func:`add_curve_figures`: the report's curve figures and "runs to look at" list for
  one dataset.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...analysis import figures
from ..naming import regime_key, regime_name

TASK_TERM = "ce"
AUC_DROP = 0.10
"""A run "ends far below its peak" when its last validation AUC is this much (10 AUC
points) or more below the best validation AUC it reached."""
GROWTH = 10.0
"""A distillation term "grows tenfold" when its epoch-mean magnitude at some later epoch
is at least this multiple of its first epoch's."""


@dataclass
class RunCurve:
    """One run's curves, per epoch (NaN where an epoch was not validated)."""

    dataset: str
    regime: str
    method: str
    seed: int
    path: str
    epochs: np.ndarray
    val_auc: np.ndarray
    distill: np.ndarray | None
    """Weighted sum of the distillation terms; ``None`` for a method without any."""
    terms: dict[str, np.ndarray] = field(default_factory=dict)
    """Each distillation term with a non-zero weight, unweighted."""

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.regime}/{self.method}/seed{self.seed}"


def run_weights(record: Mapping[str, Any]) -> dict[str, float]:
    """The loss weights a run trained with: the method's defaults, then the config's overrides."""
    info = record.get("method_info") or {}
    config = record.get("config") or {}
    return {**{k: float(v) for k, v in (info.get("default_weights") or {}).items()},
            **{k: float(v) for k, v in (config.get("weights") or {}).items()}}


def run_curve(record: Mapping[str, Any]) -> RunCurve | None:
    """The curves of one finished run record, or ``None`` without a history."""
    history = [h for h in record.get("history") or [] if isinstance(h, Mapping)]
    if record.get("status", "ok") != "ok" or not history:
        return None
    weights = run_weights(record)
    epochs = np.array([int(h.get("epoch", i)) for i, h in enumerate(history)], dtype=np.int64)
    val_auc = np.array([_float(h.get("val_auc")) for h in history], dtype=np.float64)
    names = list(dict.fromkeys(
        k for h in history for k in (h.get("loss") or {})
        if k != TASK_TERM and not k.startswith("adv_") and weights.get(k, 0.0) != 0.0
    ))
    terms = {k: np.array([_float((h.get("loss") or {}).get(k)) for h in history], dtype=np.float64) for k in names}
    distill = sum((weights[k] * v for k, v in terms.items()), np.zeros(len(history))) if terms else None
    return RunCurve(
        dataset=str(record.get("dataset")), regime=str(record.get("regime")), method=str(record.get("method")),
        seed=int(record.get("seed", 0)), path=str(record.get("_path", "")), epochs=epochs, val_auc=val_auc,
        distill=distill, terms=terms,
    )


def _float(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def cell_mean(curves: Sequence[RunCurve], series: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, mean and std over seeds (ddof 1; 0 with one seed) of ``series``
    (``val_auc`` or ``distill``), at the epochs where some seed has a finite value."""
    rows = [(c.epochs, getattr(c, series)) for c in curves if getattr(c, series) is not None]
    if not rows:
        return None
    epochs = np.unique(np.concatenate([e for e, _ in rows]))
    grid = np.full((len(rows), len(epochs)), np.nan)
    for i, (e, v) in enumerate(rows):
        grid[i, np.searchsorted(epochs, e)] = v
    seen = np.isfinite(grid)
    keep = seen.any(axis=0)
    if not keep.any():
        return None
    grid, seen, epochs = grid[:, keep], seen[:, keep], epochs[keep]
    n = seen.sum(axis=0)
    mean = np.where(seen, grid, 0.0).sum(axis=0) / n
    dev = np.where(seen, grid - mean, 0.0)
    std = np.where(n > 1, np.sqrt((dev**2).sum(axis=0) / np.maximum(n - 1, 1)), 0.0)
    return epochs, mean, std


@dataclass
class Finding:
    """A run to look at, and why."""

    curve: RunCurve
    reason: str


def runs_to_look_at(curves: Iterable[RunCurve], auc_drop: float = AUC_DROP, growth: float = GROWTH) -> list[Finding]:
    """Runs whose validation AUC ends ``auc_drop`` or more below its own peak, and runs
    with a distillation term whose magnitude at a later epoch is ``growth`` times or more
    its first epoch's; in the order given, a run once per reason."""
    found: list[Finding] = []
    for c in curves:
        validated = np.isfinite(c.val_auc)
        auc, at = c.val_auc[validated], c.epochs[validated]
        if len(auc) >= 2:
            peak = int(np.argmax(auc))
            if auc[-1] <= auc[peak] - auc_drop:
                found.append(Finding(c, f"validation AUC ends at {auc[-1]:.3f} (epoch {at[-1]}), "
                                        f"{auc[peak] - auc[-1]:.3f} below its peak {auc[peak]:.3f} (epoch {at[peak]})"))
        for name, values in c.terms.items():
            mag = np.abs(values)
            if len(mag) < 2 or not (math.isfinite(mag[0]) and mag[0] > 0):
                continue
            later = np.where(np.isfinite(mag[1:]), mag[1:], -np.inf)
            k = int(np.argmax(later)) + 1
            if mag[k] >= growth * mag[0]:
                found.append(Finding(c, f"distillation term `{name}` grows {mag[k] / mag[0]:.0f}x (epoch "
                                        f"{c.epochs[0]}: {values[0]:.3g}, epoch {c.epochs[k]}: {values[k]:.3g})"))
    return found


def add_curve_figures(builder: Any, ds: str, cells: Sequence[Any]) -> None:
    """The report's training-curve figures for dataset ``ds`` (validation AUC and
    distillation loss per epoch, one panel per regime, one line per method) and the
    list of runs to look at. ``builder`` is the report document (``emit``,
    ``add_figure``, ``fig_dir``, ``out``, ``r.label``); ``cells`` its cells of ``ds``."""
    by_cell: list[tuple[Any, list[RunCurve]]] = []
    for cell in cells:
        if cell.is_reference:
            continue
        curves = [c for s in cell.seeds if (c := run_curve(cell.ok[s].record)) is not None]
        if curves:
            by_cell.append((cell, curves))
    if not by_cell:
        return
    by_cell.sort(key=lambda item: regime_key(item[0].regime))
    label = builder.r.label(ds)
    slug = "".join(ch if ch.isalnum() else "_" for ch in ds).strip("_").lower() or "dataset"
    builder.emit(f"### {label}: training curves", "")
    for series, ylabel, stem, what in (
        ("val_auc", "validation AUC", "curves_auc", "validation AUC per epoch"),
        ("distill", "distillation loss (weighted)", "curves_distill", "distillation loss per epoch"),
    ):
        panels: dict[str, list[figures.EpochCurve]] = {}
        for cell, curves in by_cell:
            stats = cell_mean(curves, series)
            if stats is not None:
                panels.setdefault(regime_name(cell.regime), []).append(
                    figures.EpochCurve(cell.method, *stats))
        if not panels:
            continue
        log_y = series == "distill" and all(np.all(c.mean > 0) for cs in panels.values() for c in cs)
        paths = figures.epoch_curves_figure(
            f"{label}: {what} (mean over seeds, band ±1 std)", panels, builder.fig_dir / f"{stem}_{slug}",
            ylabel, log_y=log_y,
        )
        note = ("; distillation loss: the weighted sum of the epoch-mean loss terms other than the task's "
                "cross-entropy" if series == "distill" else "")
        builder.add_figure(paths, f"{label}: {what}, one line per method, mean over seeds with a ±1 std band "
                                  f"(drawn for every line in panels of up to {figures.MAX_BANDS} lines){note}"
                                  + ("; logarithmic axis" if log_y else ""))
    findings = runs_to_look_at(c for _, curves in by_cell for c in curves)
    builder.emit(f"**Runs to look at** (validation AUC ending {100 * AUC_DROP:.0f} AUC points or more below the "
                 f"run's own peak, or a distillation term reaching {GROWTH:.0f}x its first-epoch magnitude): "
                 + ("none." if not findings else ""), "")
    for f in findings:
        builder.emit(f"- `{f.curve.name}` (runs/{f.curve.name}.json): {f.reason}")
    if findings:
        builder.emit("")

