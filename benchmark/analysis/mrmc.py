"""Multi-reader multi-case ROC analysis: Obuchowski-Rockette with Hillis's degrees of freedom.

The benchmark's design maps onto an MRMC study as follows:

- **treatments** are methods (distillation methods, the baseline);
- **readers** are training seeds: seed k of every method is one reader. Seeds are a random
  sample of possible training runs, so RRRC treats them as random;
- **cases** are lesions: all views (images) of one lesion form one case; lesions, not images,
  are the independent sampling units.

The figure of merit of one (method, seed) is the empirical AUC (binary) or the macro
one-vs-rest AUC (more classes; the AUC the tables show). Its covariance over cases comes from
:mod:`benchmark.analysis.clustered_auc`: clustered DeLong structural components (Obuchowski 1997) or the
leave-one-lesion-out jackknife.

Obuchowski-Rockette (OR) model (Obuchowski & Rockette, Commun Stat Simul Comput 24:285, 1995):
``AUC_ij = mu + tau_i + R_j + (tau R)_ij + e_ij`` with error covariances over cases
``Var`` (same reader, same treatment), ``Cov1`` (same reader, different treatment), ``Cov2``
(different reader, same treatment), ``Cov3`` (different reader, different treatment); each
is the mean of the matching entries of the AUC covariance matrix.

Tests (Hillis, Stat Med 26:596, 2007; Hillis, Berbaum & Metz, Acad Radiol 15:647, 2008;
alpha two-sided), with I treatments, J readers and the ANOVA mean squares of the AUC table:

- **RRRC** (random readers and cases; the primary test: does the method change the AUC for a
  new seed on new lesions?): ``MSden = MS(T:R) + J max(Cov2 - Cov3, 0)``,
  ``F = MS(T) / MSden`` on ``(I - 1, ddf_H)`` with
  ``ddf_H = MSden^2 / (MS(T:R)^2 / ((I - 1)(J - 1)))``; a contrast has
  ``SE = sqrt(2 MSden / J)`` and a t interval on ``ddf_H``. A single treatment has
  ``SE^2 = (MS(R)_i + J max(Cov2_i, 0)) / J`` on ``(MS(R)_i + J max(Cov2_i, 0))^2 / (MS(R)_i^2 / (J - 1))`` df.
- **FRRC** (these seeds fixed, lesions random: is the difference real for *these* trained
  models?): ``X2 = (I - 1) MS(T) / (Var - Cov1 + (J - 1) max(Cov2 - Cov3, 0))``, chi-square on
  I - 1 df; per-reader contrasts ``SE^2 = Var(AUC_aj) + Var(AUC_bj) - 2 Cov``; normal intervals.
- **RRFC** (these lesions fixed, seeds random): ``F = MS(T) / MS(T:R)`` on ``(I - 1, (I - 1)(J - 1))``.

Variance components (Hillis et al. 2005): ``Var(T:R) = MS(T:R) - Var + Cov1 + Cov2 - Cov3`` and
``Var(R) = (MS(R) - Var(T:R) - Var - (I - 1) Cov1 + Cov2 + (I - 1) Cov3) / I``.

Validated against the published Van Dyke (1993) analyses in ``tests/test_mrmc.py``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .clustered_auc import auc_covariance, make_cases

# ---------------------------------------------------------------------------------------
# Array core (leading batch dimensions allowed)


def _masks(n_treat: int, n_read: int) -> dict[str, np.ndarray]:
    t = np.repeat(np.arange(n_treat), n_read)
    r = np.tile(np.arange(n_read), n_treat)
    same_t = t[:, None] == t[None, :]
    same_r = r[:, None] == r[None, :]
    return {
        "var": same_t & same_r,
        "cov1": ~same_t & same_r,
        "cov2": same_t & ~same_r,
        "cov3": ~same_t & ~same_r,
        "t": t,
        "r": r,
    }


def _masked_mean(cov: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = int(mask.sum())
    if count == 0:
        return np.full(cov.shape[:-2], np.nan)
    return (cov * mask).sum(axis=(-2, -1)) / count


def error_covariances(cov: np.ndarray, n_treat: int, n_read: int) -> dict[str, np.ndarray]:
    """OR error (co)variances Var, Cov1, Cov2, Cov3 from the (..., IJ, IJ) AUC covariance (index i*J + j).

    Also the per-treatment ``var_t``/``cov2_t`` (..., I) and per-reader ``var_r``/``cov1_r`` (..., J) pieces.
    """
    mk = _masks(n_treat, n_read)
    out = {name: _masked_mean(cov, mk[name]) for name in ("var", "cov1", "cov2", "cov3")}
    out["var_t"] = np.stack([_masked_mean(cov, mk["var"] & (mk["t"][:, None] == i)) for i in range(n_treat)], -1)
    out["cov2_t"] = np.stack([_masked_mean(cov, mk["cov2"] & (mk["t"][:, None] == i)) for i in range(n_treat)], -1)
    out["var_r"] = np.stack([_masked_mean(cov, mk["var"] & (mk["r"][:, None] == j)) for j in range(n_read)], -1)
    out["cov1_r"] = np.stack([_masked_mean(cov, mk["cov1"] & (mk["r"][:, None] == j)) for j in range(n_read)], -1)
    return out


def mean_squares(auc: np.ndarray) -> dict[str, np.ndarray]:
    """Two-way ANOVA mean squares of an (..., I, J) AUC table: MS(T), MS(R), MS(T:R), per-treatment MS(R)_i."""
    n_treat, n_read = auc.shape[-2:]
    grand = auc.mean(axis=(-2, -1), keepdims=True)
    t_mean = auc.mean(axis=-1, keepdims=True)
    r_mean = auc.mean(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ms_t = n_read * ((t_mean - grand) ** 2).sum(axis=(-2, -1)) / (n_treat - 1) if n_treat > 1 else np.nan
        ms_r = n_treat * ((r_mean - grand) ** 2).sum(axis=(-2, -1)) / (n_read - 1) if n_read > 1 else np.nan
        inter = auc - t_mean - r_mean + grand
        df_tr = (n_treat - 1) * (n_read - 1)
        ms_tr = (inter**2).sum(axis=(-2, -1)) / df_tr if df_tr > 0 else np.full(auc.shape[:-2], np.nan)
        ms_r_t = ((auc - t_mean) ** 2).sum(axis=-1) / (n_read - 1) if n_read > 1 else np.full(auc.shape[:-1], np.nan)
    return {"ms_t": np.asarray(ms_t), "ms_r": np.asarray(ms_r), "ms_tr": np.asarray(ms_tr), "ms_r_t": ms_r_t}


def _f_sf(f: np.ndarray, df1: float, df2: np.ndarray) -> np.ndarray:
    """Upper tail of F(df1, df2), with df2 = inf read as chi-square / df1."""
    f, df2 = np.broadcast_arrays(np.asarray(f, float), np.asarray(df2, float))
    finite = np.isfinite(df2)
    out = np.empty(f.shape)
    out[finite] = sps.f.sf(f[finite], df1, df2[finite])
    out[~finite] = sps.chi2.sf(f[~finite] * df1, df1)
    return out


def rrrc_batch(auc: np.ndarray, cov: np.ndarray) -> dict[str, np.ndarray]:
    """OR RRRC F test with Hillis ddf for a batch of AUC tables (..., I, J) and covariances (..., IJ, IJ).

    Returns ``F``, ``ddf``, ``p``, ``msden`` and, for the first two treatments, ``diff`` (t1 - t2)
    and its ``se``. Used directly by the null simulation; :func:`or_analysis` wraps it.
    """
    n_treat, n_read = auc.shape[-2:]
    if n_read < 2 or n_treat < 2:
        raise ValueError(f"RRRC needs >= 2 treatments and >= 2 readers (seeds); got {n_treat} and {n_read}")
    ms = mean_squares(auc)
    ec = error_covariances(cov, n_treat, n_read)
    msden = ms["ms_tr"] + n_read * np.maximum(ec["cov2"] - ec["cov3"], 0.0)
    df_tr = (n_treat - 1) * (n_read - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = ms["ms_t"] / msden
        ddf = np.where(ms["ms_tr"] > 0, msden**2 / (ms["ms_tr"] ** 2 / df_tr), np.inf)
    p = _f_sf(f, n_treat - 1, ddf)
    diff = auc[..., 0, :].mean(axis=-1) - auc[..., 1, :].mean(axis=-1)
    return {"F": f, "ddf": ddf, "p": p, "msden": msden, "diff": diff, "se": np.sqrt(2 * msden / n_read)}


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ORComponents:
    """OR error covariances, ANOVA mean squares and variance components of one analysis."""

    var: float
    cov1: float
    cov2: float
    cov3: float
    var_r: float
    var_tr: float
    ms_t: float
    ms_r: float
    ms_tr: float
    n_treatments: int
    n_readers: int
    n_cases: int
    cov_method: str

    @property
    def rho1(self) -> float:
        return self.cov1 / self.var

    @property
    def rho2(self) -> float:
        return self.cov2 / self.var

    @property
    def rho3(self) -> float:
        return self.cov3 / self.var


@dataclass(frozen=True)
class Contrast:
    """A treatment difference ``diff = auc(a) - auc(b)`` (reader-averaged unless ``reader`` is set).

    ``statistic`` is t (RRRC, RRFC) or z (FRRC); ``df`` is inf for z.
    """

    a: str
    b: str
    diff: float
    se: float
    statistic: float
    df: float
    p: float
    low: float
    high: float
    reader: str | None = None


@dataclass(frozen=True)
class TreatmentCI:
    """One treatment's reader-averaged AUC with its interval (df inf: normal interval)."""

    treatment: str
    auc: float
    se: float
    df: float
    low: float
    high: float


