"""Build ``REPORT.md`` from run files: provenance, paper-shaped tables, statistics, figures.

``build_report(results)`` reads every run file under ``<results>/runs``
(:func:`benchmark.runfile.iter_runs`) and writes ``<out_dir>/REPORT.md`` with its tables
(Markdown, CSV, LaTeX booktabs) under ``report/tables`` and figures (PNG, SVG) under
``report/figures``. It works with any subset of datasets, regimes, methods and seeds,
lists failed and unsupported runs in the inventory, and labels every synthetic dataset
SYNTHETIC wherever one of its numbers appears.

Statistics (see :mod:`benchmark.stats` for the definitions):
- mean ± std over seeds (std with ddof = 1) of accuracy, macro F1 and AUC, in percent;
- against ``baseline`` of the same regime and against the best method of the regime:
  paired t-test and Wilcoxon over seeds on AUC, and DeLong on the seed-averaged
  probabilities of the same test images; Holm within each table, per test;
- 95% lesion-level bootstrap CIs of the seed-mean AUC;
- Friedman + Nemenyi over (dataset, regime) blocks and a critical-difference diagram.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import figures
from .folds import pool_folds
from .metrics import bootstrap_ci, weighted_metrics
from .probe_section import probe_section, steps_text
from .runfile import iter_runs
from .stats import (
    DeLongResult,
    delong_seed_averaged,
    delong_stouffer,
    friedman_nemenyi,
    holm,
    paired_tests,
    wilcoxon_min_n,
)

ALPHA = 0.05
N_BOOT = 1000
REGIME_ORDER = ("paired", "unpaired", "all", "same", "teacher")
REGIME_LABEL = {"paired": "D_p", "unpaired": "D_unp", "all": "D_p+D_unp", "same": "same image", "teacher": "teacher"}
BASELINE = "baseline"
MARK_DELONG = "*"
MARK_T = "†"
METRICS_SHOWN = (("acc", "Acc"), ("f1", "F1"), ("auc", "AUC"))
# The PaGKD paper's ablations: (Pro, Den) -> method, and image- vs group-level.
PAGKD_MODULES = {
    (False, False): BASELINE,
    (True, False): "pagkd-pro",
    (False, True): "pagkd-den",
    (True, True): "pagkd",
}
PAGKD_LEVELS = {
    "image-level": ("pagkd-image-pro", "pagkd-image-den", "pagkd-image"),
    "group-level": ("pagkd-pro", "pagkd-den", "pagkd"),
}
PAGKD_COMPONENTS = {
    "pagkd-avgpool": ("LR-QFormer replaced by average pooling", "pagkd-pro"),
    "pagkd-plainattn": ("SRCA replaced by plain cross-attention (no relation mask)", "pagkd-den"),
    "pagkd-unidir": ("NBI->WLI reconstruction only (not bidirectional)", "pagkd"),
    "pagkd-released": ("the released code's behaviour", "pagkd"),
}


# =======================================================================================
# Loading


@dataclass
class Run:
    """One finished run: its record, metrics and test predictions."""

    record: dict[str, Any]
    seed: int
    metrics: dict[str, float]
    y: np.ndarray | None
    prob: np.ndarray | None
    lesion: list[str] | None
    source: list[str] | None

    def image_keys(self) -> tuple[str, ...] | None:
        if self.source and len(self.source) == len(self.y) and len(set(self.source)) == len(self.source):
            return tuple(self.source)
        return None


@dataclass
class Cell:
    """All runs of one (dataset, regime, method)."""

    dataset: str
    regime: str
    method: str
    ok: dict[int, Run] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)
    unsupported: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_teacher(self) -> bool:
        return self.regime in ("teacher", "reference") or self.method.startswith("teacher-")  # not a student

    @property
    def seeds(self) -> list[int]:
        return sorted(self.ok)

    def values(self, metric: str, seeds: Iterable[int] | None = None) -> np.ndarray:
        keys = self.seeds if seeds is None else list(seeds)
        return np.array([self.ok[s].metrics.get(metric, math.nan) for s in keys], dtype=np.float64)

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else math.nan

    def std(self, metric: str) -> float:
        v = self.values(metric)
        v = v[np.isfinite(v)]
        return float(v.std(ddof=1)) if len(v) > 1 else math.nan


def _to_run(rec: dict[str, Any]) -> Run:
    pred = rec.get("predictions") or {}
    y = prob = None
    if pred.get("y") and pred.get("prob"):
        y = np.asarray(pred["y"], dtype=np.int64)
        prob = np.asarray(pred["prob"], dtype=np.float64)
        if prob.ndim != 2 or len(prob) != len(y):
            y = prob = None
    metrics = dict(rec.get("metrics") or {})
    if y is not None:
        # the vectorised form of classification_metrics (equal to scikit-learn, see tests/test_metrics.py):
        # scikit-learn's input validation dominates the time of a report over hundreds of runs
        metrics.update({k: float(v[0]) for k, v in weighted_metrics(y, prob).items()})
    metrics = {
        k: (math.nan if v is None else float(v)) for k, v in metrics.items() if isinstance(v, int | float) or v is None
    }
    lesion = [str(v) for v in pred["lesion"]] if y is not None and pred.get("lesion") else None
    source = [str(v) for v in pred["source"]] if y is not None and pred.get("source") else None
    return Run(rec, int(rec.get("seed", 0)), metrics, y, prob, lesion, source)


def _is_synthetic(rec: dict[str, Any]) -> bool:
    if rec.get("synthetic"):
        return True
    ds = str(rec.get("dataset", ""))
    prov = ((rec.get("data") or {}).get("provenance")) or {}
    return ds == "synth" or ds.endswith("-synthetic") or bool(prov.get("synthetic")) or "generator" in prov


@dataclass
class Results:
    records: list[dict[str, Any]]
    cells: dict[tuple[str, str, str], Cell]
    synthetic: dict[str, bool]

    @classmethod
    def load(cls, root: Path) -> Results:
        records = pool_folds(iter_runs(root))  # k-fold runs: one pooled record per (method, seed)
        cells: dict[tuple[str, str, str], Cell] = {}
        synthetic: dict[str, bool] = {}
        for rec in records:
            key = (str(rec.get("dataset")), str(rec.get("regime")), str(rec.get("method")))
            cell = cells.setdefault(key, Cell(*key))
            synthetic[key[0]] = synthetic.get(key[0], False) or _is_synthetic(rec)
            status = rec.get("status", "ok")
            if status == "ok" and (rec.get("predictions") or rec.get("metrics")):
                cell.ok[int(rec.get("seed", 0))] = _to_run(rec)
            elif status == "unsupported":
                cell.unsupported.append(rec)
            else:
                if status == "ok":  # a finished run file without numbers
                    rec = {
                        **rec,
                        "error": {
                            "type": "Incomplete",
                            "message": f"status ok but no predictions or metrics in {rec.get('_path', 'the run file')}",
                        },
                    }
                cell.failed.append(rec)
        return cls(records, cells, synthetic)

    @property
    def datasets(self) -> list[str]:
        return sorted({k[0] for k in self.cells})

    def label(self, dataset: str) -> str:
        return f"{dataset} [SYNTHETIC]" if self.synthetic.get(dataset) else dataset

    def dataset_cells(self, dataset: str, with_ok: bool = True) -> list[Cell]:
        cells = [c for c in self.cells.values() if c.dataset == dataset and (c.ok or not with_ok)]
        return sorted(cells, key=_cell_order)

    def cell(self, dataset: str, regime: str, method: str) -> Cell | None:
        c = self.cells.get((dataset, regime, method))
        return c if c is not None and c.ok else None

    def upper_bound(self, dataset: str) -> Cell | None:
        teachers = [c for c in self.dataset_cells(dataset) if c.is_teacher]
        preferred = [c for c in teachers if c.method == "teacher-nbi"]
        return (preferred or teachers or [None])[0]


def _is_pagkd(method: str) -> bool:
    return method == "pagkd" or method.startswith("pagkd-")


def _method_rank(method: str) -> tuple[int, str]:
    if method == "teacher-nbi":
        return (0, method)
    if method.startswith("teacher-"):
        return (1, method)
    if method == BASELINE:
        return (2, method)
    if method == "pagkd":
        return (4, "")
    if _is_pagkd(method):
        return (5, method)
    return (3, method)


def _cell_order(c: Cell) -> tuple:
    regime = REGIME_ORDER.index(c.regime) if c.regime in REGIME_ORDER else len(REGIME_ORDER)
    return (*_method_rank(c.method), regime, c.regime)


def method_label(method: str) -> str:
    if method.startswith("teacher-"):
        return (
            f"{method.removeprefix('teacher-').upper()} teacher (upper bound)"
            if method == "teacher-nbi"
            else (f"{method.removeprefix('teacher-').upper()} teacher")
        )
    return method


def regime_label(cell: Cell) -> str:
    if cell.is_teacher:
        return f"{cell.method.split('-', 1)[-1].upper()} train images"  # teacher-nbi, probe-wli
    return REGIME_LABEL.get(cell.regime, cell.regime)


# =======================================================================================
# Tables


@dataclass
class TCell:
    """A table cell: display text, optional bold, and the raw values written to CSV."""

    text: str
    csv: dict[str, Any] | None = None
    bold: bool = False
    mark: str = ""

    def md(self) -> str:
        text = self.text.replace("|", "\\|")
        text = f"**{text}**" if self.bold and text else text
        return text + self.mark.replace("*", "\\*")

    def tex(self) -> str:
        text = r"\textbf{" + _tex(self.text) + "}" if self.bold and self.text else _tex(self.text)
        if self.mark:
            text += "$^{" + self.mark.replace("†", r"\dagger") + "}$"
        return text


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[TCell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numeric: set[int] = field(default_factory=set)

    def markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        lines = [
            "| " + " | ".join(esc(c) for c in self.columns) + " |",
            "|" + "|".join("---:" if i in self.numeric else "---" for i in range(len(self.columns))) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(c.md() for c in row) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        spec = "".join("r" if i in self.numeric else "l" for i in range(len(self.columns)))
        body = [" & ".join(_tex(c) for c in self.columns) + r" \\"]
        out = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + _tex(self.title) + "}",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            *body,
            r"\midrule",
        ]
        for row in self.rows:
            out.append(" & ".join(c.tex() for c in row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\smallskip{\footnotesize " + _tex(" ".join(self.notes)) + "}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{self.name}.md"
        md.write_text(f"**{self.title}**\n\n{self.markdown()}\n" + "".join(f"\n{n}\n" for n in self.notes))
        tex = folder / f"{self.name}.tex"
        tex.write_text(self.latex())
        path = folder / f"{self.name}.csv"
        header: list[str] = []
        rows: list[dict[str, Any]] = []
        for row in self.rows:
            d: dict[str, Any] = {}
            for col, c in zip(self.columns, row, strict=True):
                d.update(c.csv if c.csv is not None else {col: c.text})
            for k in d:
                if k not in header:
                    header.append(k)
            rows.append(d)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            for d in rows:
                writer.writerow({k: _csv_value(d.get(k)) for k in header})
        return [md, path, tex]


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v


_TEX_REPL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "°": r"$^\circ$",
    "−": "-",
    "Δ": r"$\Delta$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\to$",
    "—": "--",
    "`": "",
}


def _tex(s: str) -> str:
    return "".join(_TEX_REPL.get(ch, ch) for ch in s)


def _pct(mean: float, std: float | None = None, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{100 * mean:.{digits}f}"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# =======================================================================================
# Comparisons


@dataclass
class Comparison:
    a: Cell
    b: Cell
    paired: Any
    delong: DeLongResult | None
    delong_note: str = ""
    p_t_holm: float = math.nan
    p_w_holm: float = math.nan
    p_delong_holm: float = math.nan


def _shared_test_set(runs: Sequence[Run]) -> tuple[np.ndarray, list[str] | None, list[np.ndarray]] | None:
    """Labels, lesions and probabilities of runs scored on the same images, aligned by image."""
    if not runs or any(r.y is None for r in runs):
        return None
    first = runs[0]
    keys0 = first.image_keys()
    probs = [first.prob]
    for r in runs[1:]:
        keys = r.image_keys()
        if keys0 is not None and keys is not None:
            if set(keys) != set(keys0) or len(keys) != len(keys0):
                return None
            pos = {k: i for i, k in enumerate(keys)}
            order = np.array([pos[k] for k in keys0])
            if not np.array_equal(r.y[order], first.y):
                return None
            probs.append(r.prob[order])
        else:
            if len(r.y) != len(first.y) or not np.array_equal(r.y, first.y) or r.lesion != first.lesion:
                return None
            probs.append(r.prob)
    if len({p.shape[1] for p in probs}) != 1:
        return None
    return first.y, first.lesion, probs


def compare(a: Cell, b: Cell) -> Comparison:
    """A against B: paired tests over common seeds on AUC, DeLong over the test images."""
    seeds = sorted(set(a.ok) & set(b.ok))
    paired = paired_tests(a.values("auc", seeds), b.values("auc", seeds), ALPHA)
    use = seeds or None
    runs_a = [a.ok[s] for s in (use or a.seeds)]
    runs_b = [b.ok[s] for s in (use or b.seeds)]
    delong = None
    note = ""
    shared = _shared_test_set(runs_a + runs_b)
    try:
        if shared is not None:
            y, _, probs = shared
            delong = delong_seed_averaged(y, probs[: len(runs_a)], probs[len(runs_a) :])
        elif seeds:
            per = [_shared_test_set([a.ok[s], b.ok[s]]) for s in seeds]
            if all(p is not None for p in per):
                delong = delong_stouffer([p[0] for p in per], [p[2][0] for p in per], [p[2][1] for p in per])
            else:
                note = "not on the same test images"
        else:
            note = "not on the same test images"
    except ValueError as err:
        note = str(err)
    return Comparison(a, b, paired, delong, note)


def _holm_fill(comparisons: list[Comparison]) -> None:
    for attr, getter in (
        ("p_t_holm", lambda c: c.paired.p_t),
        ("p_w_holm", lambda c: c.paired.p_wilcoxon),
        ("p_delong_holm", lambda c: c.delong.p if c.delong else math.nan),
    ):
        adj = holm([getter(c) for c in comparisons])
        for c, v in zip(comparisons, adj, strict=True):
            setattr(c, attr, float(v))


# =======================================================================================
# The report


class ReportBuilder:
    def __init__(self, results: Results, out_dir: Path, title: str, n_boot: int = N_BOOT) -> None:
        self.r = results
        self.out = out_dir
        self.assets = out_dir / "report"
        self.tables_dir = self.assets / "tables"
        self.fig_dir = self.assets / "figures"
        self.title = title
        self.n_boot = n_boot
        self.md: list[str] = []
        self.tables: list[Table] = []
        self.figures: list[Path] = []
        self.ci_cache: dict[tuple[str, str, str], tuple[float, float, str]] = {}

    # -- helpers --------------------------------------------------------------------------
    def emit(self, *lines: str) -> None:
        self.md.extend(lines)

    def add_table(self, table: Table) -> None:
        self.tables.append(table)
        table.write(self.tables_dir)
        rel = f"report/tables/{table.name}"
        self.emit(f"**{table.title}**", "", table.markdown(), "")
        for n in table.notes:
            self.emit(n, "")
        self.emit(f"Files: [{table.name}.csv]({rel}.csv), [{table.name}.tex]({rel}.tex)", "")

    def add_figure(self, paths: list[Path], caption: str) -> None:
        self.figures.extend(paths)
        png = paths[0].relative_to(self.out).as_posix()
        svg = paths[1].relative_to(self.out).as_posix()
        self.emit(f"![{caption}]({png})", "", f"*{caption}* ([SVG]({svg}))", "")

    def ci(self, cell: Cell) -> tuple[float, float, str]:
        """95% lesion-bootstrap CI of the seed-mean AUC of a cell."""
        key = (cell.dataset, cell.regime, cell.method)
        if key in self.ci_cache:
            return self.ci_cache[key]
        runs = [cell.ok[s] for s in cell.seeds]
        shared = _shared_test_set(runs)
        out: tuple[float, float, str] = (math.nan, math.nan, "no predictions")
        try:
            if shared is not None:
                y, lesion, probs = shared
                res = bootstrap_ci(y, probs, lesion, "auc", self.n_boot, seed=0)
                out = (res.low, res.high, "")
            elif all(r.y is not None for r in runs) and runs:
                cis = [bootstrap_ci(r.y, r.prob, r.lesion, "auc", self.n_boot, seed=0) for r in runs]
                out = (
                    float(np.mean([c.low for c in cis])),
                    float(np.mean([c.high for c in cis])),
                    "mean of per-seed CIs (seeds scored on different images)",
                )
        except ValueError as err:
            out = (math.nan, math.nan, str(err))
        self.ci_cache[key] = out
        return out

    # -- sections -------------------------------------------------------------------------
    def build(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.emit(f"# {self.title}", "")
        if any(self.r.synthetic.values()):
            synth = ", ".join(d for d in self.r.datasets if self.r.synthetic.get(d))
            self.emit(
                f"> **SYNTHETIC DATA.** Results on {synth} come from procedurally rendered synthetic "
                "twins, not from patient images; they test the suite, not the clinical value of a method.",
                "",
            )
        self.provenance()
        self.datasets_section()
        self.methods_section()
        for ds in self.r.datasets:
            self.dataset_section(ds)
        self.summary_section()
        self.friedman_section()
        self.ablation_section()
        self.gap_section()
        self.emit(*probe_section(self.r))
        self.inventory_section()
        self.deviations_section()
        path = self.out / "REPORT.md"
        path.write_text("\n".join(self.md).rstrip() + "\n")
        return path

    def provenance(self) -> None:
        recs = self.r.records
        prov = [r.get("provenance") or {} for r in recs]
        commits = sorted(
            {f"{p.get('git_commit', 'unknown')}{' (dirty)' if p.get('git_dirty') else ''}" for p in prov if p}
        )
        profiles = sorted({str(r.get("profile")) for r in recs if r.get("profile")})
        hw = sorted({_hardware(p.get("hardware")) for p in prov if p.get("hardware")})
        platforms = sorted({str(p.get("platform")) for p in prov if p.get("platform")})
        dates = sorted(str(p.get("date")) for p in prov if p.get("date"))
        status = defaultdict(int)
        for r in recs:
            status[r.get("status", "ok")] += 1
        versions: dict[str, set[str]] = defaultdict(set)
        for p in prov:
            for k, v in (p.get("versions") or {}).items():
                versions[k].add(str(v))
        cache_on = sum(1 for r in recs if _find_key(r.get("config") or {}, "teacher_cache") is True)
        cache_known = sum(1 for r in recs if _find_key(r.get("config") or {}, "teacher_cache") is not None)
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        rows = [
            ("report built", now),
            ("run files", f"{len(recs)} ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})"),
            ("runs dated", f"{dates[0]} – {dates[-1]}" if dates else "unknown"),
            ("git commit", ", ".join(commits) or "unknown"),
            ("profile", ", ".join(profiles) or "unknown"),
            ("hardware", "; ".join(hw) or "unknown"),
            ("platform", "; ".join(platforms) or "unknown"),
            (
                "teacher-output cache",
                (
                    f"on in {cache_on} of {cache_known} run configs (teacher logits/embeddings "
                    "computed once per run on un-augmented teacher images, for methods that "
                    "read only those)"
                )
                if cache_known
                else "not recorded",
            ),
            (
                "datasets",
                ", ".join(f"{d} ({'SYNTHETIC' if self.r.synthetic.get(d) else 'real'})" for d in self.r.datasets)
                or "none",
            ),
        ]
        self.emit("## Provenance", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "")
        if versions:
            self.emit(
                "Package versions: "
                + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items()))
                + ".",
                "",
            )

    def datasets_section(self) -> None:
        table = Table("datasets", "Datasets", ["dataset", "data", "classes", "test images", "test lesions", "source"])
        for ds in self.r.datasets:
            recs = [r for r in self.r.records if r.get("dataset") == ds]
            classes = (
                next(((r.get("data") or {}).get("classes") for r in recs if (r.get("data") or {}).get("classes")), None)
                or []
            )
            run = next((c.ok[s] for c in self.r.dataset_cells(ds) if not c.is_teacher for s in c.seeds), None)
            n_img = str(len(run.y)) if run is not None and run.y is not None else "—"
            n_les = str(len(set(run.lesion))) if run is not None and run.lesion else "—"
            prov = (
                next(
                    ((r.get("data") or {}).get("provenance") for r in recs if (r.get("data") or {}).get("provenance")),
                    {},
                )
                or {}
            )
            src = ", ".join(f"{k}={v}" for k, v in list(prov.items())[:4] if not isinstance(v, dict | list))
            table.rows.append(
                [
                    TCell(self.r.label(ds), {"dataset": ds}),
                    TCell(
                        "SYNTHETIC" if self.r.synthetic.get(ds) else "real",
                        {"synthetic": bool(self.r.synthetic.get(ds))},
                    ),
                    TCell(", ".join(map(str, classes))),
                    TCell(n_img),
                    TCell(n_les),
                    TCell(src[:160]),
                ]
            )
        table.notes.append(
            "Test images are WLI images of held-out lesions (teachers are scored on test images of "
            "their own modality). Splits are by lesion and fixed across training seeds."
        )
        self.emit("## Datasets", "")
        self.add_table(table)

    def methods_section(self) -> None:
        n_min = wilcoxon_min_n(ALPHA)
        self.emit(
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
            f"images) within each class, {self.n_boot} resamples.",
            "",
        )

    def dataset_section(self, ds: str) -> None:
        label = self.r.label(ds)
        cells = self.r.dataset_cells(ds)
        self.emit(f"## {label}", "")
        if not cells:
            self.emit("No finished runs for this dataset (see the run inventory).", "")
            return
        students = [c for c in cells if not c.is_teacher]
        vs_base = [
            compare(c, b)
            for c in students
            if c.method != BASELINE and (b := self.r.cell(ds, c.regime, BASELINE)) is not None
        ]
        _holm_fill(vs_base)
        sig = {(c.a.regime, c.a.method): c for c in vs_base}
        best = {m: _best(c.mean(m) for c in students) for m, _ in METRICS_SHOWN}
        table = Table(
            f"{_slug(ds)}_main",
            f"{label}: WLI test set, Acc / F1 / AUC (%)",
            ["method", "training data", "n", "Acc", "F1", "AUC", "AUC 95% CI"],
            numeric={2, 3, 4, 5, 6},
        )
        for c in cells:
            row = [
                TCell(
                    method_label(c.method),
                    {"dataset": ds, "synthetic": bool(self.r.synthetic.get(ds)), "method": c.method},
                ),
                TCell(regime_label(c), {"regime": c.regime}),
                TCell(str(len(c.seeds)), {"n_seeds": len(c.seeds)}),
            ]
            for m, name in METRICS_SHOWN:
                mean, std = c.mean(m), c.std(m)
                text = _pct(mean, std)
                marks = ""
                comp = sig.get((c.regime, c.method))
                if m == "auc" and comp is not None:
                    if comp.p_delong_holm < ALPHA:
                        marks += MARK_DELONG
                    if comp.p_t_holm < ALPHA:
                        marks += MARK_T
                bold = not c.is_teacher and math.isfinite(mean) and bool(np.isclose(mean, best[m], rtol=0, atol=1e-12))
                row.append(
                    TCell(
                        text,
                        {
                            f"{name}_mean": mean,
                            f"{name}_std": std,
                            **({f"{name}_sig_vs_baseline": marks} if m == "auc" else {}),
                        },
                        bold,
                        marks,
                    )
                )
            low, high, _ = self.ci(c)
            ci_text = f"[{100 * low:.1f}, {100 * high:.1f}]" if math.isfinite(low) else "—"
            row.append(TCell(ci_text, {"AUC_ci_low": low, "AUC_ci_high": high}))
            table.rows.append(row)
        table.notes.append(
            f"{label}. {MARK_DELONG} DeLong, {MARK_T} paired t-test over seeds: different from `{BASELINE}` with the "
            f"same training data, Holm-corrected within this table, α = {ALPHA}. AUC 95% CI: lesion-level bootstrap "
            "of the seed-mean AUC. Teachers are scored on test images of their own modality (upper bound, not a "
            "student)."
        )
        if self.r.synthetic.get(ds):
            table.notes.append("SYNTHETIC data: rendered twins, not patient images.")
        self.add_table(table)
        if vs_base:
            self.add_table(
                self.comparison_table(ds, "vs_baseline", f"{label}: each method against `{BASELINE}`", vs_base)
            )
        vs_best = []
        for regime in sorted({c.regime for c in students}, key=_regime_key):
            group = [c for c in students if c.regime == regime and math.isfinite(c.mean("auc"))]
            if len(group) < 2:
                continue
            top = max(group, key=lambda c: c.mean("auc"))
            vs_best += [compare(c, top) for c in group if c is not top]
        if vs_best:
            _holm_fill(vs_best)
            self.add_table(
                self.comparison_table(
                    ds,
                    "vs_best",
                    f"{label}: each method against the best method (highest mean AUC) with the same training data",
                    vs_best,
                )
            )
        self.dataset_figures(ds, cells)

    def comparison_table(self, ds: str, kind: str, title: str, comps: list[Comparison]) -> Table:
        label = self.r.label(ds)
        table = Table(
            f"{_slug(ds)}_{kind}",
            title,
            [
                "method",
                "training data",
                "against",
                "n",
                "ΔAUC seeds",
                "t-test p (Holm)",
                "Wilcoxon p (Holm)",
                "ΔAUC DeLong",
                "DeLong p (Holm)",
            ],
            numeric=set(range(3, 9)),
        )
        any_few = False
        for c in comps:
            pr = c.paired
            few = bool(pr.wilcoxon_note) and "Wilcoxon" in pr.wilcoxon_note
            any_few |= few
            dl = c.delong
            table.rows.append(
                [
                    TCell(
                        method_label(c.a.method),
                        {"dataset": ds, "synthetic": bool(self.r.synthetic.get(ds)), "method": c.a.method},
                    ),
                    TCell(regime_label(c.a), {"regime": c.a.regime}),
                    TCell(c.b.method, {"against": c.b.method}),
                    TCell(str(pr.n), {"n_common_seeds": pr.n}),
                    TCell(_pct(pr.mean_diff, pr.std_diff), {"dauc_mean": pr.mean_diff, "dauc_std": pr.std_diff}),
                    TCell(f"{_p(pr.p_t)} ({_p(c.p_t_holm)})", {"p_t": pr.p_t, "p_t_holm": c.p_t_holm}),
                    TCell(
                        f"{_p(pr.p_wilcoxon)} ({_p(c.p_w_holm)}){'°' if few else ''}",
                        {"p_wilcoxon": pr.p_wilcoxon, "p_wilcoxon_holm": c.p_w_holm, "wilcoxon_note": pr.wilcoxon_note},
                    ),
                    TCell(
                        _pct(dl.diff) if dl else "—",
                        {
                            "dauc_delong": dl.diff if dl else math.nan,
                            "delong_z": dl.z if dl else math.nan,
                            "delong_mode": dl.method if dl else c.delong_note,
                        },
                    ),
                    TCell(
                        f"{_p(dl.p)} ({_p(c.p_delong_holm)})" if dl else f"— ({c.delong_note})",
                        {"p_delong": dl.p if dl else math.nan, "p_delong_holm": c.p_delong_holm},
                    ),
                ]
            )
        table.notes.append(
            f"{label}. ΔAUC in percentage points (method minus `against`); seeds: mean ± std of the per-seed "
            "differences over common seeds; DeLong: difference of the seed-averaged predictions' AUCs. Raw p with "
            "the Holm-adjusted p in brackets (Holm per test within this table)."
        )
        if any_few:
            table.notes.append(
                f"° too few seeds for the Wilcoxon test to reach p < {ALPHA} (it needs at least "
                f"{wilcoxon_min_n(ALPHA)} seeds with non-zero differences)."
            )
        if any(c.delong is not None and c.delong.method == "stouffer" for c in comps):
            table.notes.append(
                "Some seeds were scored on different test images: those DeLong results combine "
                "per-seed z by Stouffer's method."
            )
        return table

    def dataset_figures(self, ds: str, cells: list[Cell]) -> None:
        label = self.r.label(ds)
        upper = self.r.upper_bound(ds)
        panels: dict[str, list[figures.RocCurve]] = {}
        bars: list[figures.AucBar] = []
        for c in cells:
            if c.is_teacher:
                continue
            runs = [c.ok[s] for s in c.seeds if c.ok[s].y is not None]
            if runs:
                try:
                    tpr_by = [figures.mean_roc(r.y, [r.prob])[0] for r in runs]
                    arr = np.array(tpr_by)
                    std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
                    panels.setdefault(REGIME_LABEL.get(c.regime, c.regime), []).append(
                        figures.RocCurve(f"{c.method} ({c.mean('auc'):.3f})", arr.mean(0), std)
                    )
                except ValueError:
                    pass
            low, high, _ = self.ci(c)
            bars.append(figures.AucBar(REGIME_LABEL.get(c.regime, c.regime), c.method, c.mean("auc"), low, high))
        if upper is not None:
            runs = [upper.ok[s] for s in upper.seeds if upper.ok[s].y is not None]
            if runs:
                try:
                    arr = np.array([figures.mean_roc(r.y, [r.prob])[0] for r in runs])
                    std = arr.std(0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
                    curve = figures.RocCurve(
                        f"{method_label(upper.method)} ({upper.mean('auc'):.3f})", arr.mean(0), std, dashed=True
                    )
                    for p in panels.values():
                        p.append(curve)
                except ValueError:
                    pass
        if panels:
            paths = figures.roc_figure(
                f"{label}: ROC on the test set (mean over seeds, band ±1 std)",
                panels,
                self.fig_dir / f"roc_{_slug(ds)}",
            )
            self.add_figure(
                paths,
                f"{label}: ROC curves per training regime, mean over seeds with a ±1 std band; "
                "dashed: teacher on its own modality's test images",
            )
        if bars:
            t_auc = upper.mean("auc") if upper is not None else None
            paths = figures.auc_bars(
                f"{label}: AUC with 95% lesion-bootstrap CI",
                bars,
                self.fig_dir / f"auc_{_slug(ds)}",
                t_auc,
                method_label(upper.method) if upper else "teacher",
            )
            self.add_figure(
                paths, f"{label}: mean AUC over seeds; whiskers: 95% lesion-level bootstrap CI of the seed-mean AUC"
            )

    def summary_section(self) -> None:
        dss = [d for d in self.r.datasets if self.r.dataset_cells(d)]
        if not dss:
            return
        self.emit("## AUC across datasets", "")
        cols = [self.r.label(d) for d in dss]
        table = Table(
            "auc_summary",
            "AUC (%) across datasets: teacher upper bound, student-only baseline, strongest non-PaGKD method, PaGKD",
            ["row", *cols],
            numeric=set(range(1, len(cols) + 1)),
        )

        def best_of(ds: str, pred) -> Cell | None:
            cand = [c for c in self.r.dataset_cells(ds) if pred(c) and math.isfinite(c.mean("auc"))]
            return max(cand, key=lambda c: c.mean("auc")) if cand else None

        rows = [
            ("teacher (upper bound)", lambda ds: self.r.upper_bound(ds)),
            ("student only (baseline)", lambda ds: best_of(ds, lambda c: c.method == BASELINE)),
            (
                "strongest non-PaGKD method",
                lambda ds: best_of(ds, lambda c: not c.is_teacher and c.method != BASELINE and not _is_pagkd(c.method)),
            ),
            ("PaGKD", lambda ds: best_of(ds, lambda c: c.method == "pagkd")),
        ]
        for name, pick in rows:
            row = [TCell(name)]
            for ds in dss:
                c = pick(ds)
                if c is None:
                    row.append(TCell("—", {self.r.label(ds): ""}))
                    continue
                who = f" ({c.method})" if c.is_teacher else f" ({c.method}, {regime_label(c)})"
                row.append(
                    TCell(
                        _pct(c.mean("auc"), c.std("auc")) + who,
                        {
                            f"{self.r.label(ds)}_auc_mean": c.mean("auc"),
                            f"{self.r.label(ds)}_auc_std": c.std("auc"),
                            f"{self.r.label(ds)}_method": c.method,
                            f"{self.r.label(ds)}_regime": c.regime,
                        },
                    )
                )
            table.rows.append(row)
        table.notes.append(
            "Each row shows, per dataset, the method and training data with the highest mean AUC "
            "in its group. Datasets marked [SYNTHETIC] are rendered twins."
        )
        self.add_table(table)

        keys = sorted(
            {(c.method, c.regime) for d in dss for c in self.r.dataset_cells(d)},
            key=lambda k: (*_method_rank(k[0]), _regime_key(k[1])),
        )
        full = Table(
            "auc_by_dataset",
            "AUC (%) by method, training data and dataset",
            ["method", "training data", *cols],
            numeric=set(range(2, len(cols) + 2)),
        )
        best = {d: _best(c.mean("auc") for c in self.r.dataset_cells(d) if not c.is_teacher) for d in dss}
        for method, regime in keys:
            any_cell = next(c for d in dss for c in self.r.dataset_cells(d) if (c.method, c.regime) == (method, regime))
            row = [TCell(method_label(method), {"method": method}), TCell(regime_label(any_cell), {"regime": regime})]
            for d in dss:
                c = self.r.cell(d, regime, method)
                if c is None:
                    row.append(TCell("—", {f"{self.r.label(d)}_auc_mean": math.nan}))
                    continue
                mean = c.mean("auc")
                row.append(
                    TCell(
                        _pct(mean, c.std("auc")),
                        {f"{self.r.label(d)}_auc_mean": mean, f"{self.r.label(d)}_auc_std": c.std("auc")},
                        bold=not c.is_teacher and bool(np.isclose(mean, best[d])),
                    )
                )
            full.rows.append(row)
        full.notes.append(
            "Mean ± std over seeds; best student per dataset in bold. Datasets marked [SYNTHETIC] are rendered twins."
        )
        self.add_table(full)

    def friedman_section(self) -> None:
        self.emit("## Ranking across datasets (Friedman, Nemenyi)", "")
        blocks: dict[str, dict[str, float]] = {}
        for ds in self.r.datasets:
            for c in self.r.dataset_cells(ds):
                if c.is_teacher or not math.isfinite(c.mean("auc")):
                    continue
                blocks.setdefault(f"{self.r.label(ds)} / {REGIME_LABEL.get(c.regime, c.regime)}", {})[c.method] = (
                    c.mean("auc")
                )
        frame = pd.DataFrame(blocks).T
        frame, dropped = _complete_design(frame)
        res = friedman_nemenyi(frame, ALPHA)
        self.emit(
            "Blocks are (dataset, training data) cells, treatments are methods, the score is the mean AUC over "
            "seeds; rank 1 is best. Blocks from the same dataset share test images, so they are not fully "
            "independent: read the ranking as descriptive when most blocks come from one dataset.",
            "",
        )
        if dropped:
            self.emit("Dropped to make the design complete: " + "; ".join(dropped) + ".", "")
        if res.note:
            self.emit(f"Not computed: {res.note}.", "")
            return
        self.emit(
            f"Friedman χ² = {res.statistic:.2f}, p = {_p(res.p)} over {res.n_blocks} blocks and {res.k} methods; "
            f"Nemenyi critical difference at α = {ALPHA}: {res.cd:.2f} ranks.",
            "",
        )
        table = Table(
            "friedman_ranks",
            "Average rank by mean AUC across (dataset, training data) blocks",
            ["method", "average rank"],
            numeric={1},
        )
        for m, rk in res.ranks.sort_values().items():
            table.rows.append([TCell(str(m)), TCell(f"{rk:.2f}", {"average_rank": rk})])
        if any(self.r.synthetic.values()):
            table.notes.append(
                "Includes SYNTHETIC datasets: " + ", ".join(d for d in self.r.datasets if self.r.synthetic.get(d)) + "."
            )
        self.add_table(table)
        try:
            paths = figures.cd_diagram(
                f"Critical difference (Nemenyi, α = {ALPHA}, CD = {res.cd:.2f}); {res.n_blocks} blocks"
                + (" incl. SYNTHETIC data" if any(self.r.synthetic.values()) else ""),
                res.ranks,
                res.nemenyi,
                res.cd,
                self.fig_dir / "critical_difference",
            )
            self.add_figure(
                paths,
                "Critical-difference diagram: average ranks (1 = best); methods joined by a bar "
                "are not significantly different by the Nemenyi test",
            )
        except Exception as err:  # a drawing failure must not lose the report
            self.emit(f"(critical-difference diagram not drawn: {type(err).__name__}: {err})", "")

    def ablation_section(self) -> None:
        fam = sorted({c.method for c in self.r.cells.values() if c.ok and _is_pagkd(c.method)})
        if not any(m != "pagkd" for m in fam):
            return
        self.emit("## Ablations (PaGKD)", "")
        columns = []
        for ds in self.r.datasets:
            regimes = sorted({c.regime for c in self.r.dataset_cells(ds) if _is_pagkd(c.method)}, key=_regime_key)
            columns += [(ds, rg) for rg in regimes]
        col_names = [f"{self.r.label(ds)} / {REGIME_LABEL.get(rg, rg)}" for ds, rg in columns]

        def auc_text(ds: str, rg: str, method: str) -> TCell:
            c = self.r.cell(ds, rg, method)
            key = f"{self.r.label(ds)}_{rg}_auc_mean"
            if c is None:
                return TCell("—", {key: math.nan})
            return TCell(
                _pct(c.mean("auc"), c.std("auc")),
                {key: c.mean("auc"), f"{self.r.label(ds)}_{rg}_auc_std": c.std("auc")},
            )

        table = Table(
            "ablation_modules",
            "PaGKD modules: AUC (%) with GKD-Pro and/or GKD-Den",
            ["GKD-Pro", "GKD-Den", "method", *col_names],
            numeric=set(range(3, 3 + len(columns))),
        )
        for (pro, den), method in PAGKD_MODULES.items():
            if (pro, den) == (False, False) and "pagkd-none" in fam:
                method = "pagkd-none"  # CE on the same group batches: isolates the modules from the sampler
            table.rows.append(
                [
                    TCell("yes" if pro else "-"),
                    TCell("yes" if den else "-"),
                    TCell(method),
                    *(auc_text(ds, rg, method) for ds, rg in columns),
                ]
            )
        table.notes.append(
            "The paper's first ablation shape (neither / Pro / Den / both). Mean ± std over seeds. "
            "Columns marked [SYNTHETIC] are rendered twins."
        )
        self.add_table(table)
        if any(m in fam for m in PAGKD_LEVELS["image-level"]):
            lv = Table(
                "ablation_levels",
                "PaGKD image-level vs group-level distillation: AUC (%)",
                ["data", "level", "Pro", "Den", "joint"],
                numeric={2, 3, 4},
            )
            for ds, rg in columns:
                for level, names in PAGKD_LEVELS.items():
                    lv.rows.append(
                        [
                            TCell(
                                f"{self.r.label(ds)} / {REGIME_LABEL.get(rg, rg)}",
                                {"dataset": ds, "synthetic": bool(self.r.synthetic.get(ds)), "regime": rg},
                            ),
                            TCell(level),
                            *(
                                _rename(auc_text(ds, rg, m), part)
                                for m, part in zip(names, ("pro", "den", "joint"), strict=True)
                            ),
                        ]
                    )
            lv.notes.append(
                "Image-level: groups of one class-matched pseudo-pair (`pagkd-image*`); group-level: "
                "same-class groups (`pagkd-pro`, `pagkd-den`, `pagkd`). Missing variants show —."
            )
            self.add_table(lv)
        others = [m for m in fam if m not in {"pagkd", "pagkd-none", *PAGKD_MODULES.values(),
                                              *PAGKD_LEVELS["image-level"]}]
        if others:
            comp = Table(
                "ablation_components",
                "PaGKD component variants: AUC (%) and change against the reference",
                ["variant", "change", "reference", *col_names],
                numeric=set(range(3, 3 + len(columns))),
            )
            for m in others:
                what, ref = PAGKD_COMPONENTS.get(m, ("variant", "pagkd"))
                row = [TCell(m), TCell(what), TCell(ref)]
                for ds, rg in columns:
                    c, r = self.r.cell(ds, rg, m), self.r.cell(ds, rg, ref)
                    key = f"{self.r.label(ds)}_{rg}"
                    if c is None:
                        row.append(TCell("—", {f"{key}_auc_mean": math.nan}))
                        continue
                    delta = c.mean("auc") - r.mean("auc") if r is not None else math.nan
                    text = _pct(c.mean("auc"), c.std("auc")) + (
                        f" ({100 * delta:+.1f})" if math.isfinite(delta) else ""
                    )
                    row.append(TCell(text, {f"{key}_auc_mean": c.mean("auc"), f"{key}_delta_vs_ref": delta}))
                comp.rows.append(row)
            comp.notes.append(
                "In brackets: percentage-point change of mean AUC against the reference variant with the same data."
            )
            self.add_table(comp)

    def gap_section(self) -> None:
        rows: dict[str, dict[str, float]] = {}
        table = Table(
            "gap_closed",
            "Share of the teacher–baseline AUC gap closed (%)",
            ["dataset", "training data", "teacher AUC", "baseline AUC", "method", "method AUC", "gap closed"],
            numeric={2, 3, 5, 6},
        )
        skipped = []
        for ds in self.r.datasets:
            upper = self.r.upper_bound(ds)
            if upper is None:
                continue
            t_auc = upper.mean("auc")
            for c in self.r.dataset_cells(ds):
                if c.is_teacher or c.method == BASELINE:
                    continue
                base = self.r.cell(ds, c.regime, BASELINE)
                if base is None:
                    continue
                gap = t_auc - base.mean("auc")
                if not (math.isfinite(gap) and gap > 0.005):
                    skipped.append(f"{self.r.label(ds)} / {REGIME_LABEL.get(c.regime, c.regime)}")
                    continue
                share = 100 * (c.mean("auc") - base.mean("auc")) / gap
                col = f"{self.r.label(ds)} / {REGIME_LABEL.get(c.regime, c.regime)}"
                rows.setdefault(c.method, {})[col] = share
                table.rows.append(
                    [
                        TCell(self.r.label(ds), {"dataset": ds, "synthetic": bool(self.r.synthetic.get(ds))}),
                        TCell(REGIME_LABEL.get(c.regime, c.regime), {"regime": c.regime}),
                        TCell(_pct(t_auc), {"teacher_auc": t_auc}),
                        TCell(_pct(base.mean("auc")), {"baseline_auc": base.mean("auc")}),
                        TCell(c.method),
                        TCell(_pct(c.mean("auc")), {"method_auc": c.mean("auc")}),
                        TCell(f"{share:.0f}%", {"gap_closed_pct": share}),
                    ]
                )
        if not table.rows and not skipped:
            return
        self.emit("## Teacher–student gap", "")
        self.emit(
            "Gap closed = (AUC_method − AUC_baseline) / (AUC_teacher − AUC_baseline), with the teacher (the NBI "
            "teacher for cross-modal data) scored on test images of its own modality and the students (baseline "
            "and method, same training data) on the WLI test images; 100% means the student matches the "
            "teacher, negative means worse than the baseline.",
            "",
        )
        if skipped:
            self.emit(
                "Not defined where the teacher is not above the baseline by at least 0.5 AUC points: "
                + "; ".join(sorted(set(skipped)))
                + ".",
                "",
            )
        if table.rows:
            self.add_table(table)
            paths = figures.gap_closed_figure(
                "Teacher–baseline AUC gap closed per method"
                + (" (incl. SYNTHETIC data)" if any(self.r.synthetic.values()) else ""),
                rows,
                self.fig_dir / "gap_closed",
            )
            self.add_figure(paths, "Share of the teacher / student-only baseline AUC gap each method closes")

    def inventory_section(self) -> None:
        self.emit("## Run inventory", "")
        table = Table(
            "inventory",
            "Runs per (dataset, training data, method)",
            ["dataset", "training data", "method", "ok", "seeds", "steps", "failed", "unsupported", "message"],
            numeric={3, 6, 7},
        )
        for key in sorted(self.r.cells, key=lambda k: (k[0], *_cell_order(self.r.cells[k]))):
            c = self.r.cells[key]
            msgs = []
            for rec in c.failed + c.unsupported:
                err = rec.get("error") or {}
                text = f"{err.get('type', rec.get('status'))}: {err.get('message', '')}".strip()
                text = " ".join(text.split())
                if text not in msgs:
                    msgs.append(text)
            failed_seeds = sorted(int(r.get("seed", 0)) for r in c.failed)
            table.rows.append(
                [
                    TCell(
                        self.r.label(c.dataset),
                        {"dataset": c.dataset, "synthetic": bool(self.r.synthetic.get(c.dataset))},
                    ),
                    TCell(REGIME_LABEL.get(c.regime, c.regime), {"regime": c.regime}),
                    TCell(c.method),
                    TCell(str(len(c.ok)), {"ok": len(c.ok)}),
                    TCell(",".join(map(str, c.seeds)), {"seeds": " ".join(map(str, c.seeds))}),
                    TCell(steps_text(c), {"steps": steps_text(c)}),
                    TCell(
                        str(len(c.failed)) + (f" (seed {','.join(map(str, failed_seeds))})" if failed_seeds else ""),
                        {"failed": len(c.failed)},
                    ),
                    TCell(str(len(c.unsupported)), {"unsupported": len(c.unsupported)}),
                    TCell("; ".join(m[:200] for m in msgs), {"message": " | ".join(msgs)}),
                ]
            )
        self.add_table(table)

    def deviations_section(self) -> None:
        infos: dict[str, dict[str, Any]] = {}
        for rec in self.r.records:
            m = str(rec.get("method"))
            if m.startswith("teacher-") or m in infos:
                continue
            infos[m] = rec.get("method_info") or {}
        if not infos:
            return
        self.emit("## Methods and their documented deviations", "")
        for m in sorted(infos, key=_method_rank):
            info = infos[m]
            head = f"- **{m}**"
            if info.get("paper"):
                head += f" ({info['paper']})"
            if info.get("summary"):
                head += f": {info['summary']}"
            self.emit(head)
            dev = " ".join(str(info.get("deviations") or "").split())
            self.emit(f"  - Deviations: {dev if dev else 'none documented.'}")
        self.emit("")


# =======================================================================================
# small helpers


def _best(values: Iterable[float]) -> float:
    """The highest finite value, or NaN when there is none or when all values tie
    (bold on every row would say nothing)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals or (len(vals) > 1 and np.allclose(vals, vals[0], rtol=0, atol=1e-12)):
        return math.nan
    return max(vals)


