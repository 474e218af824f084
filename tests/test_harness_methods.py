"""The harness's side of the method contract, through its real run path (Session.run -> fit):
the teacher stays frozen whatever state it is handed in, a method's extra views go through
the student's one forward pass of the step, and an adversary gets the method's optimiser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import methods
from benchmark.models.backbones import create_backbone
from benchmark.settings.config import RunConfig
from benchmark.settings.profiles import get_profile
from benchmark.training.runner import Session
from benchmark.training.teacher import TeacherResult
from datasets.base import DatasetBundle

TEACHER_METHODS = (
    "kd", "fitnets", "rkd", "crd", "pkt", "crckd-nbi", "ssd-kd", "add", "cpc-trans", "polypsalign", "samd",
    "pagkd", "pagkd-released",
)  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return Session(tmp_path_factory.mktemp("harness-methods"))


def _cfg(method: str, regime: str = "all", **kw: Any) -> RunConfig:
    profile = get_profile("smoke").replace(epochs=1, bn_recalibration=0)
    return RunConfig(dataset="synth", regime=regime, method=method, seed=0, profile=profile, **kw)


def _hand_teacher(session: Session, monkeypatch: pytest.MonkeyPatch, teacher: nn.Module) -> None:
    """Make the session hand ``teacher`` to the run instead of training one."""

    def fake(bundle: DatasetBundle, modality: str, profile: Any, seed: int) -> TeacherResult:
        return TeacherResult(model=teacher, key="test-teacher", modality=modality, metrics={}, val_auc=0.5,
                             train_s=0.0, cached=True, record={})

    monkeypatch.setattr(session, "teacher", fake)


def _run(session: Session, cfg: RunConfig) -> dict[str, Any]:
    record = session.run(cfg, session.dataset(cfg))
    assert record["status"] == "ok", record["error"]
    return record


@pytest.mark.parametrize("method", TEACHER_METHODS)
def test_a_trainable_teacher_in_train_mode_leaves_the_student_step_unchanged(
    method: str, session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness is handed a teacher whose parameters require gradients, in train mode; after
    a run of training steps its weights and batch-norm statistics are unchanged, it received no
    gradient, and every teacher forward ran without autograd and in eval mode."""
    cfg = _cfg(method)
    bundle = session.dataset(cfg)
    torch.manual_seed(1)
    teacher = create_backbone(cfg.profile.teacher_backbone, bundle.num_classes)
    teacher.train().requires_grad_(True)
    assert any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in teacher.modules())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    calls: list[tuple[bool, bool]] = []
    teacher.register_forward_pre_hook(lambda m, _: calls.append((torch.is_grad_enabled(), m.training)))
    _hand_teacher(session, monkeypatch, teacher)
    record = _run(session, cfg)
    assert record["timing"]["steps"] > 0 and calls, "the run never used the teacher"
    after = teacher.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert not changed, f"{method}: teacher tensors changed during student training: {changed}"
    assert all(p.grad is None for p in teacher.parameters()), f"{method}: gradient reached the teacher"
    assert not any(grad for grad, _ in calls), f"{method}: a teacher forward ran with autograd on"
    assert not any(training for _, training in calls), f"{method}: a teacher forward ran in train mode"


def test_ssd_kd_student_runs_one_forward_per_step_on_the_four_rotations(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSD-KD's rotated views are the harness's student pass: one forward of 4 B rows per
    step, so batch-norm statistics are updated once per step (Wang et al.'s single pass)."""
    cfg = _cfg("ssd-kd", regime="unpaired", method_options={"ss_epochs": 1})
    bundle = session.dataset(cfg)
    torch.manual_seed(1)
    _hand_teacher(session, monkeypatch, create_backbone(cfg.profile.teacher_backbone, bundle.num_classes))
    rows: list[int] = []
    original = create_backbone

    def spy_backbone(*args: Any, **kwargs: Any) -> nn.Module:
        net = original(*args, **kwargs)
        net.register_forward_pre_hook(lambda m, inp: rows.append(inp[0].shape[0]) if m.training else None)
        return net

    monkeypatch.setattr("benchmark.training.runner.create_backbone", spy_backbone)
    record = _run(session, cfg)
    steps = record["timing"]["steps"]
    assert len(rows) == steps, f"{len(rows)} student forward passes in training mode for {steps} steps"
    assert all(n % 4 == 0 for n in rows), f"student passes of {rows} rows: not the four rotations of a batch"


def test_polypsalign_discriminator_is_stepped_with_the_papers_optimiser(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PolypsAlign's code trains its discriminator with Adam(lr 1e-4 like the student, weight
    decay 1e-8, default betas); the harness must step the optimiser the method asks for."""
    cfg = _cfg("polypsalign")
    bundle = session.dataset(cfg)
    torch.manual_seed(1)
    _hand_teacher(session, monkeypatch, create_backbone(cfg.profile.teacher_backbone, bundle.num_classes))
    made: list[torch.optim.Optimizer] = []
    cls = methods.get("polypsalign")
    original = cls.adversary_optimizer

    def spy(self: Any, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        made.append(original(self, params, lr))
        return made[-1]

    monkeypatch.setattr(cls, "adversary_optimizer", spy)
    record = _run(session, cfg)
    assert len(made) == 1, "the harness did not take the method's adversary optimiser"
    group = made[0].param_groups[0]
    assert group["lr"] == cfg.profile.lr
    assert group["betas"] == (0.9, 0.999) and group["weight_decay"] == 1e-8
    steps = {int(s["step"]) for s in made[0].state.values()}
    assert steps == {record["timing"]["steps"]}, "the method's optimiser was not stepped once per step"


def test_pagkd_released_listing_says_its_prototype_terms_do_not_distil(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Its prototype and set-classifier terms weigh 0.001 against CE 1 (as released); the
    listing and the report's method list must say so, with the weight the method uses."""
    from benchmark.orchestration.cli import main

    cls = methods.get("pagkd-released")
    weak = sorted(k for k, w in cls.default_weights.items() if w <= 1e-3 * cls.default_weights["ce"])
    assert weak == ["pro", "set_cls"]
    info = cls.describe()
    for text in (info["summary"], info["deviations"]):
        assert "0.001" in text and all(k in text for k in weak)
    assert "only the dense (den) and ADD terms distil" in info["summary"]
    main(["list"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("pagkd-released "))
    assert "set-classifier (set_cls) terms weigh 0.001" in line and "only the dense (den) and ADD terms distil" in line
