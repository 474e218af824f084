"""Power of the Obuchowski-Rockette / Hillis RRRC test, and the smallest AUC difference it detects.

Answers: with this many seeds (readers) and test lesions (cases), how large must the true
difference of two methods' mean AUCs be for the primary test (:mod:`benchmark.analysis.mrmc`, RRRC) to
find it with the requested power? Method: Hillis, Obuchowski & Berbaum, Acad Radiol 18:129-142
(2011), sections "OR power" (also Hillis & Obuchowski et al. 2004), two treatments:

- the test statistic follows a non-central F(1, ddf, lambda) under the alternative, with
  ``D = sigma2_TR + Var - Cov1 + (J - 1) max(Cov2 - Cov3, 0)``,
  ``lambda = J delta^2 / (2 D)`` and
  ``ddf = D^2 / ((sigma2_TR + Var - Cov1 - max(Cov2 - Cov3, 0))^2 / (J - 1))``
  (the expected-mean-square form of Hillis's ddf);
- the error covariances Var, Cov1, Cov2, Cov3 scale with 1 / cases, so a pilot analysis on K
  cases predicts a study on K* cases by multiplying them by K / K*; sigma2_TR (treatment-by-
  reader variance) does not depend on cases and is truncated at 0;
- power = P(F' > F_{1 - alpha}(1, ddf)). Because ddf does not depend on delta, the smallest
  detectable difference is ``sqrt(2 D lambda* / J)`` where lambda* solves power = target.

``alpha`` is two-sided (the F test with one numerator df); for a Holm family of m comparisons
pass ``alpha / m`` to get the difference the first (most stringent) step detects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import optimize
from scipy import stats as sps

from .mrmc import ORAnalysis


@dataclass(frozen=True)
class PowerDesign:
    """Variance components for a power calculation and the design they describe.

    ``var``, ``cov1``, ``cov2``, ``cov3``: OR error covariances measured on ``n_cases`` cases;
    ``var_tr``: treatment-by-reader variance component.
    """

    var_tr: float
    var: float
    cov1: float
    cov2: float
    cov3: float
    n_cases: int

    def denominators(self, n_readers: int, n_cases: int | None = None) -> tuple[float, float]:
        """``(D, E[MS(T:R)])`` for J readers and K* cases (default: the measured K)."""
        scale = 1.0 if n_cases is None else self.n_cases / n_cases
        var_tr = max(self.var_tr, 0.0)
        spread = max(self.cov2 - self.cov3, 0.0) * scale
        base = var_tr + (self.var - self.cov1) * scale
        return base + (n_readers - 1) * spread, base - spread


def _ddf(design: PowerDesign, n_readers: int, n_cases: int | None) -> tuple[float, float]:
    if n_readers < 2:
        raise ValueError(f"the RRRC test needs at least 2 readers (seeds); got {n_readers}")
    d, ms_tr = design.denominators(n_readers, n_cases)
    if d <= 0:
        raise ValueError(f"the RRRC error term is {d:.3g} <= 0; the variance components describe no noise")
    ddf = d**2 / (ms_tr**2 / (n_readers - 1)) if ms_tr > 0 else math.inf
    return d, ddf


def _power_at(lam: float, ddf: float, alpha: float) -> float:
    if math.isinf(ddf):
        crit = sps.chi2.ppf(1 - alpha, 1)
        return float(sps.ncx2.sf(crit, 1, lam))
    crit = sps.f.ppf(1 - alpha, 1, ddf)
    return float(sps.ncf.sf(crit, 1, ddf, lam))


def rrrc_power(
    delta: float, design: PowerDesign, n_readers: int, n_cases: int | None = None, alpha: float = 0.05
) -> float:
    """Power of the OR/Hillis RRRC test to detect a true mean-AUC difference ``delta`` (two-sided)."""
    d, ddf = _ddf(design, n_readers, n_cases)
    return _power_at(n_readers * delta**2 / (2 * d), ddf, alpha)


def min_detectable_difference(
    design: PowerDesign, n_readers: int, n_cases: int | None = None, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest true AUC difference the RRRC test detects with probability ``power`` at level ``alpha``.

    ``n_readers``: seeds per method in the planned design; ``n_cases``: planned test lesions
    (default: as measured).
    """
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1; got alpha={alpha}, power={power}")
    d, ddf = _ddf(design, n_readers, n_cases)
    hi = 1.0
    while _power_at(hi, ddf, alpha) < power:
        hi *= 2
    lam = optimize.brentq(lambda x: _power_at(x, ddf, alpha) - power, 0.0, hi, xtol=1e-12, rtol=1e-12)
    return math.sqrt(2 * d * lam / n_readers)


def design_from_analysis(analysis: ORAnalysis) -> PowerDesign:
    """The variance components of a fitted OR analysis (a pilot or the study itself)."""
    c = analysis.components
    if analysis.rrrc is None:
        raise ValueError("a power calculation for the RRRC test needs an analysis with at least 2 readers (seeds)")
    return PowerDesign(c.var_tr, c.var, c.cov1, c.cov2, c.cov3, c.n_cases)


def detectable_difference(
    analysis: ORAnalysis,
    n_readers: int | None = None,
    n_cases: int | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest AUC difference detectable at ``power`` by the RRRC test, from a fitted analysis.

    Answers, per dataset: what difference could this design (default: the analysed numbers of
    seeds and lesions) find 80 % of the time? Pass ``n_readers``/``n_cases`` to plan another design.
    """
    j = len(analysis.readers) if n_readers is None else n_readers
    return min_detectable_difference(design_from_analysis(analysis), j, n_cases, alpha, power)
