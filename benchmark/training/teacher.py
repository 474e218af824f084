"""Teachers: trained once per (dataset, modality, seed, profile), cached by content hash.

A teacher is the profile's ``teacher_backbone`` trained with cross-entropy on the
teacher modality's training images (NBI for cross-modal regimes; the student's own
modality for ``same``), selected on validation AUC of that modality, and scored on
that modality's test images (the upper-bound row of the report). Its weights are
cached as ``<cache>/teachers/<key>.pt`` beside ``<key>.json`` holding the file's
sha256 and the teacher's scores; a checkpoint whose hash does not match is rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from datasets.base import DatasetBundle
from datasets.images import write_atomic
from datasets.regimes import Regime
from methods.baseline import Baseline

from ..analysis.metrics import classification_metrics
from ..models.backbones import Backbone, create_backbone
from ..settings.config import SUITE_VERSION, hashed_profile, stable_hash
from ..settings.profiles import Profile
from .inputs import ImageStore
from .probe import initial_head
from .provenance import dataset_fingerprint
from .runfile import write_json_atomic
from .setup import training_setup
from .train import fit, predict, seed_everything

TEACHER_FIELDS = (
    "teacher_backbone", "image_size", "teacher_epochs", "teacher_lr", "batch_size", "optimizer", "weight_decay",
    "momentum", "augment", "normalize", "pretrained", "precision", "channels_last", "val_every", "min_steps",
    "teacher_min_steps", "frozen_stages", "head_init", "frozen_bn", "selection",
)


@dataclass
class TeacherResult:
    model: Backbone
    key: str
    modality: str
    metrics: dict[str, float]
    val_auc: float
    train_s: float
    cached: bool
    record: dict[str, Any]


def teacher_key(bundle: DatasetBundle, modality: str, profile: Profile, seed: int) -> str:
    fields = hashed_profile({k: getattr(profile, k) for k in TEACHER_FIELDS})
    return stable_hash({
        "dataset": dataset_fingerprint(bundle), "modality": modality, "seed": seed, "profile": fields,
        "suite_version": SUITE_VERSION,
    })[:24]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def get_teacher(
    bundle: DatasetBundle,
    store: ImageStore,
    modality: str,
    profile: Profile,
    seed: int,
    cache_dir: Path,
    accelerator: Any,
    progress: bool = False,
) -> TeacherResult:
    """Load the cached teacher or train it; always returns it frozen in eval mode."""
    key = teacher_key(bundle, modality, profile, seed)
    folder = cache_dir / "teachers"
    ckpt, meta_path = folder / f"{key}.pt", folder / f"{key}.json"
    _, _, test_index = bundle.teacher_pools(modality)
    # Seed before the weights are drawn: a teacher must not depend on what the process
    # ran before it (a --workers process trains several teachers in a row).
    seed_everything(seed)
    model = create_backbone(profile.teacher_backbone, bundle.num_classes, profile.pretrained).to(accelerator.device)
    if profile.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.freeze_trunk(profile.frozen_stages)
    store = store.for_model(model, profile.normalize)

    meta = None
    if ckpt.exists() and meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("sha256") != _sha256(ckpt):
                print(f"[kdbench] teacher cache {ckpt} does not match its recorded hash; retraining it",
                      file=sys.stderr)
                meta = None
            else:
                model.load_state_dict(torch.load(ckpt, map_location=accelerator.device, weights_only=True))
        except (json.JSONDecodeError, RuntimeError, OSError, KeyError) as err:
            print(f"[kdbench] teacher cache {ckpt} is unreadable ({err}); retraining it", file=sys.stderr)
            meta = None

    if meta is None:
        started = time.perf_counter()
        data, ctx, plan = training_setup(bundle, Regime.SAME, profile, store, method=Baseline,
                                   student=model.spec(profile.image_size), modality=modality)
        head_init = initial_head(model, store, data, profile, seed)
        result = fit(
            student=model, distiller=Baseline(ctx), teacher=None, data=data, profile=profile,
            epochs=plan.epochs, lr=profile.teacher_lr, weights=dict(Baseline.default_weights),
            seed=seed, accelerator=accelerator, progress=progress,
            description=f"teacher {bundle.dataset_id}/{modality}/seed{seed}", val_every=plan.val_every,
            validate_at_start=head_init is not None,
        )
        accelerator.free_memory()
        prob = predict(model, store, test_index, profile)
        metrics = classification_metrics(bundle.table.labels[test_index], prob)
        meta = {
            "key": key, "modality": modality, "dataset": bundle.dataset_id, "seed": seed,
            "backbone": profile.teacher_backbone, "best_epoch": result.best_epoch, "val_auc": result.best_val_auc,
            "selection": result.selection,
            "metrics": metrics, "train_s": time.perf_counter() - started, "history": result.history,
            "steps": result.steps, "epochs": plan.epochs, "head_init": head_init,
            "test_prob": prob.tolist(),
        }
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            torch.save(model.state_dict(), buffer)
            write_atomic(ckpt, buffer.getvalue())
            meta["sha256"] = _sha256(ckpt)
            write_json_atomic(meta_path, meta)
        cached = False
    else:
        cached = True
    accelerator.wait_for_everyone()
    model.eval()
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(False)
    return TeacherResult(
        model=model, key=key, modality=modality, metrics=meta["metrics"], val_auc=meta["val_auc"],
        train_s=float(meta["train_s"]), cached=cached, record=meta,
    )
