"""How to read the tables: what the numbers, marks and intervals mean."""

from __future__ import annotations

from ...analysis.stats import wilcoxon_min_n
from ..comparisons import ALPHA, MARK_DELONG, MARK_T
from ..document import Report
from ..naming import (
    BASELINE,
)


def methods_section(doc: Report) -> None:
    n_min = wilcoxon_min_n(ALPHA)
    doc.emit(
        "## How to read the tables",
        "",
        "- Numbers are mean ± standard deviation (ddof = 1) over training seeds, in percent; `n` is the number "
        "of seeds. AUC is the binary AUC, or the macro mean of one-vs-rest AUCs for more than two classes. "
        "Best student value per column in **bold** (teachers excluded).",
        f"- `{MARK_DELONG}`: AUC differs from `{BASELINE}` of the same training data by DeLong's test on the "
        "seed-averaged probabilities of the same test images (every seed is scored on the same test images, so "
        "the seeds are combined by averaging their probabilities and testing the seed ensembles once; where "
        "seeds saw different images, per-seed DeLong z are combined by Stouffer's method). For more than two "
        "classes DeLong is applied to the macro one-vs-rest AUC, with its variance from the combined "
        "structural components (per-image placement terms averaged over classes, variance summed over the "
        "true classes).",
        f"- `{MARK_T}`: AUC differs from `{BASELINE}` by a paired t-test over common seeds. Both marks: two-sided, "
        f"Holm-corrected within the table, α = {ALPHA}. DeLong answers whether the difference survives the "
        "sampling of test images; the t-test whether it survives training randomness.",
        f"- Wilcoxon signed-rank over seeds is reported in the comparison tables; with n seeds its smallest "
        f"two-sided p is 2/2^n, so it cannot reach p < {ALPHA} with fewer than {n_min} seeds (marked °).",
        "- Confidence intervals: 95% percentile bootstrap of the seed-mean AUC, resampling lesions (not "
        f"images) within each class, {doc.n_boot} resamples.",
        "",
    )
