"""Loading runs: every run file under a results folder, grouped into cells of seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.metrics import weighted_metrics
from ..training.folds import pool_folds
from ..training.runfile import iter_runs
from .naming import cell_order, is_oracle, is_reference, is_teacher, method_label, regime_label


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
        return is_teacher(self.regime, self.method)

    @property
    def is_oracle(self) -> bool:
        return is_oracle(self.regime)

    @property
    def is_reference(self) -> bool:
        """A yardstick row (teacher, WLI oracle), not a student: left out of comparisons and rankings."""
        return is_reference(self.regime, self.method)

    @property
    def record(self) -> dict[str, Any] | None:
        """The record of the first finished seed (labels of reference rows read it)."""
        return self.ok[self.seeds[0]].record if self.ok else None

    @property
    def label(self) -> str:
        return method_label(self.method, self.regime, self.record)

    @property
    def data_label(self) -> str:
        return regime_label(self.regime, self.method, self.record)

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


def to_run(rec: dict[str, Any]) -> Run:
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
                cell.ok[int(rec.get("seed", 0))] = to_run(rec)
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
        return sorted(cells, key=lambda c: cell_order(c.regime, c.method))

    def cell(self, dataset: str, regime: str, method: str) -> Cell | None:
        c = self.cells.get((dataset, regime, method))
        return c if c is not None and c.ok else None

    def upper_bound(self, dataset: str) -> Cell | None:
        teachers = [c for c in self.dataset_cells(dataset) if c.is_teacher]
        preferred = [c for c in teachers if c.method == "teacher-nbi"]
        return (preferred or teachers or [None])[0]

    def oracle(self, dataset: str) -> Cell | None:
        """The WLI-oracle reference cell of a dataset (synthetic cross-modal twins only), if run."""
        return next((c for c in self.dataset_cells(dataset) if c.is_oracle), None)
