"""Linear-probe yardstick: frozen pretrained features + logistic regression.

The simplest use of the same pretrained weights a run fine-tunes: the backbone's pooled
embedding of every un-augmented image (ImageNet weights, eval mode, the profile's image
size and normalisation), standardised on the training images, and a multinomial
logistic regression (scikit-learn, L2) whose inverse regularisation ``C`` is chosen on
the validation split (the inner validation split of each fold under k-fold; the test
images are never looked at). It fits on the same training lesions the students see and
is scored on the same test lesions, in seconds.

Written as reference run files, ``<out>/runs/<dataset>/reference/probe-<modality>/``,
with ``"reference": true``: ``probe-<student modality>`` uses the student's backbone (the
yardstick a fine-tuned or distilled student must beat), ``probe-<teacher modality>`` the
teacher's backbone (what the teacher should at least reach). Only profiles with
pretrained weights get probes (random features are no yardstick). The probe has no
training randomness, so one row per (dataset, fold), under the grid's first seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from datasets.base import DatasetBundle

from ..analysis.metrics import auc_score, classification_metrics
from ..models.backbones import create_backbone
from ..settings.config import RunConfig, stable_hash
from ..settings.profiles import Profile
from .provenance import dataset_fingerprint
from .runfile import read_run, run_path, write_json_atomic

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))
"""Inverse L2 strengths tried; the best validation AUC wins (the smaller C on ties)."""
PROBE_VERSION = 1
REFERENCE_REGIME = "reference"


@dataclasses.dataclass(frozen=True)
class ProbeFit:
    prob: np.ndarray
    """Test-set class probabilities."""
    c: float
    val_auc: float
    val_aucs: dict[float, float]
    weight: np.ndarray
    """``(classes, features)`` the chosen model as a linear head on the raw features
    (standardisation folded in): ``logits = x @ weight.T + bias`` gives its probabilities."""
    bias: np.ndarray


def has_pretrained(profile: Profile, backbone: str) -> bool:
    return bool(profile.pretrained) or backbone.endswith(".imagenet")


@torch.no_grad()
def embed(model: torch.nn.Module, store: Any, index: np.ndarray, profile: Profile, batch_size: int = 128) -> np.ndarray:
    """Pooled embeddings of ``index`` (un-augmented), as float64 rows."""
    model.eval()
    rows = []
    for start in range(0, len(index), batch_size):
        x = store.batch(index[start : start + batch_size], profile.normalize, augment=False)
        rows.append(model(x).embedding.float().cpu().numpy())
    return np.concatenate(rows).astype(np.float64) if rows else np.zeros((0, 0))


def fit_probe(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, test_x: np.ndarray,
    num_classes: int, c_grid: tuple[float, ...] = C_GRID,
) -> ProbeFit:
    """Logistic regression with ``C`` chosen by validation AUC; test probabilities."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tr, va, te = scaler.transform(train_x), scaler.transform(val_x), scaler.transform(test_x)

    def model(c: float) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return LogisticRegression(C=c, max_iter=3000).fit(tr, train_y)

    def full(m: Any, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), num_classes))
        out[:, m.classes_] = m.predict_proba(x)
        return out

    val_aucs: dict[float, float] = {}
    best_c, best_auc, best_model = c_grid[0], -math.inf, None
    for c in c_grid:
        m = model(c)
        auc = auc_score(val_y, full(m, va))
        val_aucs[c] = auc
        score = auc if math.isfinite(auc) else -math.inf
        if score > best_auc or best_model is None:
            best_c, best_auc, best_model = c, score, m
    weight, bias = _as_linear_head(best_model, scaler, num_classes, train_x.shape[1])
    return ProbeFit(prob=full(best_model, te), c=best_c, val_auc=best_auc, val_aucs=val_aucs, weight=weight,
                    bias=bias)


ABSENT_CLASS_BIAS = -30.0
"""Logit bias of a class the logistic regression never saw (probability about 1e-13)."""


