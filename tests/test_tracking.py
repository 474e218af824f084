"""Experiment trackers: TensorBoard event files read back with TensorBoard's own reader."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import yaml

import benchmark
from benchmark.orchestration.cli import main
from benchmark.settings.trackers import parse_log_with

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("tracked")
    records = benchmark.run(methods="kd,pkt", data="synth", regimes="paired", seeds=0, profile="smoke", out=out,
                            log_with="tensorboard")
    return out, records


def test_tensorboard_events_per_run_with_weighted_terms_and_metrics(tracked: tuple[Path, list[dict]]) -> None:
    out, records = tracked
    by_method = {r["method"]: r for r in records if r["regime"] == "paired"}
    for method, other in (("kd", "pkt"), ("pkt", "kd")):
        rec = by_method[method]
        folder = out / "logs" / "synth" / "paired" / method / "seed0" / "kdbench"
        scalars = _scalars(folder)
        assert {"loss/total", "loss/ce", f"loss/{method}", "val/auc", "val/acc", "val/f1", "test/auc"} <= set(scalars)
        assert f"loss/{other}" not in scalars  # each run's trackers are closed before the next run opens its own
        steps = rec["timing"]["steps"]
        assert [s for s, _ in scalars["loss/total"]] == list(range(steps))
        # per step the weighted term: the epoch mean of the logged values is weight x the run file's epoch mean
        weight = {"kd": 0.9, "pkt": 30000.0}[method]
        per_epoch = steps // len(rec["history"])
        logged = np.array([v for _, v in scalars[f"loss/{method}"]])
        for epoch, entry in enumerate(rec["history"]):
            chunk = logged[epoch * per_epoch : (epoch + 1) * per_epoch]
            np.testing.assert_allclose(chunk.mean(), weight * entry["loss"][method], rtol=1e-5)
        total = np.array([v for _, v in scalars["loss/total"]])
        np.testing.assert_allclose(total, np.array([v for _, v in scalars["loss/ce"]]) + logged, rtol=1e-5)
        # per validation the metrics; at the end the test metrics of the run file
        np.testing.assert_allclose([v for _, v in scalars["val/auc"]], [h["val_auc"] for h in rec["history"]],
                                   rtol=1e-6)
        np.testing.assert_allclose(scalars["test/auc"][0][1], rec["metrics"]["auc"], rtol=1e-6)
        # the resolved config as hyper-parameters
        (hparams,) = folder.glob("*/hparams.yml")
        stored = yaml.safe_load(hparams.read_text())
        assert stored["method"] == method and stored["config_hash"] == rec["config_hash"]
        assert stored["profile/epochs"] == rec["config"]["profile"]["epochs"]


def test_logging_changes_neither_the_numbers_nor_the_config_hash(
    tracked: tuple[Path, list[dict]], tmp_path: Path
) -> None:
    _, records = tracked
    logged = next(r for r in records if r["method"] == "kd" and r["regime"] == "paired")
    plain = benchmark.run(methods="kd", data="synth", regimes="paired", seeds=0, profile="smoke", out=tmp_path)
    (rec,) = [r for r in plain if r["method"] == "kd"]
    assert not (tmp_path / "logs").exists()
    assert rec["config_hash"] == logged["config_hash"]
    assert rec["student_sha256"] == logged["student_sha256"]
    assert rec["history"] == logged["history"]


def test_unknown_or_missing_tracker_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    assert parse_log_with("TensorBoard, tensorboard") == ["tensorboard"]
    with pytest.raises(ValueError, match="choose from tensorboard, wandb, mlflow, aim"):
        parse_log_with("neptune")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'kdbench\[mlflow\]'"):
        parse_log_with("tensorboard,mlflow")
    assert main(["--methods", "kd", "--log-with", "mlflow", "--profile", "smoke"]) == 2
    assert "kdbench[mlflow]" in capsys.readouterr().err