@dataclass(frozen=True)
class ORTest:
    """Global test of equal treatment AUCs, its contrasts and single-treatment intervals.

    ``analysis``: "RRRC", "FRRC" or "RRFC"; ``statistic``: F (RRRC, RRFC) or X2 (FRRC, df2 inf);
    ``denominator``: MSden (RRRC), Var - Cov1 + (J-1) max(Cov2-Cov3, 0) (FRRC) or MS(T:R) (RRFC).
    """

    analysis: str
    statistic: float
    df1: float
    df2: float
    p: float
    denominator: float
    contrasts: tuple[Contrast, ...]
    single: tuple[TreatmentCI, ...]
    per_reader: tuple[Contrast, ...] = ()


@dataclass(frozen=True)
class ORAnalysis:
    """A full OR analysis: AUC table (I x J), covariance, components and the RRRC/FRRC/RRFC tests.

    ``rrrc``/``rrfc`` are None with a single reader (one seed), where only FRRC applies.
    """

    treatments: tuple[str, ...]
    readers: tuple[str, ...]
    auc: np.ndarray
    cov: np.ndarray
    components: ORComponents
    rrrc: ORTest | None
    frrc: ORTest
    rrfc: ORTest | None
    alpha: float

    def contrast(self, a: str, b: str, analysis: str = "RRRC") -> Contrast:
        """The contrast a - b from the named analysis (either order; the sign follows a - b)."""
        test = {"RRRC": self.rrrc, "FRRC": self.frrc, "RRFC": self.rrfc}[analysis]
        if test is None:
            raise ValueError(f"{analysis} needs at least 2 readers (seeds); this analysis has {len(self.readers)}")
        for c in test.contrasts:
            if (c.a, c.b) == (a, b):
                return c
            if (c.b, c.a) == (a, b):
                return Contrast(a, b, -c.diff, c.se, -c.statistic, c.df, c.p, -c.high, -c.low)
        raise KeyError(f"no contrast {a!r} - {b!r}; treatments are {self.treatments}")


