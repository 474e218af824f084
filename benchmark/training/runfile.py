"""Run files: one JSON per (dataset, regime, method, seed), written atomically.

Layout: ``<out>/runs/<dataset_id>/<regime>/<method>/seed<k>.json``; under k-fold
cross-validation one file per fold, ``seed<k>-fold<f>.json`` (pooled by
:mod:`benchmark.training.folds` when the report loads them). Linear-probe reference rows live
under ``<dataset_id>/reference/probe-<modality>/``. Teachers are
scored too and written as ``<out>/runs/<dataset_id>/teacher/teacher-<modality>/seed<k>.json``
(``regime`` = ``"teacher"``, ``method`` = ``"teacher-nbi"`` or ``"teacher-wli"``), so the
report can print the teacher as an upper-bound row.

Schema (``schema`` = 1)::

    {
      "schema": 1,
      "status": "ok" | "failed" | "unsupported",
      "dataset": "ih_polyp-synthetic", "synthetic": true, "regime": "unpaired",
      "method": "kd", "seed": 0, "profile": "cpu",
      "config": {...resolved RunConfig, enough to repeat the run...},
      "config_hash": "<sha256 of the semantic config>",
      "provenance": {"versions": {...}, "git_commit": "...", "git_dirty": bool,
                     "python": "...", "platform": "...", "hardware": {...},
                     "date": "ISO-8601", "command": "..."},
      "seeds": {"python": k, "numpy": k, "torch": k, "data_split": k, "sampler": k},
      "data": {"provenance": {...}, "sizes": {...split sizes...}, "classes": [...],
               "notes": [...]},
      "method_info": {...Distiller.describe()...},
      "metrics": {"auc": float, "f1": float, "acc": float, "balanced_acc": float,
                  "ece": float, ...},
      "selection": {"criterion": "val_auc", "best_epoch": int, "best_val_auc": float},
      "teacher": {"config_hash": "...", "val_auc": float, "test_auc": float} | null,
      "cost": {"params": int, "flops": int, "latency_ms": float},
      "timing": {"train_s": float, "eval_s": float, "total_s": float,
                 "teacher_s": float, "images_per_s": float},
      "history": [{"epoch": int, "loss": {...term: mean...}, "val_auc": float}, ...],
      "predictions": {"classes": [...], "y": [...], "prob": [[...]...],
                      "lesion": [...], "source": [...]},
      "error": null | {"type": "...", "message": "...", "step": int | null,
                       "terms": {...} | null, "traceback": "..."}
    }

``predictions.prob`` rows are softmax probabilities on the WLI test images (the
teacher's file holds its test images of its own modality). ``status`` is
``unsupported`` when a method was asked for a regime it does not declare or the
dataset cannot serve; such files carry ``error.message`` and no metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from datasets.images import write_atomic

SCHEMA_VERSION = 1


def run_path(out: Path | str, dataset_id: str, regime: str, method: str, seed: int, fold: int | None = None) -> Path:
    """``.../seed<k>.json``, or ``.../seed<k>-fold<f>.json`` for fold ``f`` of k-fold cross-validation."""
    name = f"seed{seed}" if fold is None else f"seed{seed}-fold{fold}"
    return Path(out) / "runs" / dataset_id / regime / method / f"{name}.json"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """Replace NaN/inf by None so the file is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json_atomic(path: Path | str, record: dict[str, Any]) -> Path:
    """Write ``record`` as strict JSON (NaN as null) with
    :func:`datasets.images.write_atomic`: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(json.loads(json.dumps(record, default=_json_default))), indent=1)
    write_atomic(path, text.encode())
    return path


def read_run(path: Path | str) -> dict[str, Any] | None:
    """A run record, or ``None`` if the file is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def iter_runs(out: Path | str) -> list[dict[str, Any]]:
    """Every readable run record under ``<out>/runs`` (or ``out`` itself if it is a
    ``runs`` folder), each with its ``_path``."""
    root = Path(out)
    if (root / "runs").is_dir():
        root = root / "runs"
    records = []
    for p in sorted(root.rglob("seed*.json")):
        rec = read_run(p)
        if rec is not None and rec.get("schema") == SCHEMA_VERSION:
            rec["_path"] = str(p)
            records.append(rec)
    return records
