"""Training and evaluation of one network with one distiller, under Accelerate.

:func:`fit` is the single training loop of the suite: students train with their
method's distiller; teachers train with ``baseline`` on the teacher modality through
the same loop. Model selection keeps the epoch with the best validation AUC (earliest
on ties); the test set is never looked at during training. With the profile's
``bn_recalibration`` set, batch-norm statistics are recomputed on training images
before each validation (:func:`recalibrate_batchnorm`).
"""

from __future__ import annotations

import copy
import functools
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from datasets.sampling import BatchPlan, ClassMatchedSampler, GroupSampler
from methods.base import Batch, Distiller, Outputs

from ..analysis.metrics import auc_score
from ..models.backbones import Backbone
from ..settings.profiles import Profile
from . import tracking
from .inputs import ImageStore, TrunkStore, augment_draws

PREPARE_EPOCH = 1 << 20
"""Sampler stream of a method's pre-training stage (``Distiller.prepare``): seeded,
and distinct from every training epoch's stream."""


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; carries the step and every term's value."""

    def __init__(self, epoch: int, step: int, terms: dict[str, float]) -> None:
        self.epoch = epoch
        self.step = step
        self.terms = terms
        bad = [k for k, v in terms.items() if not math.isfinite(v)]
        super().__init__(
            f"loss term(s) {bad} became non-finite at epoch {epoch}, step {step} "
            f"(terms: {terms}). Lower the learning rate or the term's weight (--weight), "
            "or check the input data."
        )


@dataclass
class TrainData:
    """Pools of one training job (positions refer to the :class:`ImageStore`'s table)."""

    store: ImageStore | TrunkStore
    student_pool: np.ndarray
    teacher_pool: np.ndarray
    twin_position: np.ndarray
    student_labels: np.ndarray
    teacher_labels: np.ndarray
    val_index: np.ndarray
    val_labels: np.ndarray
    num_classes: int
    class_names: list[str]
    same_view: bool = False
    """``same`` regime: the teacher sees exactly the student's (augmented) input."""
    teacher_store: ImageStore | TrunkStore | None = None
    """Where the teacher side's inputs come from when it differs from ``store`` (a teacher
    with its own frozen trunk); ``None``: ``store``."""

    @property
    def teacher_inputs(self) -> ImageStore | TrunkStore:
        return self.store if self.teacher_store is None else self.teacher_store


@dataclass
class FitResult:
    best_state: dict[str, Tensor]
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    images: int = 0
    train_s: float = 0.0
    val_s: float = 0.0
    underfilled: dict[int, int] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    """How the kept checkpoint was chosen (rule, and for ``one_se`` the best one and its SE)."""


class _StepModule(nn.Module):
    """Student + distiller as one module, so Accelerate/DDP wraps every trained part."""

    def __init__(self, student: Backbone, distiller: Distiller) -> None:
        super().__init__()
        self.student = student
        self.distiller = distiller

    def forward(self, batch: Batch, teacher_out: Outputs | None) -> tuple[Outputs, dict[str, Tensor]]:
        s = self.student(self.distiller.student_input(batch))
        return s, self.distiller.losses(s, teacher_out, batch)


def sync_buffers(module: nn.Module, accelerator: Any) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics), as DDP does at each
    forward, so validation, selection and the saved weights agree across ranks."""
    if accelerator.num_processes > 1:
        import torch.distributed as dist

        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


def seed_everything(seed: int) -> dict[str, int]:
    """Seed Python, NumPy and torch; returns the seeds a run file records."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    return {"python": seed, "numpy": seed, "torch": seed, "sampler": seed, "augment": seed}


