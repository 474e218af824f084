"""Lesion-clustered empirical AUC: per-case structural components, DeLong-type covariance and
the leave-one-case-out jackknife (Obuchowski, Biometrics 53:567-578, 1997).

A *case* (cluster) is a lesion: all views of one lesion form one case, and cases, not images,
are the independent sampling units. The AUC itself is the ordinary empirical (Mann-Whitney)
area over all image pairs, ties counting 1/2; only its variance changes.

Structural components (Obuchowski 1997, section 2). For a binary task with N1 positive and
N0 negative images in I cases, ``psi(x, y) = 1[x > y] + 1/2 1[x = y]`` and

- ``V10_k = sum over positive images i of case k of (1/N0) sum_j psi(x_i, y_j)``,
- ``V01_k = sum over negative images j of case k of (1/N1) sum_i psi(x_i, y_j)``,
- ``S10 = I10 / ((I10 - 1) N1) sum_k (V10_k - m_k A)^2`` (I10 cases with a positive image,
  m_k positives in case k), ``S01`` likewise over negatives, and
  ``S11 = I / (I - 1) sum_k (V10_k - m_k A)(V01_k - n_k A)``;
- ``Var(A) = S10 / N1 + S01 / N0 + 2 S11 / (N1 N0)``; the covariance of two AUCs on the same
  images uses the cross products of the two readers' components (S11 symmetrised).

With one image per case this is exactly DeLong, DeLong & Clarke-Pearson (1988). Lesion
classification has one label per lesion, so ``S11 = 0`` there; mixed cases are allowed for
binary tasks.

More than two classes: the figure of merit is the macro one-vs-rest AUC (the tables' AUC).
Its per-case influence term is the class mean of the one-vs-rest terms
``(V10_k - m_k A_c) / N1 + (V01_k - n_k A_c) / N0``, and the covariance is, for each true class
g, ``I_g / (I_g - 1)`` times the sum of squared deviations of the terms of class-g cases from
their class mean (cases of one class are exchangeable units, as in DeLong's two-sample case).
For two classes this reduces exactly to the binary formula above. It needs every case to have
one label.

The jackknife leaves one case out and recomputes every AUC in closed form from the same sums
(no re-ranking): removing case k removes ``N0 V10_k + N1 V01_k - W_k`` from the pair count's
numerator, where ``W_k`` is the psi-sum over positive/negative pairs inside case k.

All functions accept scores with leading batch dimensions (replicates of a simulation) and a
last axis over images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# ---------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Cases:
    """The case (lesion) structure of a test set.

    ``index``: case number (0..I-1) of each image; ``ids``: the case ids in that order;
    ``label``: each case's class (-1 where a case mixes classes).
    """

    index: np.ndarray
    ids: np.ndarray
    label: np.ndarray

    @property
    def n_cases(self) -> int:
        return len(self.ids)

    @property
    def pure(self) -> bool:
        return bool(np.all(self.label >= 0))


def make_cases(y: Sequence[int] | np.ndarray, lesion: Sequence[object] | None) -> Cases:
    """Case structure from per-image labels and lesion ids (``None``: every image is its own case)."""
    y = np.asarray(y, dtype=np.int64)
    if lesion is None:
        keys = np.arange(len(y))
    else:
        keys = np.asarray([str(v) for v in lesion])
        if len(keys) != len(y):
            raise ValueError(f"lesion ids: {len(keys)} entries for {len(y)} images; give one lesion id per test image")
    ids, index = np.unique(keys, return_inverse=True)
    lo = np.full(len(ids), np.iinfo(np.int64).max)
    hi = np.full(len(ids), -1)
    np.minimum.at(lo, index, y)
    np.maximum.at(hi, index, y)
    label = np.where(lo == hi, lo, -1)
    return Cases(index, ids, label)


# ---------------------------------------------------------------------------------------
# Per-case structural components


@dataclass(frozen=True)
class BinaryComponents:
    """Per-case structural components of one binary split (positives ``pos``) for every reader.

    Shapes: ``auc`` (..., M); ``v10``/``v01`` (..., M, I) per-case sums; ``m``/``n`` (I,) positive
    and negative image counts per case; ``within`` (..., M, I) psi-sums of pairs inside a case.
    """

    auc: np.ndarray
    v10: np.ndarray
    v01: np.ndarray
    m: np.ndarray
    n: np.ndarray
    within: np.ndarray

    @property
    def n_pos(self) -> int:
        return int(self.m.sum())

    @property
    def n_neg(self) -> int:
        return int(self.n.sum())


def _case_sums(values: np.ndarray, case_of: np.ndarray, n_cases: int) -> np.ndarray:
    """Sum the last axis of ``values`` by case: (..., n) -> (..., n_cases); cases without entries get 0."""
    order = np.argsort(case_of, kind="stable")
    sorted_cases = case_of[order]
    starts = np.flatnonzero(np.r_[True, sorted_cases[1:] != sorted_cases[:-1]])
    out = np.zeros((*values.shape[:-1], n_cases))
    out[..., sorted_cases[starts]] = np.add.reduceat(values[..., order], starts, axis=-1)
    return out


def binary_components(pos: np.ndarray, scores: np.ndarray, cases: Cases) -> BinaryComponents:
    """Structural components of the AUC of ``scores`` (..., M, N) for positives ``pos`` (N,) by case.

    Placement values come from midranks (Sun & Xu, IEEE SPL 21(11), 2014): one sort per reader.
    """
    pos = np.asarray(pos, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError(f"an AUC needs positive and negative images; got {n1} positive and {n0} negative")
    n_cases = cases.n_cases
    x, yneg = scores[..., pos], scores[..., ~pos]
    tz = sps.rankdata(scores, method="average", axis=-1)
    v10_img = (tz[..., pos] - sps.rankdata(x, method="average", axis=-1)) / n0
    v01_img = 1.0 - (tz[..., ~pos] - sps.rankdata(yneg, method="average", axis=-1)) / n1
    auc = v10_img.mean(axis=-1)
    v10 = _case_sums(v10_img, cases.index[pos], n_cases)
    v01 = _case_sums(v01_img, cases.index[~pos], n_cases)
    m = np.bincount(cases.index[pos], minlength=n_cases).astype(np.float64)
    n = np.bincount(cases.index[~pos], minlength=n_cases).astype(np.float64)
    within = np.zeros(v10.shape)
    for k in np.flatnonzero((m > 0) & (n > 0)):  # mixed cases only (none in lesion classification)
        in_k = cases.index == k
        xs = scores[..., in_k & pos][..., :, None]
        ys = scores[..., in_k & ~pos][..., None, :]
        within[..., k] = ((xs > ys) + 0.5 * (xs == ys)).sum(axis=(-2, -1))
    return BinaryComponents(auc, v10, v01, m, n, within)


def _as_scores(y: np.ndarray, scores: np.ndarray) -> tuple[list[int], list[np.ndarray]]:
    """Normalise reader scores to per-class (..., M, N) arrays.

    ``scores``: (..., M, N) positive-class scores of a binary task, or (..., M, N, K) class
    probabilities (K = 2: class 1 is positive; K > 2: macro one-vs-rest over classes present).
    """
    if len(np.unique(y)) < 2:
        raise ValueError("an AUC needs test images of at least two classes")
    if scores.shape[-1] == len(y) and (scores.ndim < 3 or scores.shape[-2] != len(y)):
        if not set(np.unique(y).tolist()) <= {0, 1}:
            raise ValueError("one score per image is a binary task; pass (..., N, K) probabilities for K classes")
        return [1], [scores]
    if scores.ndim < 3 or scores.shape[-2] != len(y):
        raise ValueError(f"scores of shape {scores.shape} do not match {len(y)} images")
    k = scores.shape[-1]
    if k == 2:
        return [1], [scores[..., 1]]
    classes = [c for c in range(k) if np.any(y == c)]
    return classes, [scores[..., c] for c in classes]


def components(y: np.ndarray, scores: np.ndarray, cases: Cases) -> list[BinaryComponents]:
    """Per-class structural components (one entry for binary tasks, one per present class otherwise)."""
    classes, per_class = _as_scores(np.asarray(y, dtype=np.int64), np.asarray(scores, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    return [binary_components(y == c, s, cases) for c, s in zip(classes, per_class, strict=True)]


def figure_of_merit(parts: list[BinaryComponents]) -> np.ndarray:
    """The AUC (binary) or macro one-vs-rest AUC, shape (..., M)."""
    return np.mean([p.auc for p in parts], axis=0)


# ---------------------------------------------------------------------------------------
# Covariances


def _outer_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum over cases k of a[..., :, k] b[..., :, k]^T -> (..., M, M)."""
    return a @ np.swapaxes(b, -1, -2)


