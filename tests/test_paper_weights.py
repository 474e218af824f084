"""The ``paper`` profile starts from ImageNet weights: timm's from the local Hugging Face
(or torch-hub) cache, or ``--pretrained PATH``; without either the grid stops before its
first run with a message naming both ways; every run file records the weights' origin and
sha256. No test touches the network: caches are temporary folders and the hub call is stubbed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import benchmark.models.weights as weights
from benchmark import run
from benchmark.models.backbones import create_backbone
from benchmark.models.weights import WeightsError, locate_timm_weights
from benchmark.settings.profiles import get_profile

SMALL = {"backbone": "kdbench_cnn4", "teacher_backbone": "kdbench_cnn4", "image_size": 24, "epochs": 1,
         "teacher_epochs": 1, "batch_size": 16, "precision": "no", "data_scale": 0.02, "channels_last": False}


@pytest.fixture
def empty_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty Hugging Face and torch-hub caches, hub off."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_paper_profile_starts_from_timm_imagenet_weights():
    paper = get_profile("paper")
    assert (paper.backbone, paper.teacher_backbone, paper.pretrained, paper.normalize) == (
        "resnet50", "resnet50", "timm", "imagenet")


def test_missing_weights_stop_the_grid_before_its_first_run(empty_caches: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr("huggingface_hub.hf_hub_download", lambda *a, **k: calls.append(a) or 1 / 0)
    out = empty_caches / "results"
    with pytest.raises(WeightsError) as err:
        run(methods="baseline", data="synth", profile="paper", regimes="unpaired", seeds=[0], out=out)
    message = str(err.value)
    assert "--pretrained PATH" in message and "HF_HUB_OFFLINE=0" in message and "timm/resnet50" in message
    assert not out.exists() or not any(out.rglob("*.json"))  # no run file, not even a failed one
    assert calls == []  # offline: the hub is never asked
    # HF_HUB_OFFLINE=0: the hub is asked once, and its failure is reported with both ways again
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(WeightsError, match=r"could not be reached.*ZeroDivisionError") as err:
        locate_timm_weights("resnet50")
    assert calls == [("timm/resnet50.a1_in1k", "model.safetensors")] and "--pretrained PATH" in str(err.value)
    # a model timm has no weights for
    with pytest.raises(WeightsError, match="knows no pretrained weights"):
        weights.check_weights_available(["kdbench_cnn4"], "timm")


def test_timm_weights_are_read_from_the_local_caches(empty_caches: Path):
    torch.manual_seed(0)
    source = timm.create_model("resnet10t", pretrained=False)  # 1000 ImageNet classes
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    # Hugging Face cache layout: models--<org>--<name>/{refs/main, snapshots/<rev>/<file>}
    repo = empty_caches / "hf" / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))

    net = create_backbone("resnet10t", 3, "timm")
    info = net.weights
    assert info["origin"] == "hf-cache:timm/resnet10t.c3_in1k"
    assert info["sha256"] == sha256(snapshot / "model.safetensors")
    assert sorted(info["skipped"]) == ["fc.bias", "fc.weight"]  # 1000-class head replaced by a 3-class one
    torch.testing.assert_close(net.model.conv1[0].weight, source.conv1[0].weight)

    # the older torch-hub cache, when the Hugging Face cache has nothing
    (snapshot / "model.safetensors").unlink()
    hub_file = empty_caches / "torch" / "hub" / "checkpoints" / "resnet10t_176_c3-f3215ab1.pth"
    hub_file.parent.mkdir(parents=True)
    torch.save(state, hub_file)
    info = create_backbone("resnet10t", 3, "timm").weights
    assert info["origin"] == "torch-hub-cache:resnet10t_176_c3-f3215ab1.pth" and info["sha256"] == sha256(hub_file)


def test_run_files_record_the_weights_origin_and_hash(empty_caches: Path):
    torch.manual_seed(0)
    ckpt = empty_caches / "fake_imagenet.pt"
    torch.save(create_backbone("kdbench_cnn4", 1000).model.state_dict(), ckpt)
    out = empty_caches / "results"
    records = run(methods="kd", data="synth", profile="paper", regimes="unpaired", seeds=[0], out=out,
                  pretrained=str(ckpt), **SMALL)
    assert [r["status"] for r in records] == ["ok"]
    stored = json.loads((out / "runs" / "synth" / "unpaired" / "kd" / "seed0.json").read_text())
    teacher_row = json.loads((out / "runs" / "synth" / "teacher" / "teacher-nbi" / "seed0.json").read_text())
    for info in (stored["weights"]["student"], stored["weights"]["teacher"], teacher_row["weights"]["teacher"]):
        assert info["origin"] == "checkpoint" and info["source"] == str(ckpt)
        assert info["sha256"] == sha256(ckpt)
    assert stored["config"]["profile"]["pretrained"] == str(ckpt)
    # random initialisation is recorded as such
    records = run(methods="baseline", data="synth", profile="paper", regimes="unpaired", seeds=[0], out=out,
                  pretrained="", **SMALL)
    assert records[0]["weights"] == {"student": {"spec": "", "origin": "random"}, "teacher": None}
