"""Per-run classification metrics on predicted probabilities (scikit-learn)."""

from __future__ import annotations

import itertools

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score


def expected_calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 15) -> float:
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
    """AUC, macro F1, accuracy, balanced accuracy and ECE of one run's predictions."""
    y = np.asarray(y, dtype=np.int64)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob.argmax(axis=1)
    labels = list(range(prob.shape[1]))
    return {
        "auc": auc_score(y, prob),
        "f1": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "acc": float(accuracy_score(y, pred)),
        "balanced_acc": float(balanced_accuracy_score(y, pred)),
        "ece": expected_calibration_error(y, prob),
    }
