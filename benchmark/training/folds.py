"""k-fold cross-validation in the harness: when it is on, and pooling fold runs for the report.

Under ``--folds k`` every (dataset, regime, method, seed) runs once per fold
(:mod:`datasets.kfold`), each fold writing its own run file
(``seed<s>-fold<f>.json``), so resuming and sharding work per fold. The report scores
the *pooled* predictions: :func:`pool_folds` turns the k fold records of a
(dataset, regime, method, seed) into one record shaped like an ordinary run record,
whose test predictions are the concatenation of the folds' test predictions (every
lesion once) and whose metrics are recomputed on them. Tables, bootstrap CIs and tests
then treat it as one run per seed.

Default (:func:`resolve_folds`): real data with fewer than :data:`KFOLD_MAX_LESIONS`
lesions uses :data:`DEFAULT_FOLDS`-fold cross-validation; synthetic data and larger real
sets use one fixed lesion-level split. ``--folds k`` sets k explicitly, ``--folds 0``
forces the fixed split.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from datasets.base import DatasetBundle
from datasets.kfold import lesion_count

from ..analysis.metrics import classification_metrics
from ..settings.config import stable_hash

DEFAULT_FOLDS = 5
KFOLD_MAX_LESIONS = 300
"""Real datasets with fewer lesions than this use k-fold cross-validation by default."""

_SUMMED_TIMES = ("train_s", "eval_s", "total_s", "teacher_s", "val_s")


def resolve_folds(requested: int | None, bundle: DatasetBundle) -> int:
    """k for ``bundle``: ``requested`` if given (0: one fixed split), else the default rule."""
    if requested is not None:
        if requested < 0 or requested == 1:
            raise ValueError(f"--folds must be 0 (one fixed split) or at least 2, got {requested}")
        return int(requested)
    if not bundle.synthetic and lesion_count(bundle) < KFOLD_MAX_LESIONS:
        return DEFAULT_FOLDS
    return 0


def _fold_of(rec: dict[str, Any]) -> tuple[int, int] | None:
    fold = rec.get("fold")
    if isinstance(fold, dict) and "fold" in fold and int(fold.get("k", 0)) > 1:
        return int(fold["k"]), int(fold["fold"])
    return None


def _group_path(recs: list[dict[str, Any]], seed: int) -> str:
    path = recs[0].get("_path")
    return str(Path(path).with_name(f"seed{seed}-fold*.json")) if path else f"seed{seed}-fold*"


def pool_records(recs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """One record from the fold records of one (dataset, regime, method, seed)."""
    by_fold = {_fold_of(r)[1]: r for r in recs}  # type: ignore[index]
    first = by_fold[min(by_fold)]
    seed = int(first.get("seed", 0))
    pooled = copy.deepcopy({key: v for key, v in first.items() if key not in ("predictions", "history")})
    pooled["fold"] = {"k": k, "pooled": sorted(by_fold)}
    pooled["_path"] = _group_path(recs, seed)
    pooled["config_hash"] = stable_hash([by_fold[f].get("config_hash") for f in sorted(by_fold)])
    pooled["history"] = []
    pooled["predictions"] = None
    missing = [f for f in range(k) if f not in by_fold]
    statuses = {f: by_fold[f].get("status", "ok") for f in sorted(by_fold)}
    if all(st == "unsupported" for st in statuses.values()):
        pooled["status"] = "unsupported"
        return pooled
    bad = [f for f, st in statuses.items() if st != "ok" or not (by_fold[f].get("predictions") or {}).get("prob")]
    if bad:
        err = by_fold[bad[0]].get("error") or {}
        pooled["status"] = "failed"
        pooled["error"] = {"type": err.get("type", "Incomplete"),
                           "message": f"fold {bad[0]} of {k}: {err.get('message', 'no predictions')}"}
        return pooled
    if missing:
        pooled["status"] = "failed"
        pooled["error"] = {"type": "IncompleteFolds",
                           "message": f"fold(s) {', '.join(map(str, missing))} of {k} have no run file yet; "
                                      "run the grid again to finish them"}
        return pooled
    preds = [by_fold[f]["predictions"] for f in range(k)]
    y = np.concatenate([np.asarray(p["y"], dtype=np.int64) for p in preds])
    prob = np.concatenate([np.asarray(p["prob"], dtype=np.float64) for p in preds])
    pooled["predictions"] = {
        "classes": preds[0].get("classes"),
        "y": y.tolist(),
        "prob": prob.tolist(),
        "lesion": [str(v) for p in preds for v in p.get("lesion", [])],
        "source": [str(v) for p in preds for v in p.get("source", [])],
        "modality": preds[0].get("modality"),
        "fold": [f for f, p in enumerate(preds) for _ in p["y"]],
    }
    pooled["metrics"] = classification_metrics(y, prob)
    pooled["status"] = "ok"
    timings = [by_fold[f].get("timing") or {} for f in range(k)]
    steps = [t.get("steps") for t in timings]
    pooled["timing"] = {key: float(sum(t.get(key) or 0.0 for t in timings)) for key in _SUMMED_TIMES}
    pooled["timing"]["steps_per_fold"] = steps
    known = [s for s in steps if s is not None]
    pooled["timing"]["steps"] = round(float(np.mean(known))) if known else None
    pooled["selection"] = {"criterion": "val_auc (inner validation split of each fold)",
                           "per_fold": [by_fold[f].get("selection") for f in range(k)]}
    pooled["teacher"] = ([by_fold[f].get("teacher") for f in range(k)]
                         if any(by_fold[f].get("teacher") for f in range(k)) else None)
    sizes = [(by_fold[f].get("data") or {}).get("sizes") or {} for f in range(k)]
    pooled.setdefault("data", {})["sizes_per_fold"] = sizes
    return pooled


def pool_folds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with each complete set of fold records replaced by its pooled record
    (fold records of one group that disagree on k are pooled per k). Records without a
    fold pass through unchanged, in order."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        fold = _fold_of(rec)
        if fold is None:
            out.append(rec)
            continue
        key = (str(rec.get("dataset")), str(rec.get("regime")), str(rec.get("method")), int(rec.get("seed", 0)),
               fold[0])
        groups[key].append(rec)
    for key, recs in groups.items():
        out.append(pool_records(recs, key[-1]))
    return out