def make_sampler(
    distiller: Distiller | type[Distiller], data: TrainData, profile: Profile, seed: int
) -> ClassMatchedSampler | GroupSampler:
    """The batch sampler a method asks for (``sampler`` class attribute)."""
    if distiller.sampler == "group":
        group = profile.group_size or max(1, profile.batch_size // data.num_classes)
        return GroupSampler(
            data.student_labels, data.teacher_labels, data.twin_position, group, data.num_classes, seed,
            data.class_names,
        )
    if distiller.sampler != "class_matched":
        raise ValueError(f"method {distiller.name!r} asks for unknown sampler {distiller.sampler!r}")
    return ClassMatchedSampler(
        data.student_labels, data.teacher_labels, data.twin_position, profile.batch_size, seed, data.class_names
    )


def build_batch(
    plan: BatchPlan,
    data: TrainData,
    profile: Profile,
    generator: torch.Generator,
    *,
    epoch: int,
    num_epochs: int,
    step: int,
    augment: bool,
    rank_rows: slice = slice(None),
) -> Batch:
    s_rows = plan.student[rank_rows]
    t_rows = plan.teacher[rank_rows]
    device = data.store.device
    s_index, t_index = data.student_pool[s_rows], data.teacher_pool[t_rows]
    # one set of draws per side, in the order the image store has always drawn them
    s_draws = augment_draws(len(s_index), generator, device) if augment else None
    student_x = data.store.batch(s_index, profile.normalize, augment, draws=s_draws)
    t_store = data.teacher_inputs
    if data.same_view:
        t_index, t_draws = s_index, s_draws
        teacher_x = student_x if t_store is data.store else t_store.batch(t_index, profile.normalize, augment,
                                                                          draws=t_draws)
    else:
        t_draws = augment_draws(len(t_index), generator, device) if augment else None
        teacher_x = t_store.batch(t_index, profile.normalize, augment, draws=t_draws)
    pixels = {}  # made only if a method reads them (Batch.student_pixels)
    if isinstance(data.store, TrunkStore):
        pixels["student_image"] = functools.partial(data.store.pixels, s_index, s_draws)
    if isinstance(t_store, TrunkStore):
        pixels["teacher_image"] = functools.partial(t_store.pixels, t_index, t_draws)
    return Batch(
        student_x=student_x,
        teacher_x=teacher_x,
        y=torch.as_tensor(data.student_labels[s_rows], dtype=torch.long, device=device),
        twin=torch.as_tensor(plan.twin[rank_rows], dtype=torch.bool, device=device),
        index=torch.as_tensor(s_rows, dtype=torch.long, device=device),
        teacher_index=torch.as_tensor(t_rows, dtype=torch.long, device=device),
        epoch=epoch,
        num_epochs=num_epochs,
        step=step,
        **pixels,
    )


def weighted_total(terms: dict[str, Tensor], weights: dict[str, float], method: str) -> Tensor:
    total: Tensor | None = None
    for name, value in terms.items():
        if name not in weights:
            raise KeyError(
                f"method {method!r} returned loss term {name!r} that has no weight; add it to the "
                "method's default_weights"
            )
        w = weights[name]
        if w == 0.0:
            continue
        total = value * w if total is None else total + value * w
    if total is None:
        raise RuntimeError(f"method {method!r} returned no loss term with a non-zero weight")
    return total


def loss_values(terms: dict[str, Tensor], total: Tensor) -> tuple[dict[str, float], float]:
    """Every term's value and the weighted total as Python floats, with one
    device-to-host copy per step instead of one per term."""
    dtype = torch.float32 if total.device.type == "mps" else torch.float64  # exact for every float dtype
    *values, total_value = torch.stack([t.detach().to(dtype).reshape(()) for t in [*terms.values(), total]]).tolist()
    return dict(zip(terms, values, strict=True)), total_value


@torch.no_grad()
def predict(
    model: Backbone, store: ImageStore | TrunkStore, table_index: np.ndarray, profile: Profile, batch_size: int = 256
) -> np.ndarray:
    """Softmax probabilities on un-augmented images, in ``table_index`` order."""
    was_training = model.training
    model.eval()
    probs = []
    for start in range(0, len(table_index), batch_size):
        x = store.batch(table_index[start : start + batch_size], profile.normalize, augment=False)
        probs.append(torch.softmax(model(x).logits.float(), dim=1).cpu())
    model.train(was_training)
    if not probs:
        return np.zeros((0, 0))
    return torch.cat(probs).numpy()


SELECTION_RULES = ("best", "one_se")
"""Checkpoint selection on validation AUC: ``best`` keeps the highest (the earliest on
ties); ``one_se`` keeps the earliest within one standard error of the highest."""


def one_standard_error_choice(
    candidates: list[tuple[int, float, np.ndarray, dict[str, Tensor]]], val_labels: np.ndarray
) -> tuple[int, float, dict[str, Tensor], dict[str, Any]]:
    """The one-standard-error rule (Breiman et al., *Classification and Regression Trees*,
    1984; Hastie, Tibshirani & Friedman, *ESL* Sec. 7.10): among the validated checkpoints
    ``(epoch, val AUC, val probabilities, state)`` in training order, keep the earliest
    whose validation AUC is within one DeLong standard error of the highest. On a
    validation split of a dozen lesions, picking the highest of several noisy AUCs mostly
    picks noise; the rule keeps an earlier network unless a later one is better by more
    than the split can resolve. Returns (epoch, val AUC, state, what the run file records)."""
    from ..analysis.clustered_auc import clustered_auc_ci

    best = max(candidates, key=lambda c: c[1])  # the earliest on ties
    try:
        se = clustered_auc_ci(val_labels, best[2], None).se if math.isfinite(best[1]) else 0.0
    except ValueError:
        se = 0.0
    chosen = next(c for c in candidates if c[1] >= best[1] - se)
    info = {"rule": "one_se", "best_epoch": best[0], "best_val_auc": best[1], "se": se}
    return chosen[0], chosen[1], chosen[3], info


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in inference mode: it normalises with its
    running statistics and does not update them; its affine weights still train."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, store: ImageStore | TrunkStore, table_index: np.ndarray, profile: Profile, batch_size: int = 128
) -> None:
    """Replace every batch-norm layer's running statistics by the average batch
    statistics of ``model`` on ``table_index`` (un-augmented training images).

    PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021, Sec. 3): with
    few optimisation steps the exponential moving averages still carry their
    initialisation and lag the weights, so an evaluated network's logits are shifted
    and a model with a useful ranking (AUC) predicts one class (Acc/F1 at chance).
    The weights are untouched; training in ``train`` mode does not read the running
    statistics, so the optimisation path is the same with or without it.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
             and (m.weight is None or m.weight.requires_grad)]  # a frozen trunk keeps its statistics
    if not norms or len(table_index) == 0:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    model.train()
    for start in range(0, len(table_index), batch_size):
        chunk = table_index[start : start + batch_size]
        if len(chunk) < 2:
            break
        model(store.batch(chunk, profile.normalize, augment=False))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def recalibration_index(data: TrainData, profile: Profile, seed: int) -> np.ndarray:
    """The fixed training images used by :func:`recalibrate_batchnorm`: up to
    ``profile.bn_recalibration`` of the student pool, one seeded draw per run."""
    n = min(profile.bn_recalibration, len(data.student_pool))
    if n <= 0:
        return data.student_pool[:0]
    order = np.random.default_rng(seed + 7919).permutation(len(data.student_pool))[:n]
    return data.student_pool[np.sort(order)]


class TeacherOutputCache:
    """Teacher logits and embeddings on the un-augmented teacher pool, computed once.

    Used when the profile enables ``teacher_cache`` and the method declares
    ``teacher_augmented = False`` (it reads only logits/embedding). Cached outputs carry
    no feature maps.
    """

    def __init__(self, teacher: Backbone, data: TrainData, profile: Profile, batch_size: int = 256) -> None:
        logits, emb = [], []
        teacher.eval()
        with torch.no_grad():
            for start in range(0, len(data.teacher_pool), batch_size):
                x = data.teacher_inputs.batch(data.teacher_pool[start : start + batch_size], profile.normalize,
                                              augment=False)
                out = teacher(x)
                logits.append(out.logits)
                emb.append(out.embedding)
        self.logits = torch.cat(logits)
        self.embedding = torch.cat(emb)
        self.classifier = teacher.classifier

    def outputs(self, teacher_index: Tensor) -> Outputs:
        return Outputs(
            logits=self.logits.index_select(0, teacher_index),
            embedding=self.embedding.index_select(0, teacher_index),
            features=[],
            classifier=self.classifier,
        )


def _teacher_batches(
    sampler: ClassMatchedSampler | GroupSampler, data: TrainData, profile: Profile, generator: torch.Generator,
    num_epochs: int,
) -> Callable[[], Iterator[Batch]]:
    def gen() -> Iterator[Batch]:
        for step, plan in enumerate(sampler.epoch(PREPARE_EPOCH)):
            yield build_batch(plan, data, profile, generator, epoch=0, num_epochs=num_epochs, step=step,
                              augment=profile.augment)
    return gen


def fit(
    *,
    student: Backbone,
    distiller: Distiller,
    teacher: Backbone | None,
    data: TrainData,
    profile: Profile,
    epochs: int,
    lr: float,
    weights: dict[str, float],
    seed: int,
    accelerator: Any,
    progress: bool = False,
    description: str = "",
    val_every: int | None = None,
    validate_at_start: bool = False,
) -> FitResult:
    """Train ``student`` with ``distiller``; keep the best-validation-AUC weights.
    Validates every ``val_every`` epochs (default: the profile's) and after the last;
    with ``validate_at_start`` also before the first step (history epoch ``-1``), so the
    starting network is a candidate too (a head fitted by linear probing)."""
    val_every = val_every or profile.val_every
    device = accelerator.device
    generator = torch.Generator().manual_seed(seed)
    sampler = make_sampler(distiller, data, profile, seed)
    distiller.bind(student, teacher)
    distiller.to(device)
    if teacher is not None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    distiller.prepare(_teacher_batches(sampler, data, profile, generator, epochs)())

    params = list(student.parameters()) + list(distiller.student_parameters())
    if profile.optimizer == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=profile.weight_decay)
    elif profile.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=lr, momentum=profile.momentum, weight_decay=profile.weight_decay,
                                    nesterov=True)
    else:
        raise ValueError(f"unknown optimizer {profile.optimizer!r}; use adam or sgd")
    total_steps = max(1, epochs * len(sampler))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    adversary = list(distiller.adversary_parameters())
    adv_optimizer = distiller.adversary_optimizer(adversary, lr) if adversary else None

    step_module = _StepModule(student, distiller)
    step_module, optimizer = accelerator.prepare(step_module, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    rank_rows = slice(rank, None, world) if world > 1 else slice(None)

    result = FitResult(best_state={}, best_epoch=-1, best_val_auc=-math.inf, underfilled=dict(sampler.underfilled))
    started = time.perf_counter()  # train_s includes computing the teacher-output cache
    cache = None
    if teacher is not None and profile.teacher_cache and not distiller.teacher_augmented:
        cache = TeacherOutputCache(teacher, data, profile)
    recal_index = recalibration_index(data, profile, seed)
    if profile.selection not in SELECTION_RULES:
        raise ValueError(f"unknown selection rule {profile.selection!r}; use one of {SELECTION_RULES}")
    candidates: list[tuple[int, float, np.ndarray, dict[str, Tensor]]] = []  # every validation, for one_se

    def validate(epoch: int, entry: dict[str, Any]) -> None:
        val_started = time.perf_counter()
        if len(recal_index):
            recalibrate_batchnorm(student, data.store, recal_index, profile)
        sync_buffers(student, accelerator)
        prob = predict(student, data.store, data.val_index, profile)
        val_auc = auc_score(data.val_labels, prob) if len(prob) else float("nan")
        entry["val_auc"] = val_auc
        if accelerator.trackers:
            accelerator.log(tracking.validation_scalars(data.val_labels, prob, epoch), step=step)
        score = val_auc if math.isfinite(val_auc) else -math.inf
        if profile.selection == "one_se":
            state = copy.deepcopy(accelerator.unwrap_model(step_module).student.state_dict())
            candidates.append((epoch, score, prob, state))
        elif score > result.best_val_auc or not result.best_state:
            result.best_val_auc = score
            result.best_epoch = epoch
            result.best_state = copy.deepcopy(accelerator.unwrap_model(step_module).student.state_dict())
        bar.set_postfix(val_auc=f"{val_auc:.3f}")
        result.val_s += time.perf_counter() - val_started

    step = 0
    bar = tqdm(range(epochs), desc=description, leave=False, disable=not progress, dynamic_ncols=True)
    if validate_at_start:
        start_entry: dict[str, Any] = {"epoch": -1, "loss": {}}
        validate(-1, start_entry)
        result.history.append(start_entry)
    for epoch in bar:
        student.train()
        if profile.frozen_bn:
            freeze_batchnorm(student)
        distiller.train()
        sums: dict[str, float] = {}
        n_batches = 0
        for plan in sampler.epoch(epoch):
            batch = build_batch(plan, data, profile, generator, epoch=epoch, num_epochs=epochs, step=step,
                                augment=profile.augment, rank_rows=rank_rows)
            t_out: Outputs | None = None
            if teacher is not None and distiller.needs_teacher:
                if cache is not None:
                    t_out = cache.outputs(batch.teacher_index)
                else:
                    with torch.no_grad(), accelerator.autocast():
                        t_out = teacher(batch.teacher_x)
            with accelerator.autocast():
                s_out, terms = step_module(batch, t_out)
                total = weighted_total(terms, weights, distiller.name)
            values, total_value = loss_values(terms, total)
            if not all(math.isfinite(v) for v in values.values()) or not math.isfinite(total_value):
                raise NonFiniteLossError(epoch, step, values)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(total)
            optimizer.step()
            scheduler.step()
            distiller.after_step(batch)
            if adv_optimizer is not None:
                adv_terms = distiller.adversary_losses(s_out.detach(), t_out, batch)
                if adv_terms:
                    adv_total = sum(adv_terms.values())
                    adv_optimizer.zero_grad(set_to_none=True)
                    accelerator.backward(adv_total)
                    adv_optimizer.step()
                    for k, v in adv_terms.items():
                        values[f"adv_{k}"] = float(v.detach())
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            if accelerator.trackers:
                accelerator.log(tracking.step_scalars(values, total_value, weights), step=step)
            n_batches += 1
            step += 1
            result.images += batch.size
        entry: dict[str, Any] = {"epoch": epoch, "loss": {k: v / max(1, n_batches) for k, v in sums.items()}}
        if (epoch + 1) % val_every == 0 or epoch == epochs - 1:
            validate(epoch, entry)
        result.history.append(entry)
    optimizer.zero_grad(set_to_none=True)
    if candidates:
        epoch_kept, score_kept, state_kept, result.selection = one_standard_error_choice(candidates, data.val_labels)
        result.best_epoch, result.best_val_auc, result.best_state = epoch_kept, score_kept, state_kept
    else:
        result.selection = {"rule": "best"}
    result.steps = step
    result.train_s = time.perf_counter() - started - result.val_s
    student.load_state_dict(result.best_state)
    student.eval()
    return result