# ---------------------------------------------------------------------------------------
# Analysis


def _t_interval(est: float, se: float, df: float, alpha: float) -> tuple[float, float]:
    q = float(sps.t.ppf(1 - alpha / 2, df)) if math.isfinite(df) else float(sps.norm.ppf(1 - alpha / 2))
    return est - q * se, est + q * se


def _two_sided_p(stat: float, df: float) -> float:
    if not math.isfinite(stat):
        return 0.0 if math.isinf(stat) else math.nan
    return float(2 * (sps.t.sf(abs(stat), df) if math.isfinite(df) else sps.norm.sf(abs(stat))))


def _contrast(a: str, b: str, diff: float, se: float, df: float, alpha: float, reader: str | None = None) -> Contrast:
    stat = diff / se if se > 0 else math.copysign(math.inf, diff) if diff else math.nan
    low, high = _t_interval(diff, se, df, alpha)
    return Contrast(a, b, diff, se, stat, df, _two_sided_p(stat, df), low, high, reader)


def or_analysis_from_aucs(
    auc: np.ndarray,
    cov: np.ndarray,
    n_cases: int,
    cov_method: str,
    treatments: Sequence[str] | None = None,
    readers: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> ORAnalysis:
    """OR analysis from an (I, J) table of AUCs and their (IJ, IJ) covariance over cases (index i*J + j)."""
    auc = np.asarray(auc, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    n_treat, n_read = auc.shape
    if cov.shape != (n_treat * n_read, n_treat * n_read):
        raise ValueError(f"covariance shape {cov.shape} does not match {n_treat} treatments x {n_read} readers")
    names = tuple(str(t) for t in (treatments if treatments is not None else range(1, n_treat + 1)))
    rnames = tuple(str(r) for r in (readers if readers is not None else range(1, n_read + 1)))
    ms = {k: np.asarray(v) for k, v in mean_squares(auc).items()}
    ec = error_covariances(cov, n_treat, n_read)
    var, cov1, cov2, cov3 = (float(ec[k]) for k in ("var", "cov1", "cov2", "cov3"))  # Cov2, Cov3: NaN for J = 1
    ms_t, ms_r, ms_tr = float(ms["ms_t"]), float(ms["ms_r"]), float(ms["ms_tr"])
    var_tr = ms_tr - var + cov1 + cov2 - cov3
    var_r = (ms_r - var_tr - var - (n_treat - 1) * cov1 + cov2 + (n_treat - 1) * cov3) / n_treat
    comps = ORComponents(var, cov1, cov2, cov3, var_r, var_tr, ms_t, ms_r, ms_tr, n_treat, n_read, n_cases, cov_method)
    t_mean = auc.mean(axis=1)
    pairs = list(itertools.combinations(range(n_treat), 2))

    # FRRC (works with one reader)
    spread = (n_read - 1) * max(cov2 - cov3, 0.0) if n_read > 1 else 0.0
    den_f = var - cov1 + spread
    x2 = (n_treat - 1) * ms_t / den_f if den_f > 0 else math.inf
    se_f = math.sqrt(2 * den_f / n_read) if den_f > 0 else 0.0
    single_f = []
    for i in range(n_treat):
        c2 = max(float(ec["cov2_t"][i]), 0.0) if n_read > 1 else 0.0
        se = math.sqrt((float(ec["var_t"][i]) + (n_read - 1) * c2) / n_read)
        lo, hi = _t_interval(float(t_mean[i]), se, math.inf, alpha)
        single_f.append(TreatmentCI(names[i], float(t_mean[i]), se, math.inf, lo, hi))
    per_reader = []
    for a, b in pairs:
        for j in range(n_read):
            ia, ib = a * n_read + j, b * n_read + j
            v = cov[ia, ia] + cov[ib, ib] - 2 * cov[ia, ib]
            d = float(auc[a, j] - auc[b, j])
            per_reader.append(_contrast(names[a], names[b], d, math.sqrt(max(v, 0.0)), math.inf, alpha, rnames[j]))
    frrc = ORTest(
        "FRRC",
        x2,
        n_treat - 1,
        math.inf,
        float(sps.chi2.sf(x2, n_treat - 1)),
        den_f,
        tuple(_contrast(names[a], names[b], float(t_mean[a] - t_mean[b]), se_f, math.inf, alpha) for a, b in pairs),
        tuple(single_f),
        tuple(per_reader),
    )
    if n_read < 2:
        return ORAnalysis(names, rnames, auc, cov, comps, None, frrc, None, alpha)

    # RRRC (Hillis 2007 ddf)
    r = rrrc_batch(auc, cov)
    msden, ddf = float(r["msden"]), float(r["ddf"])
    se_r = math.sqrt(2 * msden / n_read)
    single_r = []
    for i in range(n_treat):
        msr_i = float(ms["ms_r_t"][i])
        num = msr_i + n_read * max(float(ec["cov2_t"][i]), 0.0)
        df_i = num**2 / (msr_i**2 / (n_read - 1)) if msr_i > 0 else math.inf
        se = math.sqrt(num / n_read)
        lo, hi = _t_interval(float(t_mean[i]), se, df_i, alpha)
        single_r.append(TreatmentCI(names[i], float(t_mean[i]), se, df_i, lo, hi))
    rrrc = ORTest(
        "RRRC",
        float(r["F"]),
        n_treat - 1,
        ddf,
        float(r["p"]),
        msden,
        tuple(_contrast(names[a], names[b], float(t_mean[a] - t_mean[b]), se_r, ddf, alpha) for a, b in pairs),
        tuple(single_r),
    )

    # RRFC
    df_tr = (n_treat - 1) * (n_read - 1)
    f_rf = ms_t / ms_tr if ms_tr > 0 else math.inf
    se_rf = math.sqrt(2 * ms_tr / n_read)
    single_rf = []
    for i in range(n_treat):
        se = math.sqrt(float(ms["ms_r_t"][i]) / n_read)
        lo, hi = _t_interval(float(t_mean[i]), se, n_read - 1, alpha)
        single_rf.append(TreatmentCI(names[i], float(t_mean[i]), se, n_read - 1, lo, hi))
    rrfc = ORTest(
        "RRFC",
        f_rf,
        n_treat - 1,
        df_tr,
        float(sps.f.sf(f_rf, n_treat - 1, df_tr)),
        ms_tr,
        tuple(_contrast(names[a], names[b], float(t_mean[a] - t_mean[b]), se_rf, df_tr, alpha) for a, b in pairs),
        tuple(single_rf),
    )
    return ORAnalysis(names, rnames, auc, cov, comps, rrrc, frrc, rrfc, alpha)


def or_analysis(
    y: Sequence[int] | np.ndarray,
    probs: np.ndarray | Sequence[Sequence[np.ndarray]],
    lesion: Sequence[object] | None,
    cov_method: str = "delong",
    treatments: Sequence[str] | None = None,
    readers: Sequence[str] | None = None,
    alpha: float = 0.05,
) -> ORAnalysis:
    """Obuchowski-Rockette MRMC analysis of methods (treatments) x seeds (readers) on shared test images.

    Answers (RRRC, the primary test): would the methods' mean AUCs differ for new training seeds
    on new lesions? Also FRRC (these seeds fixed) and RRFC (these lesions fixed).

    Args:
        y: true class of each test image (N,).
        probs: ``probs[i][j]`` = predictions of method i, seed j on the N images: (N,) positive-class
            scores or (N, K) probabilities; an array (I, J, N) or (I, J, N, K) works too. Every method
            needs the same seeds (a fully crossed design).
        lesion: lesion id of each image (all views of a lesion form one case); ``None``: images are cases.
        cov_method: ``"delong"`` (clustered, Obuchowski 1997) or ``"jackknife"`` (leave one lesion out).
        treatments, readers: names of the methods and seeds.
        alpha: two-sided level of tests and intervals.
    """
    y = np.asarray(y, dtype=np.int64)
    try:
        arr = np.asarray(probs, dtype=np.float64)
    except ValueError as err:
        raise ValueError("every method needs predictions from the same seeds on the same images") from err
    if arr.ndim not in (3, 4) or arr.shape[2] != len(y):
        raise ValueError(f"probs must be (methods, seeds, {len(y)} images[, classes]); got shape {arr.shape}")
    n_treat, n_read = arr.shape[:2]
    flat = arr.reshape(n_treat * n_read, *arr.shape[2:])
    auc, cov = auc_covariance(y, flat, lesion, cov_method)
    n_cases = make_cases(y, lesion).n_cases
    return or_analysis_from_aucs(
        auc.reshape(n_treat, n_read), cov, n_cases, cov_method, treatments, readers, alpha
    )
