"""Hsu's multiple comparisons with the best (MCB) for the "against the best method" table.

Answers: which methods could be the best, and by how much can each trail the best of the
others, with simultaneous 1 - alpha confidence that accounts for having picked the best
from the data (Hsu, Ann Stat 12:1136, 1984; Hsu, Multiple Comparisons, 1996, ch. 4)?

For k methods with estimated means ``m_i`` (here: seed-mean AUCs), a common standard error
``se`` of every pairwise difference and ``df`` degrees of freedom, with ``d`` the one-sided
Dunnett critical value for k - 1 comparisons (equicorrelated 1/2, ``df``), the constrained MCB
intervals for ``mu_i - max_{j != i} mu_j`` are

    [ -(m_i - max_{j != i} m_j - d se)^-,  (m_i - max_{j != i} m_j + d se)^+ ]

(``x^- = max(-x, 0)``, ``x^+ = max(x, 0)``): a method whose upper bound is 0 is declared not
the best; a method whose lower bound is 0 is declared the best. With the MRMC analysis,
``se = sqrt(2 MSden / J)`` and ``df`` = Hillis's ddf of the OR RRRC analysis of all methods
together (:func:`mcb_from_analysis`), which assumes, as OR does, one error structure for all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sps

from .mrmc import ORAnalysis

_X = np.linspace(-8.5, 8.5, 341)  # grid for the normal integral
_WX = sps.norm.pdf(_X) * (_X[1] - _X[0])


def _prob_all_below(c: float, n_comp: int, df: float) -> float:
    """P(max_i T_i <= c) for n_comp one-sided Dunnett statistics (correlation 1/2, df)."""
    if math.isinf(df):
        scales = np.array([1.0])
        weights = np.array([1.0])
    else:
        dist = sps.chi(df, scale=1 / math.sqrt(df))  # S = sqrt(chi2_df / df)
        scales = np.linspace(dist.ppf(1e-12), dist.ppf(1 - 1e-12), 161)
        weights = dist.pdf(scales) * (scales[1] - scales[0])
    inner = sps.norm.cdf(_X[None, :] + math.sqrt(2.0) * c * scales[:, None]) ** n_comp
    return float(weights @ (inner @ _WX))


def dunnett_one_sided(n_comp: int, df: float = math.inf, alpha: float = 0.05) -> float:
    """One-sided Dunnett critical value for ``n_comp`` comparisons with a control (equal group sizes)."""
    if n_comp < 1:
        raise ValueError(f"Dunnett needs at least one comparison; got {n_comp}")
    return float(optimize.brentq(lambda c: _prob_all_below(c, n_comp, df) - (1 - alpha), 0.0, 20.0, xtol=1e-10))


@dataclass(frozen=True)
class MCBRow:
    """One method's MCB interval for (its mean - the best mean among the others)."""

    method: str
    mean: float
    diff_to_best_other: float
    low: float
    high: float
    can_be_best: bool
    is_best: bool


def hsu_mcb(
    means: Mapping[str, float], se: float, df: float = math.inf, alpha: float = 0.05, higher_is_better: bool = True
) -> list[MCBRow]:
    """Hsu's constrained MCB intervals for every method (see the module docstring)."""
    names = list(means)
    if len(names) < 2:
        raise ValueError(f"MCB needs at least 2 methods; got {len(names)}")
    sign = 1.0 if higher_is_better else -1.0
    m = sign * np.array([means[n] for n in names], dtype=np.float64)
    d = dunnett_one_sided(len(names) - 1, df, alpha)
    rows = []
    for i, name in enumerate(names):
        diff = float(m[i] - np.max(np.delete(m, i)))
        low = -max(-(diff - d * se), 0.0)
        high = max(diff + d * se, 0.0)
        lo, hi = (low, high) if sign > 0 else (-high, -low)
        can_be_best, is_best = bool(high > 0), bool(low >= 0)
        rows.append(MCBRow(name, float(means[name]), sign * diff, float(lo), float(hi), can_be_best, is_best))
    return rows


def mcb_from_analysis(analysis: ORAnalysis) -> list[MCBRow]:
    """MCB over all treatments of an OR analysis, with the RRRC error term and Hillis ddf."""
    if analysis.rrrc is None:
        raise ValueError("MCB with random seeds needs at least 2 seeds per method")
    j = len(analysis.readers)
    se = math.sqrt(2 * analysis.rrrc.denominator / j)
    means = dict(zip(analysis.treatments, analysis.auc.mean(axis=1).tolist(), strict=True))
    return hsu_mcb(means, se, analysis.rrrc.df2, analysis.alpha)
