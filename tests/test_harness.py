"""The harness end to end on the smoke profile: run files, resume, frozen teacher,
determinism, failed and unsupported runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark
from benchmark.settings.config import RunConfig
from benchmark.settings.profiles import get_profile
from benchmark.training.runfile import iter_runs, read_run, write_json_atomic
from benchmark.training.runner import Session
from benchmark.training.train import TrainData, fit
from datasets.splits import check_no_lesion_leak
from methods import DistillerContext
from methods.kd import HintonKD


@pytest.fixture(scope="module")
def smoke_session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    return Session(tmp_path_factory.mktemp("session"))


def _cfg(method: str, regime: str = "unpaired", seed: int = 0) -> RunConfig:
    return RunConfig(dataset="synth", regime=regime, method=method, seed=seed, profile=get_profile("smoke"))


def test_synthetic_bundle_has_no_lesion_in_two_splits(smoke_session: Session) -> None:
    bundle = smoke_session.dataset(_cfg("baseline"))
    check_no_lesion_leak(bundle.table, bundle.splits)
    assert bundle.synthetic and set(bundle.regimes()) == {"paired", "unpaired", "all", "same"}


def test_teacher_is_frozen_during_student_training(smoke_session: Session) -> None:
    cfg = _cfg("kd")
    bundle = smoke_session.dataset(cfg)
    profile = cfg.profile
    teacher = smoke_session.teacher(bundle, "nbi", profile, 0).model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_pool, t_pool = bundle.regime_pools("unpaired")
    labels = bundle.table.labels
    data = TrainData(
        store=smoke_session.store(bundle, profile), student_pool=s_pool, teacher_pool=t_pool,
        twin_position=np.full(len(s_pool), -1), student_labels=labels[s_pool], teacher_labels=labels[t_pool],
        val_index=bundle.splits.val_student, val_labels=labels[bundle.splits.val_student],
        num_classes=bundle.num_classes, class_names=bundle.classes,
    )
    from benchmark.models.backbones import create_backbone

    student = create_backbone(profile.backbone, bundle.num_classes)
    ctx = DistillerContext(student.spec(profile.image_size), teacher.spec(profile.image_size), bundle.num_classes,
                           "unpaired", len(s_pool), len(t_pool), torch.as_tensor(labels[s_pool]),
                           torch.as_tensor(labels[t_pool]), 1, 0, profile.batch_size)
    student_before = [p.detach().clone() for p in student.parameters()]
    fit(student=student, distiller=HintonKD(ctx), teacher=teacher, data=data, profile=profile, epochs=1,
        lr=1e-2, weights=dict(HintonKD.default_weights), seed=0, accelerator=smoke_session.accelerator(profile))
    after = teacher.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"teacher tensor {k} changed (BN statistics or weights)"
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters(), strict=True))


def test_same_run_twice_gives_identical_metrics(smoke_session: Session) -> None:
    cfg = _cfg("kd")
    bundle = smoke_session.dataset(cfg)
    a = smoke_session.run(cfg, bundle)
    b = smoke_session.run(cfg, bundle)
    assert a["status"] == b["status"] == "ok"
    assert a["metrics"] == b["metrics"]
    assert a["predictions"]["prob"] == b["predictions"]["prob"]
    assert a["config_hash"] == b["config_hash"]
    assert a["seeds"]["torch"] == 0


def test_unsupported_regime_is_recorded_not_run(smoke_session: Session, tmp_path: Path) -> None:
    from methods import Distiller, register

    if "only-unpaired-test" not in __import__("methods").available():

        @register("only-unpaired-test")
        class OnlyUnpaired(Distiller):
            summary = "test method restricted to unpaired data"
            regimes = frozenset({"unpaired"})
            main_regimes = frozenset({"unpaired"})

    rec = smoke_session.run(_cfg("only-unpaired-test", regime="paired"), smoke_session.dataset(_cfg("baseline")))
    assert rec["status"] == "unsupported"
    assert "does not support regime 'paired'" in rec["error"]["message"]


NAN_PLUGIN = '''
from typing import ClassVar
import torch
import torch.nn.functional as F
from methods import Distiller, register


@register("nan-after-one-step")
class NanAfterOneStep(Distiller):
    summary: ClassVar[str] = "test method whose loss turns NaN at step 1"
    needs_teacher: ClassVar[bool] = False
    default_weights: ClassVar[dict[str, float]] = {"ce": 1.0, "bad": 1.0}

    def losses(self, s, t, batch):
        bad = torch.tensor(float("nan")) if batch.step >= 1 else s.logits.sum() * 0
        return {"ce": F.cross_entropy(s.logits, batch.y), "bad": bad}
'''


def test_nan_loss_fails_the_run_with_step_and_terms_and_grid_goes_on(tmp_path: Path) -> None:
    (tmp_path / "nan_plugin.py").write_text(textwrap.dedent(NAN_PLUGIN))
    sys.path.insert(0, str(tmp_path))
    try:
        records = benchmark.run(methods="nan-after-one-step,baseline", data="synth", regimes="unpaired", seeds=[0],
                                profile="smoke", out=tmp_path / "out", plugin=["nan_plugin"])
    finally:
        sys.path.remove(str(tmp_path))
    by_method = {r["method"]: r for r in records}
    failed = by_method["nan-after-one-step"]
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "NonFiniteLoss" and failed["error"]["step"] == 1
    assert failed["error"]["terms"]["bad"] != failed["error"]["terms"]["bad"] or failed["error"]["terms"]["bad"] is None
    assert by_method["baseline"]["status"] == "ok"
    on_disk = read_run(tmp_path / "out" / "runs" / "synth" / "unpaired" / "nan-after-one-step" / "seed0.json")
    assert on_disk is not None and on_disk["status"] == "failed"


def test_cli_grid_writes_run_files_report_and_skips_on_second_call(tmp_path: Path) -> None:
    out = tmp_path / "res"
    cmd = [sys.executable, "-m", "benchmark", "--methods", "baseline,kd", "--data", "synth", "--regimes",
           "unpaired", "--seeds", "0", "--profile", "smoke", "--out", str(out), "--no-progress"]
    env = {**os.environ}
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    files = sorted((out / "runs").rglob("seed0.json"))
    names = {f.parent.name for f in files}
    assert {"baseline", "kd", "teacher-nbi"} <= names
    rec = json.loads((out / "runs" / "synth" / "unpaired" / "kd" / "seed0.json").read_text())
    for key in ("config", "config_hash", "provenance", "metrics", "timing", "predictions", "seeds"):
        assert rec[key], key
    assert rec["synthetic"] is True
    assert set(rec["metrics"]) >= {"auc", "f1", "acc"}
    assert len(rec["predictions"]["prob"]) == len(rec["predictions"]["y"]) > 0
    assert rec["provenance"]["versions"]["torch"]
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    second = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes, "finished runs were re-run"
    report = subprocess.run([sys.executable, "-m", "benchmark", "report", str(out)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    text = (out / "REPORT.md").read_text()
    assert "synth" in text and "kd" in text and "teacher" in text.lower()
    assert "synthetic" in text.lower()


def test_run_file_written_atomically_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "d" / "r" / "m" / "seed0.json"
    write_json_atomic(path, {"schema": 1, "status": "ok", "metrics": {"auc": float("nan")}})
    assert read_run(path)["metrics"]["auc"] is None
    assert not list(path.parent.glob(".*tmp"))
    assert len(iter_runs(tmp_path)) == 1


def test_batchnorm_recalibration_sets_running_stats_to_the_images_batch_statistics() -> None:
    from benchmark.settings.profiles import get_profile
    from benchmark.training.inputs import ImageStore
    from benchmark.training.train import recalibrate_batchnorm

    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 4, 4, 3), dtype=torch.uint8).numpy()
    store = ImageStore(images, torch.device("cpu"), channels_last=False)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=0.1))
    model[0].running_mean.fill_(5.0)
    model.eval()
    index = np.array([0, 2, 3, 5])
    recalibrate_batchnorm(model, store, index, get_profile("smoke"), batch_size=2)
    x = store.batch(index, "none", augment=False)
    # two batches of two, averaged: mean of batch means and of unbiased batch variances
    means = torch.stack([x[:2].mean((0, 2, 3)), x[2:].mean((0, 2, 3))])
    variances = torch.stack([x[:2].var((0, 2, 3), unbiased=True), x[2:].var((0, 2, 3), unbiased=True)])
    torch.testing.assert_close(model[0].running_mean, means.mean(0))
    torch.testing.assert_close(model[0].running_var, variances.mean(0))
    assert model[0].momentum == 0.1 and not model.training


def test_teacher_does_not_depend_on_what_the_process_ran_before(tmp_path: Path) -> None:
    from benchmark.settings.config import RunConfig
    from benchmark.settings.profiles import get_profile
    from benchmark.training.runner import Session

    cfg = RunConfig(dataset="synth", regime="all", method="kd", seed=1, profile=get_profile("smoke"))
    weights = []
    for i, noise in enumerate((0, 5)):
        session = Session(tmp_path / f"out{i}", tmp_path / f"cache{i}")
        bundle = session.dataset(cfg)
        torch.rand(noise)  # a different global RNG history, as in a worker that trained other teachers first
        teacher = session.teacher(bundle, bundle.teacher_modality, cfg.profile, cfg.seed)
        weights.append(teacher.model.state_dict())
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_grid_adds_one_wli_oracle_run_per_seed_trained_on_k_times_the_lesions(tmp_path: Path) -> None:
    out = tmp_path / "res"
    records = benchmark.run(methods="baseline", data="ih_gc:synthetic", regimes="all", seeds=[0, 1],
                            profile="smoke", out=out, oracle_factor=3, test_lesions=12, val_lesions=8)
    oracle = [r for r in records if r["regime"] == "oracle"]
    assert sorted(r["seed"] for r in oracle) == [0, 1]
    rec = read_run(out / "runs" / "ih_gc-synthetic" / "oracle" / "baseline" / "seed0.json")
    assert rec["status"] == "ok" and rec["reference"] == "wli-oracle" and rec["method"] == "baseline"
    info = rec["oracle"]
    assert info["factor"] == 3 and info["train_lesions"] == 3 * info["base_train_lesions"]
    assert info["train_images"] > info["base_train_images"]
    base = read_run(out / "runs" / "ih_gc-synthetic" / "all" / "baseline" / "seed0.json")
    # Scored on the same test images as the baseline it is the reference for.
    assert rec["predictions"]["source"] == base["predictions"]["source"]
    assert len({le for le in base["predictions"]["lesion"]}) == 12 and base["data"]["sizes"]["oracle_student"] > 0
    # The oracle trained on more images: more optimiser steps in as many epochs.
    assert rec["timing"]["steps"] > base["timing"]["steps"]


def test_oracle_regime_runs_only_the_baseline_on_a_twin_with_oracle_images(smoke_session: Session) -> None:
    rec = smoke_session.run(_cfg("kd", regime="oracle"), smoke_session.dataset(_cfg("baseline")))
    assert rec["status"] == "unsupported" and "baseline" in rec["error"]["message"]
    rec = smoke_session.run(_cfg("baseline", regime="oracle"), smoke_session.dataset(_cfg("baseline")))
    assert rec["status"] == "unsupported" and "oracle_factor" in rec["error"]["message"]


def test_teacher_step_floor_reaches_the_teacher_job_but_not_the_student(tmp_path: Path) -> None:
    profile = get_profile("smoke").replace(teacher_min_steps=12)
    cfg = RunConfig(dataset="synth", regime="all", method="kd", seed=0, profile=profile)
    session = Session(tmp_path / "out", tmp_path / "cache")
    bundle = session.dataset(cfg)
    teacher = session.teacher(bundle, bundle.teacher_modality, profile, 0)
    # smoke trains 2 epochs; the teacher is stretched until it has made at least 12 steps
    assert teacher.record["steps"] >= 12 and teacher.record["epochs"] > profile.teacher_epochs
    student = session.run(cfg, bundle)
    assert student["status"] == "ok" and student["timing"]["epochs"] == profile.epochs
    assert student["timing"]["steps"] < 12


def test_one_teacher_serves_every_seed_when_the_profile_fixes_its_seed(tmp_path: Path) -> None:
    out = tmp_path / "res"
    records = benchmark.run(methods="baseline,kd", data="synth", regimes="unpaired", seeds=[0, 1, 2],
                            profile="smoke", out=out, teacher_seed=1)
    kd = sorted((r for r in records if r["method"] == "kd"), key=lambda r: r["seed"])
    assert [r["status"] for r in kd] == ["ok"] * 3
    assert {r["teacher"]["seed"] for r in kd} == {1} and len({r["teacher"]["config_hash"] for r in kd}) == 1
    teachers = sorted(p.name for p in (out / "runs" / "synth" / "teacher" / "teacher-nbi").glob("*.json"))
    assert teachers == ["seed1.json"]
    assert read_run(out / "runs" / "synth" / "teacher" / "teacher-nbi" / "seed1.json")["seed"] == 1
    # the students still differ by seed; the default (-1) trains a teacher per seed
    assert len({r["student_sha256"] for r in kd}) == 3
    default = benchmark.run(methods="kd", data="synth", regimes="unpaired", seeds=[0, 1], profile="smoke",
                            out=tmp_path / "per-seed")
    assert [r["teacher"]["seed"] for r in sorted(default, key=lambda r: r["seed"])] == [0, 1]


def test_step_cap_reaches_the_student_and_the_oracle_but_not_the_teacher(tmp_path: Path) -> None:
    out = tmp_path / "res"
    records = benchmark.run(methods="kd", data="ih_gc:synthetic", regimes="all", seeds=[0], profile="smoke",
                            out=out, oracle_factor=3, test_lesions=12, val_lesions=8, epochs=4, max_steps=6)
    kd = next(r for r in records if r["method"] == "kd")
    oracle = next(r for r in records if r["regime"] == "oracle")
    per_epoch = kd["timing"]["steps"] // kd["timing"]["epochs"]
    assert kd["timing"]["epochs"] == max(1, 6 // per_epoch) < 4
    # same recipe on 3x the lesions (capped by its own pool's steps per epoch it would train fewer epochs)
    assert oracle["timing"]["epochs"] == kd["timing"]["epochs"] > 1
    assert oracle["timing"]["steps"] > kd["timing"]["steps"]
    teacher = read_run(out / "runs" / "ih_gc-synthetic" / "teacher" / "teacher-nbi" / "seed0.json")
    assert teacher["timing"]["epochs"] == get_profile("smoke").teacher_epochs