def delong_covariance_from_components(parts: list[BinaryComponents], cases: Cases) -> np.ndarray:
    """Clustered DeLong covariance (..., M, M) of the figure of merit (see the module docstring)."""
    if len(parts) == 1:
        p = parts[0]
        n1, n0 = p.n_pos, p.n_neg
        d10 = p.v10 - p.m * p.auc[..., None]
        d01 = p.v01 - p.n * p.auc[..., None]
        i10, i01, n_cases = int((p.m > 0).sum()), int((p.n > 0).sum()), cases.n_cases
        if min(i10, i01) < 2:
            raise ValueError(f"a clustered AUC variance needs >= 2 positive and >= 2 negative cases; got {i10}, {i01}")
        s10 = i10 / ((i10 - 1) * n1) * _outer_sum(d10, d10)
        s01 = i01 / ((i01 - 1) * n0) * _outer_sum(d01, d01)
        s11 = n_cases / (n_cases - 1) * _outer_sum(d10, d01)
        return s10 / n1 + s01 / n0 + (s11 + np.swapaxes(s11, -1, -2)) / (n1 * n0)
    if not cases.pure:
        bad = cases.ids[cases.label < 0][:3].tolist()
        raise ValueError(
            f"cases {bad} have images of more than one class; the macro-AUC covariance needs one label per lesion"
        )
    phi = np.mean(
        [(p.v10 - p.m * p.auc[..., None]) / p.n_pos + (p.v01 - p.n * p.auc[..., None]) / p.n_neg for p in parts],
        axis=0,
    )
    cov = np.zeros((*phi.shape[:-1], phi.shape[-2]))
    for g in np.unique(cases.label):
        in_g = cases.label == g
        n_g = int(in_g.sum())
        if n_g < 2:
            raise ValueError(f"class {g} has {n_g} case(s); a clustered AUC variance needs at least 2 per class")
        block = phi[..., in_g]
        block = block - block.mean(axis=-1, keepdims=True)
        cov = cov + n_g / (n_g - 1) * _outer_sum(block, block)
    return cov


