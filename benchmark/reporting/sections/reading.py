"""How to read the tables: what the numbers, marks, tests and intervals mean, and the Holm families."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache

from ...analysis.nullsim import NullResult, run_null_simulation
from ...analysis.ranking import HOLM_FAMILIES
from ...analysis.stats import wilcoxon_min_n
from ..comparisons import ALPHA, MARK_MRMC, MARK_T, POWER
from ..document import CI_DELONG, MARK_SINGLE, Report
from ..naming import BASELINE

NULL_REPLICATES = 2000


@lru_cache(maxsize=1)
def null_rates() -> NullResult:
    """False-positive rates of the tests under the null simulation's default design (seconds; once per process)."""
    return run_null_simulation(NULL_REPLICATES, alpha=ALPHA, seed=0)


def methods_section(doc: Report) -> None:
    n_min = wilcoxon_min_n(ALPHA)
    families = HOLM_FAMILIES.splitlines()
    null = null_rates()
    d = asdict(null.design)
    doc.emit(
        "## How to read the tables",
        "",
        "- Numbers are mean ± standard deviation (ddof = 1) over training seeds, in percent; `n` is the number "
        "of seeds. AUC is the binary AUC, or the macro mean of one-vs-rest AUCs for more than two classes. "
        "Best student value per column in **bold** (reference rows excluded).",
        "- Reference rows, never compared or ranked: the NBI teacher (upper bound, scored on NBI test images "
        "of the test lesions) and, on synthetic cross-modal twins, the WLI oracle (the baseline trained on "
        "k x the twin's WLI training lesions: what the student's own images could give).",
        f"- Primary test, `{MARK_MRMC}`: the method's AUC differs from `{BASELINE}` with the same training data by "
        "a multi-reader multi-case ROC analysis: Obuchowski-Rockette with Hillis's denominator degrees of "
        "freedom, training seeds as random readers and test lesions as random cases (all views of a lesion form "
        "one case), AUC covariance over lesions by the clustered DeLong method (Obuchowski 1997; closed form, "
        "equal to DeLong's with one image per lesion; the leave-one-lesion-out jackknife agrees closely on this "
        "design). It answers: would the method beat the baseline for new training seeds on new lesions? Its "
        "figure of merit is the mean of per-seed AUCs, the number the tables show, so signs agree.",
        f"- Secondary tests (comparison tables only; `{MARK_T}` in the main table): the paired t-test and "
        "Wilcoxon over seeds answer whether new seeds would differ *on these test lesions* (they ignore the "
        "sampling of lesions); FRRC, the same MRMC analysis with the seeds fixed, answers whether *these "
        "trained models* differ on new lesions (with one seed it is the lesion-clustered DeLong test of two "
        "models: is this model better than that one, not is this method better). DeLong over images on "
        "seed-averaged probabilities is not reported: it counts views of one lesion as independent, ignores "
        "seed variation and tests the seed ensemble, not the tables' mean AUC.",
        f"- Validity: in a null simulation ({null.replicates:,} replicates of two equally good methods, "
        f"{d['n_lesions']} test lesions with {d['min_views']}-{d['max_views']} views each, {d['n_seeds']} seeds per "
        "method that differ in quality; `python -m benchmark.analysis.nullsim`), the false-positive rate at "
        f"α = {ALPHA} is {null.rates['or_delong']:.3f} for the primary test (jackknife covariance: "
        f"{null.rates['or_jackknife']:.3f}), {null.rates['paired_t_seeds']:.3f} for the paired t-test over seeds, "
        f"{null.rates['delong_seed_averaged']:.3f} for DeLong over images on seed-averaged probabilities and "
        f"{null.rates['delong_image_seed0']:.3f} for DeLong over images on one seed.",
        f"- Power: each dataset states the smallest AUC difference its primary test detects with "
        f"{100 * POWER:.0f}% power at Holm's first step (α / number of comparisons with `{BASELINE}`), from "
        "the measured variance components; a difference below it going unflagged is not evidence of no effect.",
        f"- Wilcoxon signed-rank over seeds: with n seeds its smallest two-sided p is 2/2^n, so it cannot reach "
        f"p < {ALPHA} with fewer than {n_min} seeds (marked °).",
        f"- Confidence intervals of a seed-mean AUC: BCa bootstrap (bias-corrected and accelerated), "
        f"resampling lesions (not images) within each class, {doc.n_boot:,} resamples; for a single model "
        f"(one seed, {MARK_SINGLE}) the {CI_DELONG} Wald interval. Comparison intervals come from the MRMC "
        "analysis; the gap-closed interval from a lesion-and-seed bootstrap.",
        "- Against the best method: Hsu's multiple comparisons with the best (simultaneous intervals, no "
        "p-values). Ranking across datasets: Friedman with Iman-Davenport's F, Nemenyi post-hoc, datasets "
        "as blocks.",
        "",
        f"**{families[0].rstrip(':')}:**",
        "",
        *_joined(families[1:]),
        "",
    )


def _joined(lines: list[str]) -> list[str]:
    """Join the indented continuation lines of a bullet list into one line per bullet."""
    out: list[str] = []
    for line in lines:
        if line.startswith("- ") or not out:
            out.append(line)
        else:
            out[-1] += " " + line.strip()
    return out
