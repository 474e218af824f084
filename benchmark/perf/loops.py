"""The two timed loops: one :func:`benchmark.training.train.fit` of a method (the harness) and a
plain PyTorch loop doing the same work (the yardstick)."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import methods
from methods import Batch
from methods.kd import kd_loss

from ..models.backbones import create_backbone
from ..settings.profiles import Profile
from ..training.train import fit
from .data import PerfData
from .run_setup import accelerator, distiller_context
from .timing import StepClock, Timing


def _needs_teacher(method: str) -> bool:
    return bool(methods.get(method).needs_teacher)


def _in_memory_format(model: Any, profile: Profile) -> Any:
    """The model in the profile's memory format (channels-last when it is on), as the runner builds it."""
    return model.to(memory_format=torch.channels_last) if profile.channels_last else model


def harness_run(pd: PerfData, method: str, epochs: int, seed: int = 0, profile: Profile | None = None) -> Timing:
    """One :func:`fit` of ``method`` (student from scratch, random frozen teacher); its
    training-step time ``train_s`` (validation excluded) and images trained on."""
    profile = profile or pd.profile
    acc = accelerator(profile)
    torch.manual_seed(seed)
    n_classes = pd.bundle.num_classes
    student = _in_memory_format(create_backbone(profile.backbone, n_classes).to(acc.device), profile)
    teacher = None
    if _needs_teacher(method):
        teacher = _in_memory_format(create_backbone(profile.teacher_backbone, n_classes).to(acc.device), profile)
        teacher.eval()
    d = pd.data
    ctx = distiller_context(pd.bundle, pd.regime, profile, d.store, method, student, teacher, epochs)
    distiller = methods.create(method, ctx)
    clock = StepClock(profile.batch_size)
    after_step = distiller.after_step

    def timed_after_step(batch: Batch) -> None:
        after_step(batch)
        if batch.student_x.device.type == "cuda":
            torch.cuda.synchronize()
        clock.tick(batch.epoch, batch.size)

    distiller.after_step = timed_after_step  # type: ignore[method-assign]
    result = fit(student=student, distiller=distiller, teacher=teacher, data=d, profile=profile, epochs=epochs,
                 lr=profile.lr, weights=dict(distiller.default_weights), seed=seed, accelerator=acc)
    return Timing(images=result.images, seconds=result.train_s, steps=result.steps, step_s=clock.step_s)


def bare_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """The harness's augmentation written out plainly: per-row flips, a 90-degree turn
    (transpose) and a brightness gain, then clamping to [0, 1]."""
    draws = torch.rand(x.shape[0], 4, generator=generator).to(x.device)
    x = torch.where((draws[:, 0] < 0.5)[:, None, None, None], x.flip(-1), x)
    x = torch.where((draws[:, 1] < 0.5)[:, None, None, None], x.flip(-2), x)
    x = torch.where((draws[:, 2] < 0.5)[:, None, None, None], x.transpose(-1, -2), x)
    return (x * (1.0 + 0.2 * (draws[:, 3] - 0.5))[:, None, None, None]).clamp_(0.0, 1.0)


def bare_run(pd: PerfData, method: str, epochs: int, seed: int = 0, augment: bool | None = None) -> Timing:
    """A plain PyTorch loop doing the work of :func:`harness_run`: shuffled student rows
    in batches (a last single row dropped), uint8 rows indexed from the same store and
    scaled to [0, 1], the same augmentation (or none), student forward, cross-entropy
    (``kd``: 0.1 CE + 0.9 T^2-KL at T = 4 against the frozen teacher run under
    ``no_grad`` on randomly drawn teacher-pool rows), backward, Adam step; model and
    inputs in the profile's memory format."""
    profile = pd.profile
    augment = profile.augment if augment is None else augment
    if method not in ("baseline", "kd"):
        raise ValueError(f"the bare loop implements baseline and kd, not {method!r}")
    device = pd.store.device
    torch.manual_seed(seed)
    n_classes = pd.bundle.num_classes
    student = _in_memory_format(create_backbone(profile.backbone, n_classes).model.to(device), profile).train()
    teacher = None
    if method == "kd":
        teacher = _in_memory_format(create_backbone(profile.teacher_backbone, n_classes).model.to(device),
                                    profile).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.Adam(student.parameters(), lr=profile.lr, weight_decay=profile.weight_decay)
    images = pd.store.images
    student_rows = torch.as_tensor(pd.data.student_pool, dtype=torch.long)
    teacher_rows = torch.as_tensor(pd.data.teacher_pool, dtype=torch.long)
    labels = torch.as_tensor(pd.bundle.table.labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    memory_format = torch.channels_last if profile.channels_last else torch.contiguous_format
    n_images = steps = 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = StepClock(profile.batch_size)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = student_rows[torch.randperm(len(student_rows), generator=generator)]
        for start in range(0, len(order), profile.batch_size):
            rows = order[start : start + profile.batch_size]
            if len(rows) < 2:
                continue
            x = images.index_select(0, rows.to(device)).float().div_(255.0)
            if augment:
                x = bare_augment(x, generator)
            x = x.contiguous(memory_format=memory_format)
            y = labels[rows].to(device)
            logits = student(x)
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                t_rows = teacher_rows[torch.randint(len(teacher_rows), (len(rows),), generator=generator)]
                xt = images.index_select(0, t_rows.to(device)).float().div_(255.0)
                if augment:
                    xt = bare_augment(xt, generator)
                xt = xt.contiguous(memory_format=memory_format)
                with torch.no_grad():
                    t_logits = teacher(xt)
                loss = 0.1 * loss + 0.9 * kd_loss(logits, t_logits, 4.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n_images += len(rows)
            steps += 1
            if device.type == "cuda":
                sync()
            clock.tick(epoch, len(rows))
    sync()
    return Timing(images=n_images, seconds=time.perf_counter() - started, steps=steps, step_s=clock.step_s)
