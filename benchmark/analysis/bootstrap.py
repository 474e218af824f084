"""Lesion-level bootstrap intervals with many resamples: BCa, and the "gap closed" ratio.

- :func:`lesion_bootstrap_ci` answers: within what range does a model's (seed-mean) metric lie,
  given that the test lesions are a sample? Lesions are resampled (all views together, within
  each class), 10,000 times by default, in chunks so memory stays bounded, with the vectorised
  metrics of :mod:`benchmark.analysis.metrics`. ``method="bca"`` gives Efron's bias-corrected and
  accelerated interval (Efron, JASA 82:171, 1987; Efron & Tibshirani 1993, ch. 14), with the
  acceleration from the leave-one-lesion-out jackknife; ``"percentile"`` the plain percentile
  interval.
- :func:`gap_closed_ci` answers: what share of the teacher-baseline AUC gap does a student
  close, and how uncertain is that share? ``gap = (AUC_student - AUC_baseline) /
  (AUC_teacher - AUC_baseline)`` with seed-mean AUCs. Its interval is a two-stage percentile
  bootstrap: each resample draws lesions (one draw shared by the student, baseline and teacher
  images, matched by lesion id) and, independently, seeds with replacement for each model with
  several seeds. Resamples where the teacher does not beat the baseline (the ratio is
  undefined or changes sign meaning) are counted in ``n_undefined`` and left out; when more
  than 2.5 % of them are, the interval is reported as undefined (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from .metrics import weighted_auc, weighted_metrics

DEFAULT_RESAMPLES = 10_000


@dataclass(frozen=True)
class LesionBootstrapCI:
    """A lesion-bootstrap interval: ``estimate`` on the full sample, ``low``/``high`` at ``level``.

    ``method``: "bca" or "percentile"; ``bias_z0``/``acceleration``: the BCa constants (0 for
    percentile); ``n_valid``: resamples where the metric was defined; ``n_lesions``: units resampled.
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n_boot: int
    n_valid: int
    n_lesions: int
    bias_z0: float = 0.0
    acceleration: float = 0.0


def _units(y: np.ndarray, lesion: Sequence[object] | None) -> tuple[np.ndarray, np.ndarray]:
    """Unit index of each image and the class of each unit (a lesion must have one class)."""
    keys = np.arange(len(y)).astype(str) if lesion is None else np.asarray([str(v) for v in lesion])
    if len(keys) != len(y):
        raise ValueError(f"lesion ids: {len(keys)} entries for {len(y)} images; give one lesion id per test image")
    uniq, index = np.unique(keys, return_inverse=True)
    label = np.full(len(uniq), -1)
    label[index] = y
    if np.any(label[index] != y):
        bad = uniq[index[label[index] != y]][:3].tolist()
        raise ValueError(f"lesions {bad} have test images of different classes; a lesion must have one label")
    return index, label


def _draw_counts(rng: np.random.Generator, unit_label: np.ndarray, n: int, stratified: bool) -> np.ndarray:
    """(n, U) draw counts of U units, within each class when ``stratified``."""
    n_units = len(unit_label)
    strata = [np.flatnonzero(unit_label == c) for c in np.unique(unit_label)] if stratified else [np.arange(n_units)]
    flat = np.concatenate(
        [(units[rng.integers(0, len(units), size=(n, len(units)))] + n_units * np.arange(n)[:, None]).ravel()
         for units in strata]
    )
    counts = np.bincount(flat, minlength=n * n_units).reshape(n, n_units).astype(np.float64)
    return counts


