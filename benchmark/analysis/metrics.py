"""Per-run classification metrics on predicted probabilities, and lesion-level bootstrap CIs.

``classification_metrics`` uses scikit-learn. The bootstrap needs the same metrics on
thousands of resamples; it computes them from *weights* (how often each image is drawn)
so one sort of the scores serves every resample. ``weighted_metrics`` is that vectorised
form; the tests check it against scikit-learn on explicitly repeated samples.

Conventions:
- AUC: binary AUC of the positive class (index 1), or the macro mean of one-vs-rest AUCs
  over the classes present in ``y`` for more classes (the PaGKD paper's AUC).
- Binary tasks: sensitivity is the recall of class 1, specificity the recall of class 0,
  both at the arg-max decision (threshold 0.5).
- ECE: top-label, 15 equal-width confidence bins (Guo et al., ICML 2017, Eq. 3).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score, roc_auc_score

ECE_BINS = 15
METRIC_NAMES = ("auc", "f1", "acc", "balanced_acc", "ece", "sensitivity", "specificity")


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = ECE_BINS) -> float:
    """Top-label ECE with equal-width confidence bins (Guo et al., ICML 2017, Eq. 3)."""
    conf = prob.max(axis=1)
    correct = prob.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def auc_score(y: np.ndarray, prob: np.ndarray) -> float:
    """Binary AUC on the positive class, or the macro mean of one-vs-rest AUCs."""
    n_classes = prob.shape[1]
    if len(np.unique(y)) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    present = np.unique(y)
    aucs = [roc_auc_score(y == c, prob[:, c]) for c in range(n_classes) if c in present]
    return float(np.mean(aucs))


def classification_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """AUC, macro F1, accuracy, balanced accuracy and ECE of one run's predictions, plus
    sensitivity and specificity for binary tasks."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or len(prob) != len(y):
        raise ValueError(f"prob must have shape (len(y), n_classes); got {prob.shape} for {len(y)} labels")
    pred = prob.argmax(axis=1)
    labels = list(range(prob.shape[1]))
    out = {
        "auc": auc_score(y, prob),
        "f1": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "acc": float(accuracy_score(y, pred)),
        "balanced_acc": float(balanced_accuracy_score(y, pred)),
        "ece": expected_calibration_error(y, prob),
    }
    if prob.shape[1] == 2:
        recalls = recall_score(y, pred, labels=[0, 1], average=None, zero_division=np.nan)
        out["sensitivity"] = float(recalls[1])
        out["specificity"] = float(recalls[0])
    return out


# ---------------------------------------------------------------------------------------
# Weighted (resampling) form of the metrics


