"""Report figures (matplotlib, Agg canvas; no pyplot state, so notebooks keep their backend).

Every function draws one figure and writes it as PNG and SVG next to ``stem``
(``stem.png``, ``stem.svg``), returning both paths. Titles carry the dataset label the
report uses, so a synthetic dataset is labelled SYNTHETIC on the figure too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

FPR_GRID = np.linspace(0.0, 1.0, 201)
MAX_BANDS = 6


def _color(i: int, n: int) -> tuple[float, ...] | str:
    """Distinct colours: tab10 for up to 10 series, tab20 beyond (cycling past 20)."""
    if n <= 10:
        return f"C{i % 10}"
    return colormaps["tab20"](i % 20)


def _save(fig: Figure, stem: Path) -> list[Path]:
    """PNG and SVG of ``fig``; the same figure gives the same bytes (no date in the SVG,
    SVG element ids from a fixed salt instead of random ones)."""
    FigureCanvasAgg(fig)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    with rc_context({"svg.hashsalt": "kdbench"}):
        fig.savefig(paths[1], bbox_inches="tight", metadata={"Date": None})
    return paths


def _interp_roc(pos: np.ndarray, score: np.ndarray) -> np.ndarray:
    fpr, tpr, _ = roc_curve(pos, score)
    out = np.interp(FPR_GRID, fpr, tpr)
    out[0] = 0.0
    return out


def mean_roc(y: np.ndarray, probs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over runs of the ROC curve on :data:`FPR_GRID`.

    Binary: the positive class (index 1). More classes: the macro average of the
    one-vs-rest curves (TPR averaged over classes at each FPR), the curve whose area is
    the macro AUC of the tables up to interpolation.
    """
    y = np.asarray(y)
    curves = []
    for prob in probs:
        prob = np.asarray(prob, dtype=np.float64)
        if prob.shape[1] == 2:
            curves.append(_interp_roc(y == 1, prob[:, 1]))
        else:
            per = [_interp_roc(y == c, prob[:, c]) for c in range(prob.shape[1]) if np.any(y == c) and np.any(y != c)]
            curves.append(np.mean(per, axis=0))
    arr = np.array(curves)
    return arr.mean(axis=0), arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])


@dataclass
class RocCurve:
    """One curve of a ROC panel: label, mean TPR on :data:`FPR_GRID`, its std, dashed or not.

    Panels with more than :data:`MAX_BANDS` curves draw the band only for the first curve
    (the baseline), the best curve by area and dashed curves, so the figure stays legible.
    """

    label: str
    tpr: np.ndarray
    std: np.ndarray
    dashed: bool = False


def roc_figure(title: str, panels: dict[str, list[RocCurve]], stem: Path) -> list[Path]:
    """ROC curves, one panel per training regime, mean over seeds with a +-1 std band."""
    n = max(1, len(panels))
    fig = Figure(figsize=(4.6 * n, 4.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (panel, curves) in zip(axes, panels.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls=":")
        areas = [-1.0 if c.dashed else float(np.sum(np.diff(FPR_GRID) * (c.tpr[1:] + c.tpr[:-1]) / 2)) for c in curves]
        best = int(np.argmax(areas)) if areas else -1
        for i, c in enumerate(curves):
            color = "black" if c.dashed else _color(i, len(curves))
            band = len(curves) <= MAX_BANDS or i in (0, best) or c.dashed
            ax.plot(FPR_GRID, c.tpr, color=color, lw=1.4, ls="--" if c.dashed else "-", label=c.label)
            if band and np.any(c.std > 0):
                ax.fill_between(
                    FPR_GRID, np.clip(c.tpr - c.std, 0, 1), np.clip(c.tpr + c.std, 0, 1), color=color, alpha=0.15, lw=0
                )
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=panel)
        ax.set_aspect("equal")
        if len(curves) <= MAX_BANDS + 1:
            ax.legend(fontsize=7, loc="lower right")
        else:
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, stem)


@dataclass
class AucBar:
    """One bar: group (regime), label (method), AUC and its CI."""

    group: str
    label: str
    auc: float
    low: float
    high: float


