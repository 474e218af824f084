"""Every registered method on one batch through the harness's step: its distillation terms
are finite and non-zero and move the student's gradient away from ``baseline``'s on the same
batch, term by term. The methods without distillation terms give exactly ``baseline``'s
gradient. (Value tests of each loss live in the method's own test file; this one catches a
term that is silently constant, detached from the student, or switched off by a schedule.)"""

from __future__ import annotations

import pytest
import torch

import methods
from benchmark.models.backbones import create_backbone
from benchmark.training.train import _StepModule, weighted_total
from methods.base import Batch, Distiller, DistillerContext

IMAGE_SIZE = 24
NUM_CLASSES = 3
EPOCHS = 4
# Ablations that distil nothing by design: cross-entropy only, on their own sampler's batches.
NO_DISTILLATION = {"baseline", "pagkd-none"}
Y = torch.tensor([0, 0, 1, 1, 2, 2])  # class-balanced: fits the group sampler's batches too


def regime_for(cls: type[Distiller]) -> str:
    """Twins when the method accepts them (every paired term runs); the student's own image otherwise."""
    return "paired" if "paired" in cls.regimes else "same"


def setup(name: str):
    cls = methods.get(name)
    regime = regime_for(cls)
    torch.manual_seed(0)
    student = create_backbone("kdbench_cnn4", NUM_CLASSES)
    torch.manual_seed(1)
    teacher = create_backbone("kdbench_cnn4", NUM_CLASSES).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(2)
    student_x = torch.rand(len(Y), 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    teacher_x = student_x if regime == "same" else torch.rand(len(Y), 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    batch = Batch(student_x=student_x, teacher_x=teacher_x, y=Y, twin=torch.full((len(Y),), regime != "same"),
                  index=torch.arange(len(Y)), teacher_index=torch.arange(len(Y)), epoch=EPOCHS - 1,
                  num_epochs=EPOCHS, step=3)
    ctx = DistillerContext(
        student=student.spec(IMAGE_SIZE), teacher=teacher.spec(IMAGE_SIZE), num_classes=NUM_CLASSES, regime=regime,
        num_student_train=len(Y), num_teacher_train=len(Y), student_labels=Y, teacher_labels=Y, num_epochs=EPOCHS,
        steps_per_epoch=1, batch_size=len(Y),
    )
    return cls, student, teacher, batch, ctx


def step_terms(name: str, student, teacher, batch: Batch, ctx: DistillerContext):
    distiller = methods.create(name, ctx)
    distiller.bind(student, teacher if distiller.needs_teacher else None)
    distiller.prepare([batch])
    student.train()
    distiller.train()
    t_out = None
    if distiller.needs_teacher:
        with torch.no_grad():
            t_out = teacher(batch.teacher_x)
    _, terms = _StepModule(student, distiller)(batch, t_out)
    return distiller, terms


def student_grad(loss: torch.Tensor, student: torch.nn.Module) -> torch.Tensor:
    params = [p for p in student.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params,
                                                                                               strict=True)])


@pytest.mark.parametrize("name", methods.available())
def test_distillation_terms_change_the_students_gradient(name):
    cls, student, teacher, batch, ctx = setup(name)
    _, base_terms = step_terms("baseline", student, teacher, batch, ctx)
    g_base = student_grad(weighted_total(base_terms, {"ce": 1.0}, "baseline"), student)
    _, terms = step_terms(name, student, teacher, batch, ctx)
    weights = dict(cls.default_weights)
    g_method = student_grad(weighted_total(terms, weights, name), student)
    distil = {k: v for k, v in terms.items() if k != "ce" and weights[k] != 0.0}
    if name in NO_DISTILLATION:
        assert not distil, f"{name} is listed as distilling nothing but returned {sorted(distil)}"
        torch.testing.assert_close(g_method, g_base)
        return
    assert distil, f"{name} returned no distillation term on a batch past its warm-up: {sorted(terms)}"
    scale = float(g_base.norm())
    for key, value in distil.items():
        assert value.dim() == 0 and torch.isfinite(value), (name, key, value)
        assert abs(value.item()) > 1e-6, f"{name}: term {key!r} is zero ({value.item()})"
        g_term = student_grad(value * weights[key], student)
        assert torch.isfinite(g_term).all(), (name, key)
        assert float(g_term.norm()) > 1e-6 * scale, f"{name}: term {key!r} does not reach the student"
    assert float((g_method - g_base).norm()) > 1e-5 * scale, f"{name}: same student gradient as baseline"