def _weighted_binary_auc(pos: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUC of ``score`` for positives ``pos`` with image weights ``w`` of shape (B, N).

    Equals the Mann-Whitney AUC (ties count 1/2) of the sample in which image i appears
    ``w[b, i]`` times. One sort serves all B weight vectors.
    """
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    p = pos[order]
    ws = w[:, order]
    n = len(s)
    # tie groups in sorted order: [start, end) for each element
    new_group = np.r_[True, s[1:] != s[:-1]]
    group_id = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.r_[starts[1:], n]
    start_of = starts[group_id]
    end_of = ends[group_id]
    w_neg = np.where(p, 0.0, ws)
    w_pos = np.where(p, ws, 0.0)
    cum = np.concatenate([np.zeros((ws.shape[0], 1)), np.cumsum(w_neg, axis=1)], axis=1)
    below = cum[:, start_of]
    tied = cum[:, end_of] - below
    num = (w_pos * (below + 0.5 * tied)).sum(axis=1)
    den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def weighted_auc(y: np.ndarray, prob: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """AUC as in :func:`auc_score` for each row of weights ``w`` (B, N); shape (B,).

    For more than two classes: the mean of one-vs-rest AUCs over the classes with positive
    weight in that resample (as :func:`auc_score` averages over the classes present).
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    w = np.ones((1, len(y))) if w is None else np.atleast_2d(np.asarray(w, dtype=np.float64))
    k = prob.shape[1]
    if k == 2:
        return _weighted_binary_auc(y == 1, prob[:, 1], w)
    per_class = np.stack([_weighted_binary_auc(y == c, prob[:, c], w) for c in range(k)], axis=1)
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(per_class).sum(axis=1)
        total = np.nansum(per_class, axis=1)
    return np.where(counts >= 2, total / np.maximum(counts, 1), np.nan)


def weighted_metrics(y: np.ndarray, prob: np.ndarray, w: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every metric of :func:`classification_metrics` for each row of weights ``w`` (B, N).

    Row b describes the sample in which image i appears ``w[b, i]`` times; with integer
    weights the values equal scikit-learn's on that repeated sample.
    """
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    w = np.ones((1, len(y))) if w is None else np.atleast_2d(np.asarray(w, dtype=np.float64))
    k = prob.shape[1]
    pred = prob.argmax(axis=1)
    correct = (pred == y).astype(np.float64)
    total = w.sum(axis=1)
    onehot_y = np.eye(k)[y]  # (N, K)
    onehot_p = np.eye(k)[pred]
    true_n = w @ onehot_y  # (B, K)
    pred_n = w @ onehot_p
    tp = w @ (onehot_y * onehot_p)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = tp / true_n
        f1_c = np.where(true_n + pred_n > 0, 2 * tp / np.where(true_n + pred_n > 0, true_n + pred_n, 1), 0.0)
        out = {
            "auc": weighted_auc(y, prob, w),
            "f1": f1_c.mean(axis=1),
            "acc": (w @ correct) / total,
            "balanced_acc": np.nanmean(np.where(true_n > 0, recall, np.nan), axis=1),
        }
    conf = prob.max(axis=1)
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    ece = np.zeros(w.shape[0])
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            wb = w[:, in_bin]
            gap = wb @ correct[in_bin] - wb @ conf[in_bin]
            ece += np.abs(gap) / total
    out["ece"] = ece
    if k == 2:
        out["sensitivity"] = recall[:, 1]
        out["specificity"] = recall[:, 0]
    return out


# ---------------------------------------------------------------------------------------
# Lesion-level bootstrap


class BootstrapCI(NamedTuple):
    """A percentile bootstrap interval.

    ``estimate`` is the metric on the original sample; ``low``/``high`` the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles of the resampled metric;
    ``n_valid`` the resamples where the metric was defined; ``n_units`` the lesions
    that were resampled.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_valid: int
    n_units: int


def lesion_resample_weights(
    y: np.ndarray, lesion: Sequence[object] | None, n_boot: int, seed: int, stratified: bool = True
) -> tuple[np.ndarray, int]:
    """Image weights (n_boot, N) of lesion-level bootstrap resamples, and the lesion count.

    Each resample draws lesions with replacement (within each class when ``stratified``:
    a class with n_c lesions gets n_c draws, so every resample keeps every class); an
    image's weight is how often its lesion was drawn. ``lesion=None`` treats every image
    as its own lesion.
    """
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    keys = np.arange(n) if lesion is None else np.asarray([str(v) for v in lesion])
    if len(keys) != n:
        raise ValueError(f"lesion has {len(keys)} entries for {n} images")
    uniq, image_unit = np.unique(keys, return_inverse=True)
    unit_label = np.zeros(len(uniq), dtype=np.int64)
    unit_label[image_unit] = y
    if stratified:
        for u in range(len(uniq)):
            labels = np.unique(y[image_unit == u])
            if len(labels) > 1:
                raise ValueError(
                    f"lesion {str(uniq[u])!r} has test images of classes {labels.tolist()}; a lesion must have one "
                    "label for a class-stratified lesion bootstrap"
                )
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(uniq)))
    strata = [np.flatnonzero(unit_label == c) for c in np.unique(unit_label)] if stratified else [np.arange(len(uniq))]
    rows = np.arange(n_boot)[:, None]
    for units in strata:
        draws = units[rng.integers(0, len(units), size=(n_boot, len(units)))]
        np.add.at(counts, (np.broadcast_to(rows, draws.shape), draws), 1.0)
    return counts[:, image_unit], len(uniq)


MetricArg = str | Callable[[np.ndarray, np.ndarray], float]


def _resampled_values(y: np.ndarray, prob: np.ndarray, w: np.ndarray, metric: MetricArg) -> np.ndarray:
    if isinstance(metric, str):
        values = weighted_metrics(y, prob, w)
        if metric not in values:
            raise ValueError(f"unknown metric {metric!r}; choose from {sorted(values)} or pass a callable")
        return values[metric]
    out = np.empty(len(w))
    for b, row in enumerate(w):
        idx = np.repeat(np.arange(len(y)), row.astype(np.int64))
        out[b] = metric(y[idx], prob[idx])
    return out


def bootstrap_ci(
    y: Sequence[int] | np.ndarray,
    prob: np.ndarray | Sequence[np.ndarray],
    lesion: Sequence[object] | None,
    metric: MetricArg = "auc",
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stratified: bool = True,
) -> BootstrapCI:
    """Percentile bootstrap CI of a metric, resampling lesions (not images).

    Args:
        y: true labels of the test images.
        prob: (N, K) probabilities, or a sequence of such arrays for the same images
            (e.g. one per training seed): the statistic is then the mean of the metric
            over the arrays, and each resample applies the same lesion draw to all.
        lesion: lesion id of each image (``None``: each image is its own lesion).
        metric: a name from :data:`METRIC_NAMES` or ``callable(y, prob) -> float``.
        n_boot, seed: resamples and the seed of their generator.
        level: coverage of the interval.
        stratified: resample lesions within each class (keeps both classes present).
    """
    y = np.asarray(y, dtype=np.int64)
    probs = [np.asarray(prob, dtype=np.float64)] if np.ndim(prob) == 2 else [np.asarray(p, float) for p in prob]
    for p in probs:
        if p.shape[0] != len(y):
            raise ValueError(f"prob has {p.shape[0]} rows for {len(y)} labels")
    w, n_units = lesion_resample_weights(y, lesion, n_boot, seed, stratified)
    ones = np.ones((1, len(y)))
    estimate = float(np.mean([_resampled_values(y, p, ones, metric)[0] for p in probs]))
    values = np.mean([_resampled_values(y, p, w, metric) for p in probs], axis=0)
    valid = values[np.isfinite(values)]
    if len(valid) == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), level, n_boot, 0, n_units)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return BootstrapCI(estimate, float(low), float(high), level, n_boot, len(valid), n_units)
