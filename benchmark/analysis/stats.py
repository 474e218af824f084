"""Significance tests for the report: paired tests over seeds, DeLong's test, Holm, Friedman.

What each comparison means
--------------------------
- **Paired tests over seeds** (:func:`paired_tests`): seed k of method A against seed k
  of method B (same data split, same teacher); the paired t-test (scipy ``ttest_rel``) and
  the Wilcoxon signed-rank test (scipy ``wilcoxon``, exact for small n). They ask whether
  the *training procedure* is better, with training randomness as the noise. With n seeds
  and no ties the smallest two-sided exact Wilcoxon p is ``2 / 2**n``
  (:func:`wilcoxon_min_p`), so fewer than 6 seeds can never reach p < 0.05.
- **DeLong's test** (:func:`delong_test`): two correlated AUCs on the same test images
  (DeLong, DeLong & Clarke-Pearson, Biometrics 1988), with the structural components
  computed by midranks (Sun & Xu, IEEE Signal Processing Letters 21(11), 2014). It asks
  whether the AUC difference survives the sampling of *test images*. No well-kept Python
  library provides it (scipy, statsmodels and scikit-learn do not), so it is written here
  and validated in ``tests/test_stats.py`` against an explicit placement-value
  implementation, the bootstrap variance, Monte-Carlo variance and a published example.
- **More than two classes**: DeLong is applied to the macro one-vs-rest AUC (the AUC the
  tables show), with its variance from the combined structural components: each OvR AUC
  is linearised into per-image placement terms, the terms are averaged over classes per
  image, and the variance is the sum over true classes of n_c times the within-class
  sample variance (images of one class are the independent units, as in DeLong's
  two-sample case, to which this reduces exactly for two classes).
- **Seeds and DeLong**: every seed is scored on the same test images (the data split is
  fixed across training seeds), so the per-seed results are combined by applying DeLong
  once to the *seed-averaged* probabilities of each method (the seed ensemble), see
  :func:`delong_seed_averaged`. Where seeds were scored on different images, it falls
  back to Stouffer's combination of the per-seed signed z (:func:`stouffer`).
- **Holm** (:func:`holm`) adjusts a family of p-values (one table); **Friedman** with the
  **Nemenyi** post-hoc (:func:`friedman_nemenyi`) ranks methods across datasets (Demšar,
  JMLR 2006), via scipy and scikit-posthocs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as sps

# ---------------------------------------------------------------------------------------
# Paired tests over seeds


def wilcoxon_min_p(n: int) -> float:
    """Smallest two-sided exact p-value of the Wilcoxon signed-rank test with n pairs."""
    return 2.0 / 2.0**n if n > 0 else 1.0


def wilcoxon_min_n(alpha: float = 0.05) -> int:
    """Fewest pairs with which the two-sided exact Wilcoxon test can reach p < alpha."""
    n = 1
    while wilcoxon_min_p(n) >= alpha:
        n += 1
    return n


@dataclass(frozen=True)
class PairedResult:
    """Paired comparison of A and B over seeds (difference = A - B).

    ``p_wilcoxon`` is NaN when the test cannot be run (fewer than 1 non-zero difference);
    ``wilcoxon_note`` says when the number of seeds is too small for it to reach
    significance at ``alpha``.
    """

    n: int
    mean_diff: float
    std_diff: float
    t: float
    p_t: float
    w: float
    p_wilcoxon: float
    wilcoxon_note: str


def paired_tests(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> PairedResult:
    """Paired t-test and Wilcoxon signed-rank test of ``a`` against ``b`` (same seeds)."""
    x = np.asarray(a, dtype=np.float64)
    z = np.asarray(b, dtype=np.float64)
    if x.shape != z.shape:
        raise ValueError(f"paired samples need equal lengths; got {len(x)} and {len(z)}")
    keep = np.isfinite(x) & np.isfinite(z)
    x, z = x[keep], z[keep]
    d = x - z
    n = len(d)
    mean_diff = float(d.mean()) if n else math.nan
    std_diff = float(d.std(ddof=1)) if n > 1 else math.nan
    t = p_t = math.nan
    if n >= 2:
        if np.allclose(d, d[0]):
            # zero variance: scipy returns nan (or inf); the mean difference is exact
            t, p_t = (math.nan, 1.0) if d[0] == 0 else (math.copysign(math.inf, d[0]), 0.0)
        else:
            res = sps.ttest_rel(x, z)
            t, p_t = float(res.statistic), float(res.pvalue)
    w = p_w = math.nan
    nonzero = int(np.count_nonzero(d))
    note = ""
    if nonzero >= 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.wilcoxon(x, z)
        w, p_w = float(res.statistic), float(res.pvalue)
    if wilcoxon_min_p(nonzero) >= alpha:
        note = (
            f"{nonzero} non-zero paired difference(s): the smallest two-sided exact Wilcoxon p is "
            f"2/2^{nonzero} = {wilcoxon_min_p(nonzero):.3g} >= {alpha}; at least {wilcoxon_min_n(alpha)} seeds are "
            "needed for it to reach significance"
        )
    if n < 2:
        note = (note + "; " if note else "") + f"{n} paired seed(s): the paired t-test needs at least 2"
    return PairedResult(n, mean_diff, std_diff, t, p_t, w, p_w, note)


# ---------------------------------------------------------------------------------------
# DeLong


def _midrank(x: np.ndarray) -> np.ndarray:
    """Midranks (1-based, ties share their mean rank) of each row of ``x``."""
    return sps.rankdata(x, method="average", axis=-1)


def placement_values(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and structural components of one or more predictors (Sun & Xu 2014, Alg. 1).

    Args:
        pos: boolean (N,), True for the positive images (m of them; n negatives).
        scores: (M, N) scores of M predictors on the same images.

    Returns:
        ``auc`` (M,), ``v10`` (M, m): for each positive, the fraction of negatives it
        outscores (ties 1/2), and ``v01`` (M, n): for each negative, the fraction of
        positives that outscore it.
    """
    pos = np.asarray(pos, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        raise ValueError(f"DeLong needs positives and negatives; got {m} positive and {n} negative images")
    x, y = scores[:, pos], scores[:, ~pos]
    tz = _midrank(scores)
    tx, ty = _midrank(x), _midrank(y)
    v10 = (tz[:, pos] - tx) / n
    v01 = 1.0 - (tz[:, ~pos] - ty) / m
    auc = v10.mean(axis=1)
    return auc, v10, v01


def _linearised_terms(y: np.ndarray, probs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUC (as in the tables) and per-image influence terms (M, N) of M predictors.

    The AUC is linear to first order in per-image terms: for a binary AUC, positive i
    contributes ``v10_i / m`` and negative j ``v01_j / n``. A macro one-vs-rest AUC is the
    class-mean of those terms over the classes present.
    """
    first = np.asarray(probs[0])
    if first.ndim == 1:
        probs = [np.stack([1.0 - np.asarray(p, float), np.asarray(p, float)], axis=1) for p in probs]
    probs = [np.asarray(p, dtype=np.float64) for p in probs]
    k = probs[0].shape[1]
    classes = [1] if k == 2 else [c for c in range(k) if np.any(y == c)]
    if len(np.unique(y)) < 2:
        raise ValueError("DeLong needs test images of at least two classes")
    n_img = len(y)
    auc = np.zeros(len(probs))
    terms = np.zeros((len(probs), n_img))
    for c in classes:
        pos = y == c
        scores = np.stack([p[:, c] for p in probs])
        a, v10, v01 = placement_values(pos, scores)
        auc += a / len(classes)
        terms[:, pos] += v10 / pos.sum() / len(classes)
        terms[:, ~pos] += v01 / (~pos).sum() / len(classes)
    return auc, terms


def delong_covariance(y: Sequence[int] | np.ndarray, probs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (M,) and their DeLong covariance matrix (M, M) on the same test images.

    ``probs``: M arrays, each (N,) positive-class scores or (N, K) class probabilities.
    For K > 2 the AUC is the macro one-vs-rest AUC (see the module docstring). The
    covariance is the sum over true classes c of n_c times the sample covariance
    (ddof = 1) of the per-image terms within class c; for two classes this is exactly
    DeLong's ``S10/m + S01/n``.
    """
    y = np.asarray(y, dtype=np.int64)
    auc, terms = _linearised_terms(y, probs)
    cov = np.zeros((len(probs), len(probs)))
    for c in np.unique(y):
        block = terms[:, y == c]
        n_c = block.shape[1]
        if n_c > 1:
            cov += n_c * np.atleast_2d(np.cov(block, ddof=1))
    return auc, cov


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of AUC_a = AUC_b (two-sided); ``z`` is signed (a - b)."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    z: float
    p: float
    n_images: int
    method: str = "delong"
    note: str = ""


def delong_test(y: Sequence[int] | np.ndarray, prob_a: np.ndarray, prob_b: np.ndarray) -> DeLongResult:
    """DeLong's test for two correlated AUCs on the same test images.

    ``prob_a``/``prob_b``: (N,) positive-class scores or (N, K) probabilities; for K > 2
    the compared AUC is the macro one-vs-rest AUC.
    """
    y = np.asarray(y, dtype=np.int64)
    pa, pb = np.asarray(prob_a, dtype=np.float64), np.asarray(prob_b, dtype=np.float64)
    if pa.shape != pb.shape or pa.shape[0] != len(y):
        raise ValueError(f"DeLong needs both predictions on the same {len(y)} images; got {pa.shape} and {pb.shape}")
    auc, cov = delong_covariance(y, [pa, pb])
    diff = float(auc[0] - auc[1])
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    if var <= 1e-15:
        # identical rankings (or perfect separation by both): no evidence of a difference
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 else (math.copysign(math.inf, diff), 0.0)
        return DeLongResult(float(auc[0]), float(auc[1]), diff, 0.0, z, p, len(y))
    se = math.sqrt(var)
    z = diff / se
    p = float(2 * sps.norm.sf(abs(z)))
    return DeLongResult(float(auc[0]), float(auc[1]), diff, se, z, p, len(y))


def stouffer(z: Sequence[float]) -> tuple[float, float]:
    """Stouffer's combination of signed z-scores (equal weights): Z = sum(z)/sqrt(k), two-sided p."""
    arr = np.asarray([v for v in z if np.isfinite(v)], dtype=np.float64)
    if len(arr) == 0:
        return math.nan, math.nan
    big = float(arr.sum() / math.sqrt(len(arr)))
    return big, float(2 * sps.norm.sf(abs(big)))


def delong_seed_averaged(
    y: Sequence[int] | np.ndarray, probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray]
) -> DeLongResult:
    """DeLong on the seed-averaged probabilities of A and B (all on the same test images)."""
    if not probs_a or not probs_b:
        raise ValueError("delong_seed_averaged needs at least one seed per method")
    pa = np.mean([np.asarray(p, float) for p in probs_a], axis=0)
    pb = np.mean([np.asarray(p, float) for p in probs_b], axis=0)
    res = delong_test(y, pa, pb)
    return DeLongResult(
        res.auc_a,
        res.auc_b,
        res.diff,
        res.se,
        res.z,
        res.p,
        res.n_images,
        method="seed-averaged",
        note=f"DeLong on probabilities averaged over {len(probs_a)} and {len(probs_b)} seed(s)",
    )


def delong_stouffer(
    ys: Sequence[np.ndarray], probs_a: Sequence[np.ndarray], probs_b: Sequence[np.ndarray]
) -> DeLongResult:
    """Per-seed DeLong (seed k of A vs seed k of B on that seed's images) combined by Stouffer."""
    results = [delong_test(y, a, b) for y, a, b in zip(ys, probs_a, probs_b, strict=True)]
    zs = [r.z for r in results]
    big, p = stouffer([max(min(v, 40.0), -40.0) for v in zs])
    return DeLongResult(
        float(np.mean([r.auc_a for r in results])),
        float(np.mean([r.auc_b for r in results])),
        float(np.mean([r.diff for r in results])),
        math.nan,
        big,
        p,
        int(sum(len(y) for y in ys)),
        method="stouffer",
        note=f"Stouffer combination of {len(results)} per-seed DeLong z",
    )


# ---------------------------------------------------------------------------------------
# Multiple comparisons


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="mergesort")]
    adj = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adj)
    return out


