"""One run: (dataset, regime, method, seed, profile) -> one run file.

A :class:`Session` holds what runs in one process share: the Accelerator, decoded
datasets, their image stores and trained teachers. :meth:`Session.run` trains the
student with the method, scores the WLI test set and returns the run record; it never
raises for a run that fails (non-finite loss, a method error): the failure is recorded
with its step and loss terms, and the grid goes on.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

import methods
from datasets.base import DatasetBundle
from datasets.catalog import DataRequest, load_dataset
from datasets.kfold import fold_bundle
from datasets.regimes import Regime

from ..analysis.metrics import classification_metrics
from ..models.backbones import create_backbone
from ..models.cost import model_cost
from ..settings.config import RunConfig
from ..settings.profiles import Profile
from . import tracking
from .inputs import ImageStore
from .probe import initial_head
from .provenance import provenance
from .runfile import SCHEMA_VERSION, run_path
from .setup import training_setup
from .teacher import TeacherResult, dataset_fingerprint, get_teacher
from .train import NonFiniteLossError, fit, predict, seed_everything

ORACLE_REGIME: str = Regime.ORACLE.value
ORACLE_METHOD = "baseline"
"""The one method the WLI-oracle reference trains."""


def oracle_summary(bundle: DatasetBundle, factor: int) -> dict[str, Any]:
    """What the WLI oracle trained on, against the baseline's ``all`` pool."""
    base, _ = bundle.regime_pools(Regime.ALL)
    oracle, _ = bundle.regime_pools(ORACLE_REGIME)
    lesions = bundle.table.lesion
    return {
        "factor": int(factor), "base_regime": str(Regime.ALL),
        "train_images": len(oracle), "train_lesions": len(np.unique(lesions[oracle])),
        "base_train_images": len(base), "base_train_lesions": len(np.unique(lesions[base])),
    }