def auc_bars(
    title: str, bars: Sequence[AucBar], stem: Path, teacher_auc: float | None = None, teacher_label: str = "teacher",
    oracle_auc: float | None = None, oracle_label: str = "WLI oracle",
) -> list[Path]:
    """AUC per method, grouped by regime, with bootstrap CI whiskers, the teacher line
    and, where there is one, the WLI-oracle line."""
    groups = list(dict.fromkeys(b.group for b in bars))
    labels = list(dict.fromkeys(b.label for b in bars))
    per_group = {g: [b for b in bars if b.group == g] for g in groups}
    width = 0.8 / max(1, max(len(v) for v in per_group.values()))
    fig = Figure(figsize=(min(14.0, max(6.5, 4.0 + 0.22 * len(bars) + 0.4 * len(groups))), 4.0), layout="constrained")
    ax = fig.subplots()
    seen: set[str] = set()
    for gi, g in enumerate(groups):
        members = per_group[g]
        left = gi - width * len(members) / 2
        for j, b in enumerate(members):
            lo = max(0.0, b.auc - b.low) if np.isfinite(b.low) else 0.0
            hi = max(0.0, b.high - b.auc) if np.isfinite(b.high) else 0.0
            color = _color(labels.index(b.label), len(labels))
            ax.bar(
                left + width * (j + 0.5),
                b.auc,
                width=width * 0.95,
                color=color,
                yerr=[[lo], [hi]],
                capsize=2,
                error_kw={"lw": 0.8},
                label=None if b.label in seen else b.label,
            )
            seen.add(b.label)
    if teacher_auc is not None and np.isfinite(teacher_auc):
        ax.axhline(teacher_auc, color="black", ls="--", lw=1, label=f"{teacher_label} {teacher_auc:.3f}")
    if oracle_auc is not None and np.isfinite(oracle_auc):
        ax.axhline(oracle_auc, color="dimgray", ls=":", lw=1.2, label=f"{oracle_label} {oracle_auc:.3f}")
    finite = [b.low for b in bars if np.isfinite(b.low)] + [b.auc for b in bars]
    bottom = max(0.0, min(finite) - 0.05) if finite else 0.0
    ax.set(
        xticks=range(len(groups)),
        xticklabels=groups,
        ylabel="AUC (95% lesion-bootstrap CI)",
        ylim=(min(bottom, 0.5), 1.005),
        title=title,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, stem)


def cd_diagram(title: str, ranks, nemenyi, cd: float, stem: Path, alpha: float = 0.05) -> list[Path]:
    """Critical-difference diagram (scikit-posthocs): average ranks, 1 = best; bars join
    methods the Nemenyi test cannot tell apart at ``alpha``."""
    import scikit_posthocs as sp

    fig = Figure(figsize=(7.0, 0.9 + 0.28 * len(ranks)), layout="constrained")
    ax = fig.subplots()
    # the CD value goes in the title: scikit-posthocs draws its CD bar over the tick labels
    elements = sp.critical_difference_diagram(
        ranks,
        nemenyi,
        ax=ax,
        alpha=alpha,
        label_fmt_left="{label} ({rank:.2f})",
        label_fmt_right="({rank:.2f}) {label}",
    )
    # scikit-posthocs runs each crossbar through a set of labels, in the process's hash
    # order: sort its points by rank so the same ranks always give the same pixels
    for lines in (elements or {}).get("crossbars", []):
        for line in lines:
            x, y = (np.asarray(v, dtype=np.float64) for v in line.get_data())
            order = np.argsort(x, kind="stable")
            line.set_data(x[order], y[order])
    ax.set_title(title, fontsize=9, pad=22)
    return _save(fig, stem)


def gap_closed_figure(title: str, rows: dict[str, dict[str, float]], stem: Path) -> list[Path]:
    """Share of the teacher-baseline AUC gap each method closes (%), as an annotated heatmap:
    one row per method, one column per dataset / training data."""
    methods = list(rows)
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    grid = np.array([[rows[m].get(c, np.nan) for c in cols] for m in methods], dtype=np.float64)
    fig = Figure(figsize=(min(16.0, 2.5 + 1.1 * len(cols)), 1.6 + 0.32 * len(methods)), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn", vmin=-50, vmax=100, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(cols)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(cols)))
    ax.set_xticklabels(cols, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)))
    ax.set_yticklabels(methods, fontsize=8)
    fig.colorbar(im, ax=ax, label="gap closed (%)", shrink=0.8)
    ax.set_title(title, fontsize=9)
    return _save(fig, stem)


@dataclass
class EpochCurve:
    """One line of a training-curve panel: label, epochs, mean over seeds and its std."""

    label: str
    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def epoch_curves_figure(
    title: str, panels: dict[str, list[EpochCurve]], stem: Path, ylabel: str, log_y: bool = False
) -> list[Path]:
    """A value per epoch, one panel per training regime, one line per method (mean over
    seeds, +-1 std band). Panels with more than :data:`MAX_BANDS` lines draw the band of the
    first line only. ``log_y``: logarithmic axis (every mean must be positive)."""
    n = max(1, len(panels))
    labels = list(dict.fromkeys(c.label for curves in panels.values() for c in curves))
    fig = Figure(figsize=(4.6 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    positive = [float(np.min(c.mean[c.mean > 0])) for cs in panels.values() for c in cs if np.any(c.mean > 0)]
    floor = min(positive) / 10 if positive else 1e-12
    for ax, (panel, curves) in zip(axes, panels.items(), strict=False):
        for i, c in enumerate(curves):
            color = _color(labels.index(c.label), len(labels))
            ax.plot(c.epochs, c.mean, color=color, lw=1.4, marker="o", ms=2.5, label=c.label)
            if (len(curves) <= MAX_BANDS or i == 0) and np.any(c.std > 0):
                low = c.mean - c.std
                ax.fill_between(c.epochs, np.maximum(low, floor) if log_y else low, c.mean + c.std, color=color,
                                alpha=0.15, lw=0)
        if log_y:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=ylabel, title=panel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if len(curves) <= MAX_BANDS + 1:
            ax.legend(fontsize=7, loc="best")
        else:
            ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, stem)
