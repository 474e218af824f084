"""Ranking methods across datasets: Friedman with Iman-Davenport's F, Nemenyi, datasets as blocks;
and which comparisons each Holm family covers.

Blocks. Friedman's test assumes independent blocks. The training-data regimes of one dataset
are scored on the same test images, so they are not independent: :func:`dataset_blocks`
averages a method's score over the regimes of a dataset, making each dataset one block
(Demšar, JMLR 7:1-30, 2006, section 3.2.2, treats data sets as the independent units).

Iman & Davenport (Commun Stat Theory Methods 9:571, 1980) showed Friedman's chi-square is
conservative; their statistic ``F_F = (N - 1) chi2_F / (N (k - 1) - chi2_F)`` follows F with
``(k - 1, (k - 1)(N - 1))`` df (Demšar 2006, section 3.2.2). Both are reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from .stats import FriedmanResult, friedman_nemenyi

HOLM_FAMILIES = """\
Holm families (each adjusts the p-values of one table and one test column, at alpha = 0.05):
- "Against the baseline": one family per dataset and per test (the primary MRMC OR-Hillis test, and each
  secondary test separately), over every (training data, method) row of that dataset's table: every method
  is compared with the student-only baseline trained on the same data; the reference rows (teachers, the
  WLI oracle) and the baseline itself are not in the family. The main table's marks use the same families.
- "Against the best method": no Holm family; Hsu's multiple comparisons with the best gives
  simultaneous intervals per (dataset, training data) cell instead, which already account for
  picking the best from the same data.
- Ablations: no tests (means and standard deviations only); each variant is a row of its dataset's
  "against the baseline" table and belongs to that family.
- Ranking across datasets: a single Friedman (and Iman-Davenport) test; the Nemenyi post-hoc is
  itself a simultaneous procedure over all pairs of methods and is not Holm-adjusted again.
"""


def iman_davenport(chi2: float, n_blocks: int, k: int) -> tuple[float, float, float, float]:
    """Iman-Davenport ``(F_F, df1, df2, p)`` from Friedman's chi-square over ``n_blocks`` blocks and ``k`` methods."""
    df1, df2 = k - 1, (k - 1) * (n_blocks - 1)
    den = n_blocks * (k - 1) - chi2
    f = (n_blocks - 1) * chi2 / den if den > 0 else math.inf
    return f, float(df1), float(df2), float(sps.f.sf(f, df1, df2)) if math.isfinite(f) else 0.0


def friedman_chi2_from_ranks(average_ranks: Sequence[float], n_blocks: int) -> float:
    """Friedman's chi-square from average ranks (no tie correction; Demšar 2006, section 3.2.2)."""
    r = np.asarray(average_ranks, dtype=np.float64)
    k = len(r)
    return float(12 * n_blocks / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4))


def dataset_blocks(
    scores: pd.DataFrame, block: str = "dataset", method: str = "method", value: str = "score"
) -> pd.DataFrame:
    """A blocks x methods table from long rows (one per dataset, regime, method): the mean over regimes.

    Rows where a method lacks a regime that other methods have are averaged over what exists; a
    dataset where some method has no score at all gets NaN there (dropped by the Friedman test).
    """
    missing = [c for c in (block, method, value) if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}; they need {block!r}, {method!r} and {value!r}")
    return scores.groupby([block, method])[value].mean().unstack(method)


@dataclass(frozen=True)
class RankingResult:
    """Friedman/Nemenyi over dataset blocks with Iman-Davenport's F beside the chi-square."""

    friedman: FriedmanResult
    iman_davenport_f: float
    iman_davenport_df: tuple[float, float]
    iman_davenport_p: float


def friedman_by_dataset(
    scores: pd.DataFrame,
    block: str = "dataset",
    method: str = "method",
    value: str = "score",
    alpha: float = 0.05,
) -> RankingResult:
    """Answers: do methods rank differently across datasets (each dataset one block)?

    ``scores``: long rows with a dataset, a method and a score (e.g. seed-mean AUC per regime).
    """
    table = dataset_blocks(scores, block, method, value)
    res = friedman_nemenyi(table, alpha)
    if not math.isfinite(res.statistic):
        return RankingResult(res, math.nan, (math.nan, math.nan), math.nan)
    f, df1, df2, p = iman_davenport(res.statistic, res.n_blocks, res.k)
    return RankingResult(res, f, (df1, df2), p)