def jackknife_aucs(parts: list[BinaryComponents]) -> np.ndarray:
    """Leave-one-case-out figures of merit, shape (..., M, I), in closed form."""
    out = []
    for p in parts:
        n1, n0 = p.n_pos, p.n_neg
        total = p.auc[..., None] * (n1 * n0)
        removed = n0 * p.v10 + n1 * p.v01 - p.within
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append((total - removed) / ((n1 - p.m) * (n0 - p.n)))
    jack = np.mean(out, axis=0)
    if not np.all(np.isfinite(jack)):
        raise ValueError("leaving one lesion out removes a whole class; the jackknife needs >= 2 lesions per class")
    return jack


def jackknife_covariance_from_components(parts: list[BinaryComponents]) -> np.ndarray:
    """Jackknife covariance (..., M, M) over cases: (K - 1)/K sum_k of products of deviations."""
    jack = jackknife_aucs(parts)
    k = jack.shape[-1]
    dev = jack - jack.mean(axis=-1, keepdims=True)
    return (k - 1) / k * _outer_sum(dev, dev)


COV_METHODS = ("delong", "jackknife")


def auc_covariance(
    y: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    lesion: Sequence[object] | None,
    method: str = "delong",
) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (..., M) of M readers on the same test images and their covariance over lesions (..., M, M).

    Args:
        y: true class of each image (N,).
        scores: (..., M, N) positive-class scores (binary) or (..., M, N, K) class probabilities.
        lesion: lesion id of each image; all views of a lesion form one case (``None``: images are cases).
        method: ``"delong"`` (clustered structural components, Obuchowski 1997) or ``"jackknife"``
            (leave one lesion out).
    """
    y = np.asarray(y, dtype=np.int64)
    cases = make_cases(y, lesion)
    parts = components(y, np.asarray(scores, dtype=np.float64), cases)
    auc = figure_of_merit(parts)
    if method == "delong":
        return auc, delong_covariance_from_components(parts, cases)
    if method == "jackknife":
        return auc, jackknife_covariance_from_components(parts)
    raise ValueError(f"unknown covariance method {method!r}; choose from {COV_METHODS}")


# ---------------------------------------------------------------------------------------
# One model, two models


def _stack_readers(y: np.ndarray, probs: Sequence[np.ndarray]) -> np.ndarray:
    arrs = [np.asarray(p, dtype=np.float64) for p in probs]
    shapes = {a.shape for a in arrs}
    if len(shapes) != 1 or arrs[0].shape[0] != len(y):
        raise ValueError(f"predictions must all cover the same {len(y)} images; got shapes {sorted(shapes)}")
    return np.stack(arrs)


@dataclass(frozen=True)
class ClusteredAUC:
    """One model's AUC with a lesion-clustered DeLong standard error and a Wald interval (clipped to [0, 1])."""

    auc: float
    se: float
    low: float
    high: float
    level: float
    n_images: int
    n_lesions: int