def make_accelerator(profile: Profile, log_with: list[str] | None = None, logs: Path | None = None) -> Any:
    """An Accelerator for this process; mixed precision only on a GPU (on CPU Accelerate's
    fp16 does nothing and bf16 is erratic, so the CPU always trains in float32). ``log_with``
    names experiment trackers (:mod:`benchmark.training.tracking`), writing under ``logs``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    on_gpu = torch.cuda.is_available()
    precision = profile.precision if on_gpu else "no"
    return Accelerator(
        cpu=not on_gpu,
        mixed_precision=precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        log_with=list(log_with) if log_with else None,
        project_dir=str(logs) if log_with and logs is not None else None,
    )


def state_sha256(model: torch.nn.Module) -> str:
    """Fingerprint of a model's weights and buffers (identical across DDP ranks)."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Session:
    """Shared state of the runs of one process."""

    def __init__(self, out: Path | str, cache_dir: Path | str | None = None, progress: bool = False,
                 log_with: list[str] | None = None) -> None:
        self.out = Path(out)
        self.log_with = list(log_with or [])
        self.cache_dir = Path(cache_dir or os.environ.get("KDBENCH_CACHE") or self.out / "cache")
        self.progress = progress
        self._accelerator: Any = None
        self._datasets: dict[tuple, DatasetBundle] = {}
        self._stores: dict[tuple, ImageStore] = {}
        self._teachers: dict[tuple, TeacherResult] = {}
        self._folds: dict[tuple, DatasetBundle] = {}

    # -- shared resources ---------------------------------------------------------------
    def accelerator(self, profile: Profile) -> Any:
        """The process's Accelerator, made on first use with ``profile``'s precision."""
        if self._accelerator is None:
            self._accelerator = make_accelerator(profile, self.log_with, tracking.logs_dir(self.out))
        return self._accelerator

    def is_main(self, profile: Profile) -> bool:
        return bool(self.accelerator(profile).is_main_process)

    def dataset(self, cfg: RunConfig) -> DatasetBundle:
        p, d = cfg.profile, cfg.data
        key = (cfg.dataset, d.data_root, d.require_real, d.data_seed, d.on_bad_image, d.modality_list,
               p.image_size, p.data_scale, p.min_class_images, p.val_lesions, p.test_lesions, p.oracle_factor)
        if key not in self._datasets:
            request = DataRequest(
                name=cfg.dataset, data_root=d.data_root, image_size=p.image_size, scale=p.data_scale,
                min_class_images=p.min_class_images, data_seed=d.data_seed, require_real=d.require_real,
                on_bad_image=d.on_bad_image, cache_dir=str(self.cache_dir / "images"),
                modality_list=d.modality_list, val_lesions=p.val_lesions, test_lesions=p.test_lesions,
                oracle=p.oracle_factor,
            )
            self._datasets[key] = load_dataset(request)
        return self._datasets[key]

    def store(self, bundle: DatasetBundle, profile: Profile) -> ImageStore:
        key = (id(bundle.table), profile.channels_last)  # the folds of a dataset share its images
        if key not in self._stores:
            acc = self.accelerator(profile)
            self._stores[key] = ImageStore(bundle.table.images, acc.device, profile.channels_last)
        return self._stores[key]

    def fold(self, bundle: DatasetBundle, cfg: RunConfig) -> DatasetBundle:
        """The bundle ``cfg`` trains on: ``bundle`` itself, or its fold under k-fold cross-validation."""
        if not cfg.folds:
            return bundle
        key = (id(bundle), cfg.folds, cfg.fold, cfg.data.data_seed)
        if key not in self._folds:
            self._folds[key] = fold_bundle(bundle, cfg.folds, cfg.fold, cfg.data.data_seed)
        return self._folds[key]

    def teacher(self, bundle: DatasetBundle, modality: str, profile: Profile, seed: int) -> TeacherResult:
        key = (id(bundle), modality, seed, tuple(sorted(profile.as_dict().items())))
        if key not in self._teachers:
            self._teachers[key] = get_teacher(
                bundle, self.store(bundle, profile), modality, profile, seed, self.cache_dir,
                self.accelerator(profile), self.progress,
            )
        return self._teachers[key]

    # -- records ------------------------------------------------------------------------
    def base_record(self, cfg: RunConfig, bundle: DatasetBundle | None) -> dict[str, Any]:
        """A run's record before it runs: identity, config and its hash, provenance."""
        fingerprint = dataset_fingerprint(bundle) if bundle is not None else ""
        method_info = methods.get(cfg.method).describe() if cfg.method in methods.available() else {}
        return {
            "schema": SCHEMA_VERSION,
            "status": "ok",
            "dataset": bundle.dataset_id if bundle else cfg.dataset,
            "synthetic": bool(bundle.synthetic) if bundle else None,
            "regime": cfg.regime,
            "method": cfg.method,
            "seed": cfg.seed,
            "profile": cfg.profile.name,
            **({"fold": {"k": cfg.folds, "fold": cfg.fold}} if cfg.folds else {}),
            "config": cfg.as_dict(),
            "config_hash": cfg.hash(fingerprint),
            "provenance": provenance(),
            "seeds": {"data_split": cfg.data.data_seed, "render": cfg.data.data_seed},
            "data": {
                "provenance": bundle.provenance if bundle else {},
                "sizes": bundle.splits.sizes() if bundle else {},
                "classes": bundle.classes if bundle else [],
                "notes": bundle.notes if bundle else [],
                "fingerprint": fingerprint,
            },
            "method_info": method_info,
            "metrics": {},
            "selection": None,
            "teacher": None,
            "cost": None,
            "timing": {},
            "history": [],
            "predictions": None,
            "error": None,
        }

    def path_for(self, cfg: RunConfig, bundle: DatasetBundle) -> Path:
        return run_path(self.out, bundle.dataset_id, cfg.regime, cfg.method, cfg.seed,
                        cfg.fold if cfg.folds else None)

    def unsupported_reason(self, cfg: RunConfig, bundle: DatasetBundle) -> str | None:
        cls = methods.get(cfg.method)
        if cfg.regime == ORACLE_REGIME:
            if cfg.method != ORACLE_METHOD:
                return f"the {ORACLE_REGIME!r} reference trains {ORACLE_METHOD!r} only, not {cfg.method!r}"
            if not len(bundle.splits.oracle_student):
                return (f"dataset {bundle.dataset_id!r} has no WLI-oracle images (synthetic cross-modal twins "
                        "with profile oracle_factor >= 2 have them)")
            return None
        if cfg.profile.frozen_stages > 0 and cls.transforms_inputs:
            return (f"method {cfg.method!r} runs its networks on inputs it makes from the batch images (rotations), "
                    f"which a frozen, cached trunk cannot serve (frozen_stages={cfg.profile.frozen_stages}); "
                    "run it with --frozen-stages 0")
        if cfg.regime not in cls.regimes:
            return (f"method {cfg.method!r} does not support regime {cfg.regime!r} "
                    f"(it supports {', '.join(sorted(cls.regimes))})")
        if cfg.regime not in bundle.regimes():
            return (f"dataset {bundle.dataset_id!r} cannot serve regime {cfg.regime!r} "
                    f"(it serves {', '.join(bundle.regimes())})")
        return None

    # -- the run ------------------------------------------------------------------------
    def teacher_record(self, cfg: RunConfig, bundle: DatasetBundle, teacher: TeacherResult) -> dict[str, Any]:
        """A run record for the teacher itself (the report's upper-bound row)."""
        tcfg = dataclasses.replace(cfg, regime="teacher", method=f"teacher-{teacher.modality}", method_options={},
                                   weights={}, seed=cfg.profile.seed_of_teacher(cfg.seed))
        rec = self.base_record(tcfg, bundle)
        rec["config_hash"] = teacher.key
        rec["method_info"] = {"name": tcfg.method, "summary": f"{teacher.modality.upper()} teacher (upper bound)"}
        _, _, test = bundle.teacher_pools(teacher.modality)
        rec["metrics"] = teacher.metrics
        rec["selection"] = {"criterion": "val_auc", "best_epoch": teacher.record.get("best_epoch"),
                            "best_val_auc": teacher.val_auc}
        rec["timing"] = {"train_s": teacher.train_s, "steps": teacher.record.get("steps"),
                         "epochs": teacher.record.get("epochs")}
        rec["history"] = teacher.record.get("history", [])
        rec["predictions"] = {
            "classes": bundle.classes,
            "y": bundle.table.labels[test].tolist(),
            "prob": teacher.record.get("test_prob", []),
            "lesion": [str(x) for x in bundle.table.lesion[test]],
            "source": [str(x) for x in bundle.table.source[test]],
            "modality": teacher.modality,
        }
        rec["cost"] = model_cost(teacher.model, bundle.num_classes, cfg.profile.image_size,
                                 cfg.profile.teacher_backbone)
        rec["weights"] = {"student": None, "teacher": getattr(teacher.model, "weights", None)}
        return rec

    def run(self, cfg: RunConfig, bundle: DatasetBundle) -> dict[str, Any]:
        record = self.base_record(cfg, bundle)
        reason = self.unsupported_reason(cfg, bundle)
        if reason is not None:
            record["status"] = "unsupported"
            record["error"] = {"type": "Unsupported", "message": reason}
            return record
        started = time.perf_counter()
        profile = cfg.profile
        try:
            record["seeds"].update(seed_everything(cfg.seed))
            cls = methods.get(cfg.method)
            acc = self.accelerator(profile)
            store = self.store(bundle, profile)
            teacher = None
            teacher_s = 0.0
            modality = bundle.teaching_modality(cfg.regime)
            if cls.needs_teacher:
                teacher_seed = profile.seed_of_teacher(cfg.seed)
                tres = self.teacher(bundle, modality, profile, teacher_seed)
                teacher = tres.model
                teacher_s = 0.0 if tres.cached else tres.train_s
                record["teacher"] = {"config_hash": tres.key, "modality": modality, "seed": teacher_seed,
                                     "val_auc": tres.val_auc,
                                     "test_auc": tres.metrics.get("auc"), "backbone": profile.teacher_backbone,
                                     # same condition as train.fit: outputs computed once, un-augmented
                                     "output_cache": bool(profile.teacher_cache and not cls.teacher_augmented)}
            seed_everything(cfg.seed)
            if cfg.regime == ORACLE_REGIME:
                record["reference"] = "wli-oracle"
                record["oracle"] = oracle_summary(bundle, profile.oracle_factor)
            student = create_backbone(profile.backbone, bundle.num_classes, profile.pretrained).to(acc.device)
            if profile.channels_last:
                student = student.to(memory_format=torch.channels_last)
            student.freeze_trunk(profile.frozen_stages)
            student_store = store.for_model(student, profile.normalize)
            data, ctx, plan = training_setup(
                bundle, cfg.regime, profile, student_store, method=cls, student=student.spec(profile.image_size),
                teacher=teacher.spec(profile.image_size) if teacher is not None else None,
                teacher_store=store.for_model(teacher, profile.normalize) if teacher is not None else None,
            )
            distiller = methods.create(cfg.method, ctx, **cfg.method_options)
            weights = {**cls.default_weights, **cfg.weights}
            head_init = initial_head(student, student_store, data, profile, cfg.seed)
            if head_init is not None:
                record["head_init"] = head_init
            tracking.start_run(acc, self.out, bundle.dataset_id, cfg.regime, cfg.method, cfg.seed,
                               {**cfg.as_dict(), "config_hash": record["config_hash"]})
            result = fit(
                student=student, distiller=distiller, teacher=teacher, data=data, profile=profile,
                epochs=plan.epochs, lr=profile.lr, weights=weights, seed=cfg.seed, accelerator=acc,
                progress=self.progress, description=f"{bundle.dataset_id}/{cfg.regime}/{cfg.method}/seed{cfg.seed}",
                val_every=plan.val_every, validate_at_start=head_init is not None,
            )
            eval_started = time.perf_counter()
            test = bundle.splits.test_student
            prob = predict(student, student_store, test, profile)
            y = bundle.table.labels[test]
            record["metrics"] = classification_metrics(y, prob)
            acc.log(tracking.final_scalars(record["metrics"]), step=result.steps)
            record["selection"] = {"criterion": "val_auc", "best_epoch": result.best_epoch,
                                   "best_val_auc": result.best_val_auc,
                                   **({"rule": result.selection} if result.selection.get("rule") != "best" else {})}
            record["history"] = result.history
            record["predictions"] = {
                "classes": bundle.classes, "y": y.tolist(), "prob": prob.tolist(),
                "lesion": [str(x) for x in bundle.table.lesion[test]],
                "source": [str(x) for x in bundle.table.source[test]],
                "modality": bundle.student_modality,
            }
            record["weights"] = {"student": student.weights,
                                 "teacher": getattr(teacher, "weights", None) if teacher is not None else None}
            record["cost"] = model_cost(student, bundle.num_classes, profile.image_size, profile.backbone)
            record["student_sha256"] = state_sha256(student)
            record["sampler"] = {"kind": cls.sampler, "underfilled_classes": {
                bundle.classes[c]: n for c, n in result.underfilled.items()}}
            record["timing"] = {
                "train_s": result.train_s, "eval_s": time.perf_counter() - eval_started,
                "teacher_s": teacher_s, "steps": result.steps, "epochs": plan.epochs, "val_s": result.val_s,
                "images_per_s": result.images / result.train_s if result.train_s > 0 else None,
            }
        except NonFiniteLossError as err:
            record["status"] = "failed"
            record["error"] = {"type": "NonFiniteLoss", "message": str(err), "epoch": err.epoch, "step": err.step,
                               "terms": err.terms, "traceback": traceback.format_exc()}
        except Exception as err:  # a broken method must not take the grid down
            record["status"] = "failed"
            record["error"] = {"type": type(err).__name__, "message": str(err), "step": None, "terms": None,
                               "traceback": traceback.format_exc()}
            print(f"[kdbench] run {cfg.dataset}/{cfg.regime}/{cfg.method}/seed{cfg.seed} failed: "
                  f"{type(err).__name__}: {err}", file=sys.stderr)
        finally:
            if self._accelerator is not None:
                tracking.finish_run(self._accelerator)
                self._accelerator.free_memory()
        record["timing"]["total_s"] = time.perf_counter() - started
        return record
