"""Build ``REPORT.md`` from run files: provenance, paper-shaped tables, statistics, figures.

``build_report(results)`` reads every run file under ``<results>/runs``
(:func:`benchmark.training.runfile.iter_runs`) and writes ``<out_dir>/REPORT.md`` with its tables
(Markdown, CSV, LaTeX booktabs) under ``report/tables`` and figures (PNG, SVG) under
``report/figures``. It works with any subset of datasets, regimes, methods and seeds,
lists failed and unsupported runs in the inventory, and labels every synthetic dataset
SYNTHETIC wherever one of its numbers appears.

Statistics (definitions in :mod:`benchmark.analysis`; what each answers in the report's
"How to read the tables" section):
- mean ± std over seeds (std with ddof = 1) of accuracy, macro F1 and AUC, in percent;
- against ``baseline`` with the same training data: the primary OR/Hillis MRMC test (seeds random
  readers, lesions random cases, clustered DeLong covariance), with FRRC, the paired t-test and
  Wilcoxon over seeds as secondary columns; Holm per test within each dataset; the smallest
  difference the primary test detects with 80 % power, per comparison, per dataset and in a summary;
- against the best method of the same training data: Hsu's MCB intervals (no p-values);
- 95% CIs of the seed-mean AUC: BCa lesion bootstrap (10,000 resamples by default); a single
  model (one seed): the lesion-clustered DeLong interval; gap closed: lesion-and-seed bootstrap;
- reference rows (teachers, the WLI oracle of synthetic twins) outside every comparison and ranking;
- Friedman with Iman-Davenport, Nemenyi over datasets as blocks, and a critical-difference diagram.
"""

from __future__ import annotations

from pathlib import Path

from .document import N_BOOT, Report
from .runs import Results
from .sections.ablations import ablation_sections
from .sections.datasets import datasets_section
from .sections.deviations import deviations_section
from .sections.gap import gap_section
from .sections.inventory import inventory_section
from .sections.per_dataset import dataset_section
from .sections.probes import probe_section
from .sections.provenance import provenance
from .sections.ranking import friedman_section
from .sections.reading import methods_section
from .sections.summary import summary_section

OWNED_SUFFIXES = frozenset({".csv", ".md", ".tex", ".png", ".svg"})
"""Files of these kinds in ``report/tables`` and ``report/figures`` belong to the report."""


def remove_stale_outputs(doc: Report) -> list[Path]:
    """Delete the tables and figures an earlier build wrote and this one did not (a
    section whose runs are gone must not leave its old table beside the new report).
    Only files of :data:`OWNED_SUFFIXES` go; ``doc.written`` is what this build wrote."""
    removed = []
    for folder in (doc.tables_dir, doc.fig_dir):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.is_file() and path.suffix in OWNED_SUFFIXES and path not in doc.written:
                path.unlink()
                removed.append(path)
    return removed


def build(doc: Report) -> Path:
    """Write every section, in order, and ``REPORT.md``; returns its path."""
    doc.out.mkdir(parents=True, exist_ok=True)
    doc.emit(f"# {doc.title}", "")
    if any(doc.r.synthetic.values()):
        synth = ", ".join(d for d in doc.r.datasets if doc.r.synthetic.get(d))
        doc.emit(
            f"> **SYNTHETIC DATA.** Results on {synth} come from procedurally rendered synthetic "
            "twins, not from patient images; they test the suite, not the clinical value of a method.",
            "",
        )
    provenance(doc)
    datasets_section(doc)
    methods_section(doc)
    for ds in doc.r.datasets:
        dataset_section(doc, ds)
    summary_section(doc)
    friedman_section(doc)
    ablation_sections(doc)
    gap_section(doc)
    doc.emit(*probe_section(doc.r))
    inventory_section(doc)
    deviations_section(doc)
    path = doc.out / "REPORT.md"
    path.write_text("\n".join(doc.md).rstrip() + "\n")
    remove_stale_outputs(doc)
    return path


def build_report(
    results: str | Path, out_dir: str | Path | None = None, *, title: str | None = None, n_boot: int = N_BOOT
) -> Path:
    """Write ``REPORT.md`` (and ``report/tables``, ``report/figures``) for every run file
    under ``<results>/runs``; returns the path of REPORT.md.

    Args:
        results: the ``--out`` folder of a grid (or its ``runs`` folder).
        out_dir: where to write (default: ``results``).
        title: the report's first heading.
        n_boot: bootstrap resamples for the confidence intervals.
    """
    root = Path(results)
    if not root.exists():
        raise FileNotFoundError(
            f"results folder {root} does not exist; run a grid first "
            f"(python -m benchmark --out {root}) or pass the folder that holds runs/"
        )
    res = Results.load(root)
    if not res.records:
        raise FileNotFoundError(
            f"no run files (runs/<dataset>/<regime>/<method>/seed<k>.json) under {root}; "
            "run a grid first or pass the folder given as --out"
        )
    out = Path(out_dir) if out_dir is not None else (root.parent if root.name == "runs" else root)
    return build(Report(res, out, title or "kdbench report", n_boot=n_boot))