# ---------------------------------------------------------------------------------------
# Across datasets


def nemenyi_critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Demšar 2006, Eq. in §3.2.2):
    ``q_alpha * sqrt(k (k + 1) / (6 N))`` with q_alpha the studentized range quantile / sqrt 2."""
    q = sps.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n_blocks)))


@dataclass
class FriedmanResult:
    """Friedman test over blocks (datasets) x treatments (methods); higher score is better.

    ``ranks``: average rank per method (1 = best); ``nemenyi``: pairwise p-values;
    ``cd``: Nemenyi critical difference at ``alpha``; ``note`` says why nothing was
    computed when the design is too small.
    """

    statistic: float
    p: float
    n_blocks: int
    k: int
    ranks: pd.Series
    nemenyi: pd.DataFrame | None
    cd: float
    alpha: float = 0.05
    note: str = ""
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


def friedman_nemenyi(scores: pd.DataFrame, alpha: float = 0.05) -> FriedmanResult:
    """Friedman test and Nemenyi post-hoc on a blocks x methods table of scores.

    Rows with a missing score are dropped (the Friedman test needs complete blocks).
    Needs at least 2 blocks and 3 methods; otherwise the result carries a ``note``.
    """
    table = scores.dropna(axis=0, how="any")
    n, k = table.shape
    ranks = table.rank(axis=1, ascending=False, method="average").mean(axis=0) if n else pd.Series(dtype=float)
    if k < 3 or n < 2:
        note = (
            f"Friedman/Nemenyi needs at least 3 methods and 2 complete blocks; got {k} method(s) "
            f"over {n} complete block(s)"
        )
        return FriedmanResult(math.nan, math.nan, n, k, ranks, None, math.nan, alpha, note, table)
    import scikit_posthocs as sp

    values = table.to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stat, p = sps.friedmanchisquare(*values.T)
        nem = sp.posthoc_nemenyi_friedman(values)
    nem.index = table.columns
    nem.columns = table.columns
    cd = nemenyi_critical_difference(k, n, alpha)
    return FriedmanResult(float(stat), float(p), n, k, ranks, nem, cd, alpha, "", table)
