"""Null simulation: the false-positive rate of each method-vs-method test on the benchmark's design.

Answers: when two methods are equally good, how often does each test call them different at
alpha = 0.05? A valid test stays near 0.05. The design mimics the benchmark's: test lesions
with 2-3 views each (lesion ids known), several training seeds per method, seeds that differ
in quality, and scores that share a lesion effect across views, methods and seeds.

Score of method i, seed j, view v of lesion l with class y_l (a latent logit; the tests see
its sigmoid as the probability):

    s = y_l (signal + u_j + w_ij) + a_l + b_lv + c_il + e_ijlv

- ``u_j ~ N(0, seed_sd^2)``: seed j's quality, shared by both methods (a random reader effect);
- ``w_ij ~ N(0, seed_method_sd^2)``: the quality of method i's seed-j run (treatment x reader);
- ``a_l ~ N(0, lesion_sd^2)``: lesion difficulty, shared by all views, methods and seeds;
- ``b_lv ~ N(0, view_sd^2)``: the view's own appearance, shared by methods and seeds;
- ``c_il ~ N(0, method_lesion_sd^2)``: how method i handles lesion l, shared by its seeds and views;
- ``e ~ N(0, noise_sd^2)``: everything else.

Both methods have the same distribution, so every rejection is a false positive. Tests:

- ``or_delong`` / ``or_jackknife``: the primary test, OR RRRC with Hillis ddf, seeds as readers
  and lesions as cases (:mod:`benchmark.analysis.mrmc`), DeLong-clustered or jackknife covariance;
- ``delong_image_seed0``: DeLong over images (views as independent), one seed per method;
- ``delong_seed_averaged``: DeLong over images on the seed-averaged probabilities;
- ``delong_clustered_seed_averaged``: the same with lesion clustering (still ignores seed variation);
- ``paired_t_seeds``: paired t-test of per-seed AUCs over seeds (ignores lesion sampling).

Run ``python -m benchmark.analysis.nullsim --replicates 2000`` for the full figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

from .clustered_auc import (
    Cases,
    components,
    delong_covariance_from_components,
    figure_of_merit,
    jackknife_covariance_from_components,
    make_cases,
)
from .mrmc import rrrc_batch

TESTS = (
    "or_delong",
    "or_jackknife",
    "delong_image_seed0",
    "delong_seed_averaged",
    "delong_clustered_seed_averaged",
    "paired_t_seeds",
)


@dataclass(frozen=True)
class NullDesign:
    """Sizes and effect standard deviations of the null simulation (see the module docstring)."""

    n_lesions: int = 200
    min_views: int = 2
    max_views: int = 3
    n_seeds: int = 5
    signal: float = 1.5
    seed_sd: float = 0.3
    seed_method_sd: float = 0.3
    lesion_sd: float = 1.0
    view_sd: float = 0.5
    method_lesion_sd: float = 0.7
    noise_sd: float = 0.5


@dataclass(frozen=True)
class NullResult:
    """False-positive rate per test (``rates``), with the number of replicates and the run time."""

    rates: dict[str, float]
    replicates: int
    alpha: float
    seconds: float
    design: NullDesign

    def mc_se(self, test: str) -> float:
        """Monte-Carlo standard error of a rate."""
        r = self.rates[test]
        return float(np.sqrt(r * (1 - r) / self.replicates))


def _draw_design(rng: np.random.Generator, d: NullDesign) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    views = rng.integers(d.min_views, d.max_views + 1, d.n_lesions)
    lesion = np.repeat(np.arange(d.n_lesions), views)
    label_les = (np.arange(d.n_lesions) < d.n_lesions // 2).astype(np.int64)
    return label_les[lesion], lesion, label_les


def simulate_scores(
    rng: np.random.Generator, d: NullDesign, y: np.ndarray, lesion: np.ndarray, n_rep: int, effect: float = 0.0
) -> np.ndarray:
    """Probabilities (n_rep, 2 methods, n_seeds, N images) of two equally good methods.

    ``effect`` adds to method 0's class separation (0: the null; > 0 only to check power).
    """
    n_img, n_les, j = len(y), d.n_lesions, d.n_seeds
    u = rng.normal(0, d.seed_sd, (n_rep, 1, j, 1))
    w = rng.normal(0, d.seed_method_sd, (n_rep, 2, j, 1))
    a = rng.normal(0, d.lesion_sd, (n_rep, 1, 1, n_les))[..., lesion]
    b = rng.normal(0, d.view_sd, (n_rep, 1, 1, n_img))
    c = rng.normal(0, d.method_lesion_sd, (n_rep, 2, 1, n_les))[..., lesion]
    e = rng.normal(0, d.noise_sd, (n_rep, 2, j, n_img))
    logit = y * (d.signal + np.array([effect, 0.0])[:, None, None] + u + w) + a + b + c + e
    return 1.0 / (1.0 + np.exp(-logit))


def _z_p(diff: np.ndarray, var: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        z = diff / np.sqrt(np.maximum(var, 1e-300))
    return 2 * sps.norm.sf(np.abs(z))


def _delong_pair_p(y: np.ndarray, scores: np.ndarray, cases: Cases) -> np.ndarray:
    """Two-sided p of DeLong-type tests of reader 0 vs reader 1 in ``scores`` (B, 2, N)."""
    parts = components(y, scores, cases)
    auc = figure_of_merit(parts)
    cov = delong_covariance_from_components(parts, cases)
    return _z_p(auc[:, 0] - auc[:, 1], cov[:, 0, 0] + cov[:, 1, 1] - 2 * cov[:, 0, 1])


def null_pvalues(rng: np.random.Generator, d: NullDesign, n_rep: int, effect: float = 0.0) -> dict[str, np.ndarray]:
    """p-values (n_rep,) of every test in :data:`TESTS` on ``n_rep`` replicates of one drawn design.

    ``effect`` > 0 makes method 0 better (a power check); the null is ``effect = 0``.
    """
    y, lesion, _ = _draw_design(rng, d)
    probs = simulate_scores(rng, d, y, lesion, n_rep, effect)
    j = d.n_seeds
    cases = make_cases(y, lesion)
    singletons = make_cases(y, None)
    flat = probs.reshape(n_rep, 2 * j, len(y))
    parts = components(y, flat, cases)
    auc = figure_of_merit(parts)
    out: dict[str, np.ndarray] = {}
    for name, cov in (
        ("or_delong", delong_covariance_from_components(parts, cases)),
        ("or_jackknife", jackknife_covariance_from_components(parts)),
    ):
        out[name] = rrrc_batch(auc.reshape(n_rep, 2, j), cov)["p"]
    out["delong_image_seed0"] = _delong_pair_p(y, probs[:, :, 0], singletons)
    averaged = probs.mean(axis=2)
    out["delong_seed_averaged"] = _delong_pair_p(y, averaged, singletons)
    out["delong_clustered_seed_averaged"] = _delong_pair_p(y, averaged, cases)
    diffs = auc.reshape(n_rep, 2, j)[:, 0] - auc.reshape(n_rep, 2, j)[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / np.sqrt(j))
    out["paired_t_seeds"] = 2 * sps.t.sf(np.abs(t), j - 1)
    return out


def run_null_simulation(
    replicates: int = 2000,
    design: NullDesign | None = None,
    alpha: float = 0.05,
    seed: int = 0,
    batch: int = 100,
) -> NullResult:
    """False-positive rates of every test over ``replicates`` null replicates (a new test design per batch)."""
    d = design or NullDesign()
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    rejected = dict.fromkeys(TESTS, 0)
    done = 0
    while done < replicates:
        n = min(batch, replicates - done)
        for name, p in null_pvalues(rng, d, n).items():
            rejected[name] += int(np.sum(p < alpha))
        done += n
    rates = {k: v / replicates for k, v in rejected.items()}
    return NullResult(rates, replicates, alpha, time.perf_counter() - start, d)


def format_result(res: NullResult) -> str:
    """A plain-text table of the false-positive rates."""
    lines = [
        f"Null simulation: {res.replicates} replicates, alpha = {res.alpha}, {res.seconds:.1f} s",
        "design: " + ", ".join(f"{k}={v}" for k, v in asdict(res.design).items()),
        f"{'test':34s} {'false-positive rate':>20s} {'MC s.e.':>8s}",
    ]
    for name in TESTS:
        lines.append(f"{name:34s} {res.rates[name]:20.4f} {res.mc_se(name):8.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="False-positive rates of AUC comparison tests under the null.")
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--lesions", type=int, default=NullDesign.n_lesions)
    parser.add_argument("--seeds", type=int, default=NullDesign.n_seeds)
    args = parser.parse_args(argv)
    design = NullDesign(n_lesions=args.lesions, n_seeds=args.seeds)
    print(format_result(run_null_simulation(args.replicates, design, args.alpha, args.seed)))


if __name__ == "__main__":
    main()
