"""Experiment trackers (TensorBoard, Weights & Biases, MLflow, Aim) through Accelerate.

``--log-with tensorboard,mlflow`` hands the names to ``Accelerator(log_with=...,
project_dir=<out>/logs)``; each student run then opens its own tracker run
(:func:`start_run`), the training loop logs through ``accelerator.log`` (per step the
weighted loss terms, :func:`step_scalars`; per validation the validation metrics,
:func:`validation_scalars`) and :func:`finish_run` closes it. Logging reads values the
loop has already computed and draws no random number, so it never changes a run's
numbers; the tracker list is therefore not part of the run's config hash.

Layout: every run logs under ``<out>/logs/<dataset>/<regime>/<method>/seed<k>/``, the
same path as its run file. The tracker project is ``kdbench`` (the W&B project, the
MLflow experiment) and the run name is ``<dataset>/<regime>/<method>/seed<k>``.
Nothing needs a network: W&B runs in offline mode unless ``WANDB_MODE`` says otherwise,
MLflow writes to a local file store (``<out>/logs/mlruns``) unless
``MLFLOW_TRACKING_URI`` is set. Only the main process opens tracker runs; the others
log nothing.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

PROJECT = "kdbench"
def logs_dir(out: Path | str) -> Path:
    """Where trackers write: ``<out>/logs`` (``tensorboard --logdir <out>/logs``)."""
    return Path(out) / "logs"


def run_name(dataset: str, regime: str, method: str, seed: int) -> str:
    return f"{dataset}/{regime}/{method}/seed{seed}"


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config as one level of ``a/b`` keys with values every tracker stores
    (bool, int, float, str); ``None`` and lists become text."""
    out: dict[str, bool | int | float | str] = {}
    for key in sorted(config):
        value = config[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_hparams(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


def _init_kwargs(trackers: list[str], name: str, group: str, folder: Path) -> dict[str, dict[str, Any]]:
    kwargs: dict[str, dict[str, Any]] = {}
    if "wandb" in trackers:
        kwargs["wandb"] = {"name": name, "group": group, "dir": str(folder),
                           "mode": os.environ.get("WANDB_MODE", "offline")}
    if "mlflow" in trackers:
        kwargs["mlflow"] = {"run_name": name}
    return kwargs


def start_run(accelerator: Any, out: Path | str, dataset: str, regime: str, method: str, seed: int,
              hparams: dict[str, Any]) -> bool:
    """Open one tracker run for this student run (main process only); returns whether
    trackers are logging. ``hparams`` is the resolved run config (stored flattened)."""
    if not accelerator.log_with or not accelerator.is_main_process:
        return False
    root = logs_dir(out)
    folder = root / dataset / regime / method / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    names = [str(t) for t in accelerator.log_with]
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        import mlflow

        mlflow.set_tracking_uri((root / "mlruns").resolve().as_uri())
    # TensorBoard and Aim write under the accelerator's logging folder: this run's own
    accelerator.project_configuration.logging_dir = str(folder)
    name = run_name(dataset, regime, method, seed)
    accelerator.init_trackers(PROJECT, config=flat_hparams(hparams),
                              init_kwargs=_init_kwargs(names, name, f"{dataset}/{regime}/{method}", folder))
    if "aim" in names:
        accelerator.get_tracker("aim", unwrap=True).name = name
    return True


def finish_run(accelerator: Any) -> None:
    """Close this run's trackers. This is the tracker half of ``Accelerator.end_training``:
    that call would also tear down the process group the grid's next run needs, and it
    keeps the finished trackers in the list the next ``init_trackers`` appends to."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers.clear()


def step_scalars(values: dict[str, float], total: float, weights: dict[str, float]) -> dict[str, float]:
    """Per-step scalars: every loss term times its weight (``loss/<term>``), the weighted
    total (``loss/total``), and the adversary's own terms (``adversary/<term>``)."""
    out = {"loss/total": total}
    for k, v in values.items():
        if k.startswith("adv_"):
            out[f"adversary/{k[4:]}"] = v
        else:
            out[f"loss/{k}"] = v * weights.get(k, 0.0)
    return out


def validation_scalars(y: np.ndarray, prob: np.ndarray, epoch: int) -> dict[str, float]:
    """Per-validation scalars: the validation metrics (``val/auc``, ``val/acc``, ...) and
    the epoch."""
    from ..analysis.metrics import classification_metrics

    out: dict[str, float] = {"epoch": float(epoch)}
    if len(prob):
        for k, v in classification_metrics(y, prob).items():
            if isinstance(v, int | float) and v is not None and math.isfinite(v):
                out[f"val/{k}"] = float(v)
    return out


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The run's test metrics (``test/<metric>``), logged once at the end."""
    return {f"test/{k}": float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