class UnitAUC:
    """The seed-mean AUC (binary, or macro one-vs-rest) of a lesion-resampled test set as a bilinear form
    in the lesions' draw counts.

    With one label per lesion, a resample that draws lesion u ``c_u`` times has, for class g, the
    Mann-Whitney numerator ``sum_{a in g, b not in g} c_a c_b P_g[a, b]``, where ``P_g[a, b]`` is the
    psi-sum (ties 1/2) over the image pairs of positive lesion a and negative lesion b, and the
    denominator ``(sum_a c_a m_a)(sum_b c_b n_b)`` (image counts). The denominator does not depend
    on the model, so the mean over seeds is the same form with the seeds' mean ``P_g``. One matrix
    product per chunk of resamples (single precision, relative error ~1e-7) replaces a sort-and-cumsum
    per image, resample and seed; the values equal :func:`benchmark.analysis.metrics.weighted_auc` on
    the same draws to that precision.
    """

    def __init__(self, y: np.ndarray, probs: list[np.ndarray], index: np.ndarray, n_units: int) -> None:
        k = probs[0].shape[1]
        present = [int(c) for c in np.unique(y)]
        columns = [(1, 1)] if k == 2 else [(c, c) for c in present if c < k]
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for cls, col in columns:
            pos = y == cls
            pu, pos_unit = np.unique(index[pos], return_inverse=True)
            nu, neg_unit = np.unique(index[~pos], return_inverse=True)
            p_order, n_order = np.argsort(pos_unit, kind="stable"), np.argsort(neg_unit, kind="stable")
            p_starts = np.flatnonzero(np.r_[True, np.diff(pos_unit[p_order]) != 0])
            n_starts = np.flatnonzero(np.r_[True, np.diff(neg_unit[n_order]) != 0])
            agg = np.zeros((len(pu), len(nu)))
            for prob in probs:
                x, z = prob[pos, col][p_order], prob[~pos, col][n_order]
                psi = (x[:, None] > z[None, :]) + 0.5 * (x[:, None] == z[None, :])
                agg += np.add.reduceat(np.add.reduceat(psi, p_starts, axis=0), n_starts, axis=1)
            agg /= len(probs)
            m = np.bincount(pos_unit, minlength=len(pu)).astype(np.float64)
            n = np.bincount(neg_unit, minlength=len(nu)).astype(np.float64)
            self.parts.append((pu, nu, agg.astype(np.float32), m, n))
        self.n_units = n_units

    def values(self, counts: np.ndarray) -> np.ndarray:
        """Seed-mean AUC for each row of unit draw counts (B, U)."""
        out = []
        for pu, nu, agg, m, n in self.parts:
            c1, c0 = counts[:, pu], counts[:, nu]
            num = np.einsum("bi,bi->b", (c1.astype(np.float32) @ agg).astype(np.float64), c0)
            den = (c1 @ m) * (c0 @ n)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))
        return np.mean(out, axis=0)

    def jackknife(self) -> np.ndarray:
        """Seed-mean AUC with each unit left out, shape (U,)."""
        out = []
        for pu, nu, agg, m, n in self.parts:
            agg64 = agg.astype(np.float64)
            total, big_m, big_n = agg64.sum(), m.sum(), n.sum()
            jack = np.empty(self.n_units)
            with np.errstate(invalid="ignore", divide="ignore"):
                jack[pu] = (total - agg64.sum(axis=1)) / ((big_m - m) * big_n)
                jack[nu] = (total - agg64.sum(axis=0)) / (big_m * (big_n - n))
            out.append(jack)
        return np.mean(out, axis=0)


def _metric(y: np.ndarray, probs: list[np.ndarray], w: np.ndarray, metric: str) -> np.ndarray:
    if metric == "auc":  # the AUC alone: skip the other metrics
        return np.mean([weighted_auc(y, p, w) for p in probs], axis=0)
    values = [weighted_metrics(y, p, w) for p in probs]
    if metric not in values[0]:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(values[0])}")
    return np.mean([v[metric] for v in values], axis=0)