def clustered_auc_ci(
    y: Sequence[int] | np.ndarray, prob: np.ndarray, lesion: Sequence[object] | None, level: float = 0.95
) -> ClusteredAUC:
    """AUC of one model (e.g. a one-seed teacher) with its lesion-clustered DeLong CI (Obuchowski 1997).

    Answers: how precisely does this test set pin down this model's AUC, when views of one lesion
    are not independent? ``prob``: (N,) positive-class scores or (N, K) probabilities.
    """
    y = np.asarray(y, dtype=np.int64)
    auc, cov = auc_covariance(y, _stack_readers(y, [prob]), lesion, "delong")
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    q = float(sps.norm.ppf(0.5 + level / 2))
    a = float(auc[0])
    return ClusteredAUC(a, se, max(0.0, a - q * se), min(1.0, a + q * se), level, len(y), make_cases(y, lesion).n_cases)


@dataclass(frozen=True)
class ClusteredComparison:
    """Two models on the same images: ``diff = auc_a - auc_b`` with a lesion-clustered DeLong SE, z test and CI."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float
    low: float
    high: float
    level: float
    n_images: int
    n_lesions: int


def clustered_delong_test(
    y: Sequence[int] | np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    lesion: Sequence[object] | None,
    level: float = 0.95,
) -> ClusteredComparison:
    """Obuchowski's (1997) clustered test of AUC_a = AUC_b for two single models on the same images.

    Answers: is model A's AUC different from model B's on this population of lesions, with the
    test images as the only randomness (no training seeds)? Use the MRMC analysis in
    :mod:`benchmark.analysis.mrmc` when several seeds per method exist.
    """
    y = np.asarray(y, dtype=np.int64)
    auc, cov = auc_covariance(y, _stack_readers(y, [prob_a, prob_b]), lesion, "delong")
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    n_les = make_cases(y, lesion).n_cases
    if var <= 1e-15:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (math.copysign(math.inf, diff), 0.0)
        return ClusteredComparison(float(auc[0]), float(auc[1]), diff, 0.0, z, p, diff, diff, level, len(y), n_les)
    se = math.sqrt(var)
    z = diff / se
    q = float(sps.norm.ppf(0.5 + level / 2))
    p = float(2 * sps.norm.sf(abs(z)))
    return ClusteredComparison(
        float(auc[0]), float(auc[1]), diff, se, z, p, diff - q * se, diff + q * se, level, len(y), n_les
    )