def _rename(c: TCell, part: str) -> TCell:
    if c.csv:
        c.csv = {f"{part}_{k}": v for k, v in c.csv.items()}
    return c


def _regime_key(regime: str) -> int:
    return REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "dataset"


def _hardware(hw: Any) -> str:
    if not isinstance(hw, dict):
        return str(hw)
    parts = [str(hw.get("cpu") or hw.get("machine") or "cpu")]
    if hw.get("cpu_count"):
        parts[0] += f" ({hw['cpu_count']} cores)"
    if hw.get("gpus"):
        parts.append(", ".join(map(str, hw["gpus"])))
    return " + ".join(parts)


def _find_key(obj: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts, or ``None``."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None


def _complete_design(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Drop blocks or methods with missing scores, whichever loses fewer scores, until complete."""
    dropped: list[str] = []
    frame = frame.copy()
    while frame.size and frame.isna().any().any():
        col_missing = frame.isna().sum(axis=0)
        row_missing = frame.isna().sum(axis=1)
        col = col_missing.idxmax()
        row = row_missing.idxmax()
        loss_col = int(frame[col].notna().sum())
        loss_row = int(frame.loc[row].notna().sum())
        if loss_col <= loss_row:
            frame = frame.drop(columns=[col])
            dropped.append(f"method {col} (missing in {int(col_missing[col])} block(s))")
        else:
            frame = frame.drop(index=[row])
            dropped.append(f"block {row} (missing {int(row_missing[row])} method(s))")
    return frame, dropped


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
    builder = ReportBuilder(res, out, title or "kdbench report", n_boot=n_boot)
    return builder.build()