def _as_prob_list(y: np.ndarray, prob: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    probs = [np.asarray(prob, dtype=np.float64)] if np.ndim(prob) == 2 else [np.asarray(p, float) for p in prob]
    for p in probs:
        if p.ndim != 2 or p.shape[0] != len(y):
            raise ValueError(f"probabilities must be (N, K) for the {len(y)} test images; got {p.shape}")
    return probs


def lesion_bootstrap_ci(
    y: Sequence[int] | np.ndarray,
    prob: np.ndarray | Sequence[np.ndarray],
    lesion: Sequence[object] | None,
    metric: str = "auc",
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    method: str = "bca",
    stratified: bool = True,
    chunk: int = 500,
) -> LesionBootstrapCI:
    """Lesion-level bootstrap CI (BCa by default) of a metric, or of its mean over seeds.

    Args:
        y: true class per test image; prob: (N, K) probabilities, or one such array per seed (the
            statistic is then the seed-mean metric and each resample draws the same lesions for all).
        lesion: lesion id per image (``None``: images are the units).
        metric: a name from :data:`benchmark.analysis.metrics.METRIC_NAMES`.
        n_boot: resamples (default 10,000); chunk: resamples computed at once (bounds memory).
        method: "bca" or "percentile"; stratified: resample lesions within each class.
    """
    if method not in ("bca", "percentile"):
        raise ValueError(f"unknown bootstrap interval {method!r}; choose 'bca' or 'percentile'")
    y = np.asarray(y, dtype=np.int64)
    probs = _as_prob_list(y, prob)
    index, unit_label = _units(y, lesion)
    n_units = len(unit_label)
    rng = np.random.default_rng(seed)
    estimate = float(_metric(y, probs, np.ones((1, len(y))), metric)[0])
    fast = UnitAUC(y, probs, index, n_units) if metric == "auc" and stratified else None
    values = np.concatenate(
        [
            fast.values(counts) if fast is not None else _metric(y, probs, counts[:, index], metric)
            for s in range(0, n_boot, chunk)
            if (counts := _draw_counts(rng, unit_label, min(chunk, n_boot - s), stratified)) is not None
        ]
    )
    valid = values[np.isfinite(values)]
    if len(valid) == 0:
        return LesionBootstrapCI(estimate, math.nan, math.nan, level, method, n_boot, 0, n_units)
    tail = (1.0 - level) / 2.0
    if method == "percentile":
        low, high = np.quantile(valid, [tail, 1.0 - tail])
        return LesionBootstrapCI(estimate, float(low), float(high), level, method, n_boot, len(valid), n_units)
    prop = (np.sum(valid < estimate) + 0.5 * np.sum(valid == estimate)) / len(valid)
    z0 = float(sps.norm.ppf(np.clip(prop, 1.0 / (len(valid) + 1), 1 - 1.0 / (len(valid) + 1))))
    jack = fast.jackknife() if fast is not None else np.concatenate(
        [
            _metric(y, probs, (index[None, :] != np.arange(s, min(s + chunk, n_units))[:, None]).astype(float), metric)
            for s in range(0, n_units, chunk)
        ]
    )
    dev = np.nanmean(jack) - jack
    dev = dev[np.isfinite(dev)]
    denom = 6.0 * np.sum(dev**2) ** 1.5
    accel = float(np.sum(dev**3) / denom) if denom > 0 else 0.0
    z = sps.norm.ppf([tail, 1.0 - tail])
    adjusted = sps.norm.cdf(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.quantile(valid, adjusted)
    return LesionBootstrapCI(estimate, float(low), float(high), level, method, n_boot, len(valid), n_units, z0, accel)


# ---------------------------------------------------------------------------------------
# Gap closed


@dataclass(frozen=True)
class GapClosedCI:
    """Share of the teacher-baseline gap closed by a student, with a two-stage percentile interval.

    ``estimate``/``low``/``high`` are fractions (1 = the whole gap); NaN bounds when more than
    2.5 % of resamples had no positive teacher-baseline gap (``n_undefined``).
    """

    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_undefined: int
    student_auc: float
    baseline_auc: float
    teacher_auc: float


def _pick_seeds(rng: np.random.Generator, n_seeds: int, n: int, resample_seeds: bool) -> np.ndarray | None:
    """(S, n) seed indices drawn with replacement, or None to average every seed."""
    if not resample_seeds or n_seeds == 1:
        return None
    return rng.integers(0, n_seeds, size=(n_seeds, n))


def _seed_mean(per_seed: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    """Mean over (resampled) seeds of per-seed values (S, B)."""
    return per_seed.mean(axis=0) if pick is None else np.take_along_axis(per_seed, pick, axis=0).mean(axis=0)


def gap_closed_ci(
    y: Sequence[int] | np.ndarray,
    student: Sequence[np.ndarray],
    baseline: Sequence[np.ndarray],
    lesion: Sequence[object] | None,
    teacher: Sequence[np.ndarray],
    teacher_y: Sequence[int] | np.ndarray | None = None,
    teacher_lesion: Sequence[object] | None = None,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    resample_seeds: bool = True,
    chunk: int = 500,
) -> GapClosedCI:
    """Share of the teacher-baseline AUC gap a student closes, with a lesion-and-seed bootstrap CI.

    Args:
        y, lesion: labels and lesion ids of the student's test images (the baseline's are the same).
        student, baseline: per-seed (N, K) probabilities on those images.
        teacher: per-seed probabilities of the teacher; on its own test images (``teacher_y``,
            ``teacher_lesion``, e.g. the NBI views of the same lesions) or, by default, on the same ones.
            Lesions are matched by id, so one lesion draw applies to both image sets.
        resample_seeds: also resample seeds with replacement (the seed-to-seed variation of each model).
    """
    return gap_closed_cis(
        y, [student], baseline, lesion, teacher, teacher_y, teacher_lesion, n_boot, seed, level, resample_seeds, chunk
    )[0]


def gap_closed_cis(
    y: Sequence[int] | np.ndarray,
    students: Sequence[Sequence[np.ndarray]],
    baseline: Sequence[np.ndarray],
    lesion: Sequence[object] | None,
    teacher: Sequence[np.ndarray],
    teacher_y: Sequence[int] | np.ndarray | None = None,
    teacher_lesion: Sequence[object] | None = None,
    n_boot: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    resample_seeds: bool = True,
    chunk: int = 500,
) -> list[GapClosedCI]:
    """:func:`gap_closed_ci` of several students against one baseline and teacher, each result equal to
    its own call: students with the same number of seeds see the same lesion and seed draws, so the
    baseline's and the teacher's resampled AUCs are computed once per such group."""
    y = np.asarray(y, dtype=np.int64)
    stus = [_as_prob_list(y, list(student)) for student in students]
    base = _as_prob_list(y, list(baseline))
    ty = y if teacher_y is None else np.asarray(teacher_y, dtype=np.int64)
    tles = lesion if teacher_y is None else teacher_lesion
    tea = _as_prob_list(ty, list(teacher))
    keys = np.arange(len(y)).astype(str) if lesion is None else np.asarray([str(v) for v in lesion])
    tkeys = np.arange(len(ty)).astype(str) if tles is None else np.asarray([str(v) for v in tles])
    index, unit_label = _units(np.concatenate([y, ty]), np.concatenate([keys, tkeys]))
    s_index, t_index = index[: len(y)], index[len(y) :]
    ones = np.ones((1, len(y)))
    b_auc = float(np.mean([weighted_auc(y, p, ones)[0] for p in base]))
    t_auc = float(np.mean([weighted_auc(ty, p, np.ones((1, len(ty))))[0] for p in tea]))
    n_units = len(unit_label)
    u_base = [UnitAUC(y, [p], s_index, n_units) for p in base]
    u_tea = [UnitAUC(ty, [p], t_index, n_units) for p in tea]
    tail = (1.0 - level) / 2.0
    out: list[GapClosedCI | None] = [None] * len(stus)
    for n_seeds in sorted({len(stu) for stu in stus}):
        group = [i for i, stu in enumerate(stus) if len(stu) == n_seeds]
        u_stu = {i: [UnitAUC(y, [p], s_index, n_units) for p in stus[i]] for i in group}
        rng = np.random.default_rng(seed)
        ratios: dict[int, list[np.ndarray]] = {i: [] for i in group}
        undefined = 0
        for s in range(0, n_boot, chunk):
            counts = _draw_counts(rng, unit_label, min(chunk, n_boot - s), stratified=True)
            pick_s = _pick_seeds(rng, n_seeds, len(counts), resample_seeds)
            a_b = _seed_mean(np.stack([u.values(counts) for u in u_base]),
                             _pick_seeds(rng, len(u_base), len(counts), resample_seeds))
            a_t = _seed_mean(np.stack([u.values(counts) for u in u_tea]),
                             _pick_seeds(rng, len(u_tea), len(counts), resample_seeds))
            gap = a_t - a_b
            ok = np.isfinite(gap) & (gap > 0)
            undefined += int(np.sum(~ok))
            for i in group:
                a_s = _seed_mean(np.stack([u.values(counts) for u in u_stu[i]]), pick_s)
                ratios[i].append((a_s[ok] - a_b[ok]) / gap[ok])
        for i in group:
            s_auc = float(np.mean([weighted_auc(y, p, ones)[0] for p in stus[i]]))
            estimate = (s_auc - b_auc) / (t_auc - b_auc) if t_auc > b_auc else math.nan
            values = np.concatenate(ratios[i])
            if undefined > tail * n_boot or len(values) == 0:
                low = high = math.nan
            else:
                low, high = (float(v) for v in np.quantile(values, [tail, 1.0 - tail]))
            out[i] = GapClosedCI(estimate, low, high, level, n_boot, undefined, s_auc, b_auc, t_auc)
    return [r for r in out if r is not None]