def _as_linear_head(model: Any, scaler: Any, num_classes: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on standardised features -> weight and bias on raw features.
    Binary scikit-learn models hold one row ``z`` (``p1 = sigmoid(z)``): logits ``(0, z)``."""
    coef = np.asarray(model.coef_, dtype=np.float64) / scaler.scale_
    intercept = np.asarray(model.intercept_, dtype=np.float64) - coef @ scaler.mean_
    weight = np.zeros((num_classes, dim))
    bias = np.full(num_classes, ABSENT_CLASS_BIAS)
    classes = np.asarray(model.classes_, dtype=np.int64)
    if coef.shape[0] == 1:
        bias[classes[0]] = 0.0
        weight[classes[1]], bias[classes[1]] = coef[0], intercept[0]
    else:
        weight[classes], bias[classes] = coef, intercept
    return weight, bias


def initial_head(model: Any, store: Any, data: Any, profile: Profile, seed: int) -> dict[str, Any] | None:
    """Set ``model``'s head as the profile's ``head_init`` says: ``""`` keeps it (``None``
    returned), ``probe`` fits it by :func:`fit_head_to_probe` (what it did is returned,
    for the run file; the starting network is then a selection candidate too)."""
    if profile.head_init == "probe":
        return fit_head_to_probe(model, store, data, profile, seed)
    if profile.head_init:
        raise ValueError(f"unknown head_init {profile.head_init!r}; use '' or 'probe'")
    return None


def fit_head_to_probe(model: Any, store: Any, data: Any, profile: Profile, seed: int) -> dict[str, Any]:
    """LP-FT's first stage (Kumar et al., ICLR 2022): replace ``model``'s linear head by
    the logistic regression (C chosen on the run's validation split, as the probe rows
    do) fitted to its own pooled features of the un-augmented training images; the
    fine-tuning that follows then starts from the probe instead of a random head, so it
    does not wreck the pretrained features while the head is still random.

    The features are taken as the network will be evaluated: after batch-norm
    recalibration on the training images when the profile recalibrates. Returns what
    the run file records."""
    from .train import recalibrate_batchnorm, recalibration_index

    if profile.bn_recalibration:
        recalibrate_batchnorm(model, store, recalibration_index(data, profile, seed), profile)
    train_x = embed(model, store, data.student_pool, profile)
    val_x = embed(model, store, data.val_index, profile)
    fit = fit_probe(train_x, data.student_labels, val_x, data.val_labels, val_x, data.num_classes)
    head = model.classifier
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(fit.weight, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(fit.bias, dtype=head.bias.dtype))
    return {"rule": "probe", "C": fit.c, "val_auc": fit.val_auc}


def probe_jobs(bundle: DatasetBundle, profile: Profile) -> list[tuple[str, str]]:
    """(modality, backbone) probes of a dataset under a profile."""
    jobs = [(bundle.student_modality, profile.backbone)]
    if bundle.cross_modal:
        jobs.append((bundle.teacher_modality, profile.teacher_backbone))
    return [(m, b) for m, b in jobs if has_pretrained(profile, b)]


def probe_record(session: Any, cfg: RunConfig, bundle: DatasetBundle, modality: str, backbone: str,
                 features: np.ndarray, key: str) -> dict[str, Any]:
    """The reference run record of one probe on one bundle (fold)."""
    started = time.perf_counter()
    rcfg = dataclasses.replace(cfg, regime=REFERENCE_REGIME, method=f"probe-{modality}", method_options={},
                               weights={})
    rec = session.base_record(rcfg, bundle)
    rec["config_hash"] = key
    rec["reference"] = True
    rec["method_info"] = {"name": rcfg.method, "summary": f"linear probe: frozen ImageNet {backbone} features + "
                                                          "logistic regression (C on validation AUC)"}
    train, val, test = bundle.teacher_pools(modality)
    labels = bundle.table.labels
    fit = fit_probe(features[train], labels[train], features[val], labels[val], features[test], bundle.num_classes)
    rec["metrics"] = classification_metrics(labels[test], fit.prob)
    rec["selection"] = {"criterion": "val_auc", "C": fit.c, "best_val_auc": fit.val_auc,
                        "val_auc_by_C": {f"{c:g}": a for c, a in fit.val_aucs.items()}}
    rec["predictions"] = {
        "classes": bundle.classes, "y": labels[test].tolist(), "prob": fit.prob.tolist(),
        "lesion": [str(x) for x in bundle.table.lesion[test]],
        "source": [str(x) for x in bundle.table.source[test]], "modality": modality,
    }
    rec["probe"] = {"backbone": backbone, "features": int(features.shape[1]), "train_images": len(train)}
    rec["timing"] = {"train_s": time.perf_counter() - started, "steps": 0}
    return rec


def write_probe_rows(session: Any, bundles: dict[str, DatasetBundle], configs: list[RunConfig], out: str) -> int:
    """Write (or keep, when current) the probe rows of every (dataset, fold) in ``configs``;
    returns how many were computed."""
    done: set[tuple[str, int]] = set()
    first_seed: dict[str, int] = {}
    for cfg in configs:
        first_seed[cfg.dataset] = min(first_seed.get(cfg.dataset, cfg.seed), cfg.seed)
    features: dict[tuple[int, str], np.ndarray] = {}
    computed = 0
    for cfg in configs:
        if (cfg.dataset, cfg.fold) in done:
            continue
        done.add((cfg.dataset, cfg.fold))
        cfg = dataclasses.replace(cfg, seed=first_seed[cfg.dataset])
        bundle = session.fold(bundles[cfg.dataset], cfg)
        profile = cfg.profile
        for modality, backbone in probe_jobs(bundle, profile):
            key = stable_hash({"probe": PROBE_VERSION, "dataset": dataset_fingerprint(bundle), "modality": modality,
                               "backbone": backbone, "pretrained": profile.pretrained, "C": C_GRID,
                               "image_size": profile.image_size, "normalize": profile.normalize})
            path = run_path(out, bundle.dataset_id, REFERENCE_REGIME, f"probe-{modality}", cfg.seed,
                            cfg.fold if cfg.folds else None)
            existing = read_run(path)
            if existing is not None and existing.get("config_hash") == key:
                continue
            fkey = (id(bundle.table), backbone)
            if fkey not in features:
                model = create_backbone(backbone, bundle.num_classes, profile.pretrained)
                model = model.to(session.accelerator(profile).device)
                index = np.arange(len(bundle.table))
                features[fkey] = embed(model, session.store(bundle, profile), index, profile)
            write_json_atomic(path, probe_record(session, cfg, bundle, modality, backbone, features[fkey], key))
            computed += 1
    return computed
