"""Partial fine-tuning with a frozen, cached trunk and the linear-probe head (LP-FT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from test_kfold import make_folder
from torch import nn

from benchmark.models.backbones import create_backbone
from benchmark.models.trunk import stage_plan
from benchmark.orchestration.grid import run_grid
from benchmark.settings.config import GridConfig, RunConfig
from benchmark.training.inputs import ImageStore, TrunkStore, flip_and_turn, normalize_batch
from benchmark.training.probe import fit_probe
from benchmark.training.train import recalibrate_batchnorm

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("name", "depth"), [("efficientnet_lite0", 5), ("resnet18", 2), ("kdbench_cnn4_os4", 2)])
def test_trunk_then_top_is_the_whole_network(name: str, depth: int) -> None:
    torch.manual_seed(0)
    model = create_backbone(name, 3).eval()
    x = torch.randn(2, 3, 48, 48)
    whole = model(x)
    model.freeze_trunk(depth)
    split = model(model.trunk()(x))
    torch.testing.assert_close(split.logits, whole.logits)
    torch.testing.assert_close(split.embedding, whole.embedding)
    torch.testing.assert_close(split.features[-1], whole.features[-1])
    # only the maps after the trunk are reported, the same ones the whole network reports last
    assert [f.shape for f in split.features] == [f.shape for f in whole.features[-len(split.features):]]
    torch.testing.assert_close(model.from_image(x).logits, whole.logits)
    trunk_ids = {id(p) for p in model.trunk().parameters()}
    assert trunk_ids and all(not p.requires_grad for p in model.trunk().parameters())
    assert all(p.requires_grad for p in model.parameters() if id(p) not in trunk_ids)


def test_a_trunk_that_leaves_nothing_to_train_or_an_unknown_family_is_refused() -> None:
    model = create_backbone("kdbench_cnn4", 3)
    with pytest.raises(ValueError, match="leaves nothing to train"):
        model.freeze_trunk(4)
    with pytest.raises(ValueError, match="--frozen-stages 0"):
        stage_plan(nn.Sequential(nn.Conv2d(3, 4, 3)), "mystery")


class _CountingTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.conv(x)


def test_trunk_store_serves_each_flip_and_turn_once_and_matches_the_trunk_on_the_pixels() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = ImageStore(rng.integers(0, 256, (5, 6, 6, 3), dtype=np.uint8), torch.device("cpu"))
    store = TrunkStore(images, _CountingTrunk(), "imagenet")
    idx = np.array([0, 3, 3, 4])
    draws = torch.tensor([[0.1, 0.9, 0.9, 0.0], [0.9, 0.1, 0.1, 1.0], [0.9, 0.1, 0.1, 0.5], [0.2, 0.2, 0.2, 0.3]])
    got = store.batch(idx, "imagenet", augment=True, draws=draws)
    pixels = normalize_batch(flip_and_turn(images.images[torch.as_tensor(idx)].float() / 255.0, draws), "imagenet")
    with torch.no_grad():
        expected = store.trunk.conv(pixels)  # no brightness jitter on cached variants
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(store.pixels(idx, draws), pixels)
    assert store.trunk.rows == 3  # rows 1 and 2 are the same image in the same variant
    store.batch(idx, "imagenet", augment=True, draws=draws)
    assert store.trunk.rows == 3  # read from memory the second time
    plain = store.batch(np.array([2]), "imagenet", augment=False)
    with torch.no_grad():
        torch.testing.assert_close(plain, store.trunk.conv(normalize_batch(images.images[2:3].float() / 255.0,
                                                                           "imagenet")))
    with pytest.raises(ValueError, match="normalisation"):
        store.batch(idx, "none", augment=False)


def test_a_frozen_trunk_needs_pretrained_weights_and_is_shared_per_weights(tmp_path: Path) -> None:
    images = ImageStore(np.zeros((2, 8, 8, 3), dtype=np.uint8), torch.device("cpu"))
    random_init = create_backbone("kdbench_cnn4", 2)
    random_init.freeze_trunk(1)
    with pytest.raises(ValueError, match="pretrained"):
        images.for_model(random_init, "none")
    assert images.for_model(create_backbone("kdbench_cnn4", 2), "none") is images  # no trunk: the images
    ckpt = tmp_path / "w.pth"
    torch.save(create_backbone("kdbench_cnn4", 2).model.state_dict(), ckpt)
    a, b = create_backbone("kdbench_cnn4", 2, str(ckpt)), create_backbone("kdbench_cnn4", 3, str(ckpt))
    a.freeze_trunk(2)
    b.freeze_trunk(2)
    assert images.for_model(a, "none") is images.for_model(b, "none")


def test_recalibration_leaves_a_frozen_trunk_alone() -> None:
    torch.manual_seed(0)
    model = create_backbone("kdbench_cnn4", 2)
    model.freeze_trunk(2)
    trunk_bn = [m for m in model.trunk().modules() if isinstance(m, nn.BatchNorm2d)]
    top_bn = [m for m in model.model.stages[2:].modules() if isinstance(m, nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in trunk_bn + top_bn]

    class Features:
        def batch(self, index, normalize, augment):
            return torch.randn(len(index), 32, 4, 4) + 3.0

    recalibrate_batchnorm(model, Features(), np.arange(16), type("P", (), {"normalize": "none"})())
    after = [m.running_mean for m in trunk_bn + top_bn]
    assert all(torch.equal(b, a) for b, a in zip(before[: len(trunk_bn)], after[: len(trunk_bn)], strict=True))
    assert all(not torch.equal(b, a) for b, a in zip(before[len(trunk_bn):], after[len(trunk_bn):], strict=True))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_probe_as_a_linear_head_gives_the_logistic_regressions_probabilities(num_classes: int) -> None:
    rng = np.random.default_rng(1)
    y = np.arange(60) % num_classes
    x = rng.normal(size=(60, 5)) * [1.0, 2.0, 0.5, 3.0, 1.0] + [0.0, 5.0, -1.0, 2.0, 0.0] + y[:, None] * 0.8
    fit = fit_probe(x[:40], y[:40], x[40:], y[40:], x[40:], num_classes)
    scaler = StandardScaler().fit(x[:40])
    reference = LogisticRegression(C=fit.c, max_iter=3000).fit(scaler.transform(x[:40]), y[:40])
    logits = torch.as_tensor(x[40:] @ fit.weight.T + fit.bias)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), reference.predict_proba(scaler.transform(x[40:])),
                               atol=1e-9)
    np.testing.assert_allclose(fit.prob, reference.predict_proba(scaler.transform(x[40:])), atol=1e-12)


def test_grid_with_frozen_trunk_and_probe_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folder(tmp_path / "d", (6, 6))
    ckpt = tmp_path / "cnn.pth"
    torch.manual_seed(3)
    torch.save(create_backbone("kdbench_cnn4", 2).model.state_dict(), ckpt)
    out = tmp_path / "out"
    monkeypatch.setenv("KDBENCH_CACHE", str(tmp_path / "cache"))
    grid = GridConfig(methods=["baseline", "kd", "pagkd", "ssd-kd"], data=[f"folder:{root}"], regimes=["paired"],
                      seeds=[0], profile="smoke",
                      profile_overrides={"image_size": 16, "min_steps": 4, "epochs": 1, "teacher_epochs": 1,
                                         "pretrained": str(ckpt), "frozen_stages": 2, "head_init": "probe",
                                         "frozen_bn": True, "bn_recalibration": 0, "val_every": 1},
                      out=str(out), folds=2, progress=False)
    records = {(r["method"], r["fold"]["fold"]): r for r in run_grid(grid)}
    ssd = records[("ssd-kd", 0)]
    assert ssd["status"] == "unsupported" and "--frozen-stages 0" in ssd["error"]["message"]
    for method in ("baseline", "kd", "pagkd"):
        rec = records[(method, 1)]
        assert rec["status"] == "ok", rec["error"]
        assert rec["head_init"]["rule"] == "probe"
        assert rec["history"][0]["epoch"] == -1 and "val_auc" in rec["history"][0]  # the LP start is a candidate
    runs = out / "runs" / "folder-d"
    for fold in (0, 1):
        teacher = json.loads((runs / "teacher" / "teacher-nbi" / f"seed0-fold{fold}.json").read_text())
        baseline = records[("baseline", fold)]
        # with batch norm frozen, the probe-initialised network *is* the linear probe of its features
        for rec, probe in ((teacher, "probe-nbi"), (baseline, "probe-wli")):
            probe_rec = json.loads((runs / "reference" / probe / f"seed0-fold{fold}.json").read_text())
            assert rec["history"][0]["epoch"] == -1
            assert rec["history"][0]["val_auc"] == pytest.approx(probe_rec["selection"]["best_val_auc"], abs=1e-9)
    # every cached teacher: the frozen trunk is still the checkpoint's, and so are the batch-norm
    # statistics of the trained stages (frozen_bn), whose weights did train
    start = torch.load(ckpt, weights_only=True)
    teachers = sorted((tmp_path / "cache" / "teachers").glob("*.pt"))
    assert len(teachers) == 2  # one per fold
    for pt in teachers:
        state = torch.load(pt, weights_only=True)
        for k in ("stages.0.0.0.weight", "stages.1.1.1.running_mean", "stages.3.0.1.running_var"):
            assert torch.equal(state[f"model.{k}"], start[k])


@pytest.mark.parametrize("frozen_bn", [True, False])
def test_frozen_batchnorm_keeps_the_statistics_while_the_weights_train(tmp_path: Path, frozen_bn: bool) -> None:
    from benchmark.settings.profiles import get_profile
    from benchmark.training.runner import Session
    from benchmark.training.setup import training_setup
    from benchmark.training.train import fit
    from methods.baseline import Baseline

    session = Session(tmp_path)
    cfg = RunConfig(dataset="synth", regime="paired", method="baseline", seed=0, profile=get_profile("smoke"))
    bundle = session.dataset(cfg)
    profile = cfg.profile.replace(frozen_bn=frozen_bn, bn_recalibration=0)
    torch.manual_seed(0)
    student = create_backbone(profile.backbone, bundle.num_classes)
    data, ctx, _ = training_setup(bundle, "paired", profile, session.store(bundle, profile), method=Baseline,
                                  student=student.spec(profile.image_size))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    fit(student=student, distiller=Baseline(ctx), teacher=None, data=data, profile=profile, epochs=1, lr=1e-2,
        weights={"ce": 1.0}, seed=0, accelerator=session.accelerator(profile))
    after = student.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats) == frozen_bn
    assert not torch.equal(before["model.stages.3.0.0.weight"], after["model.stages.3.0.0.weight"])
    assert not torch.equal(before["model.stages.3.0.1.weight"], after["model.stages.3.0.1.weight"])  # BN affine


def test_run_files_made_before_the_new_profile_fields_keep_their_hash() -> None:
    """Fields added to the profile later (at their neutral value) must not change the
    hash of an existing run file, or a resumed grid redoes every run."""
    fixture = json.loads((REPO / "tests" / "data" / "runfile_before_trunk_fields.json").read_text())
    assert "frozen_stages" not in fixture["config"]["profile"]
    cfg = RunConfig.from_dict(fixture["config"])
    assert cfg.profile.frozen_stages == 0 and cfg.profile.selection == "best"
    assert cfg.hash(fixture["fingerprint"]) == fixture["config_hash"]
    # a field set away from its neutral value does change the hash
    moved = RunConfig.from_dict({**fixture["config"], "profile": {**fixture["config"]["profile"], "frozen_stages": 1}})
    assert moved.hash(fixture["fingerprint"]) != fixture["config_hash"]


def test_one_standard_error_rule_keeps_the_earliest_checkpoint_within_one_se_of_the_best() -> None:
    from benchmark.analysis.clustered_auc import clustered_auc_ci
    from benchmark.training.train import one_standard_error_choice

    rng = np.random.default_rng(0)
    y = np.arange(14) % 2
    best_prob = np.column_stack([1 - (p := np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, 14), 0, 1)), p])
    ref = clustered_auc_ci(y, best_prob, None)
    assert ref.se > 0.02
    dummy = np.full((14, 2), 0.5)

    def cands(offsets: list[float]) -> list:
        return [(e - 1, ref.auc - o * ref.se, best_prob if o == 0 else dummy, {"w": torch.tensor(float(e))})
                for e, o in enumerate(offsets)]

    epoch, auc, state, info = one_standard_error_choice(cands([1.5, 0.5, 0.0, 0.1]), y)
    assert (epoch, float(state["w"])) == (0, 1.0) and auc == pytest.approx(ref.auc - 0.5 * ref.se)
    assert info == {"rule": "one_se", "best_epoch": 1, "best_val_auc": pytest.approx(ref.auc),
                    "se": pytest.approx(ref.se)}
    epoch, _, _, _ = one_standard_error_choice(cands([0.9, 1.2, 0.0]), y)
    assert epoch == -1  # the starting network is within one SE: it is kept
    epoch, _, _, _ = one_standard_error_choice(cands([1.1, 1.2, 0.0]), y)
    assert epoch == 1  # nothing earlier is within one SE: the best


def test_batches_on_a_trunk_carry_the_pixels_of_their_own_draws_made_on_first_read() -> None:
    from benchmark.settings.profiles import get_profile
    from benchmark.training.inputs import augment_draws
    from benchmark.training.train import TrainData, build_batch
    from datasets.sampling import BatchPlan

    rng = np.random.default_rng(0)
    images = ImageStore(rng.integers(0, 256, (6, 6, 6, 3), dtype=np.uint8), torch.device("cpu"))
    student = TrunkStore(images, _CountingTrunk(), "imagenet")
    teacher = TrunkStore(images, _CountingTrunk(), "imagenet")  # another trunk, as a teacher's
    labels = np.array([0, 1, 0, 1, 0, 1])
    data = TrainData(store=student, student_pool=np.array([0, 1, 2]), teacher_pool=np.array([3, 4, 5]),
                     twin_position=np.array([0, 1, 2]), student_labels=labels[:3], teacher_labels=labels[3:],
                     val_index=np.array([0]), val_labels=labels[:1], num_classes=2, class_names=["a", "b"],
                     teacher_store=teacher)
    profile = get_profile("smoke").replace(normalize="imagenet")
    plan = BatchPlan(student=np.array([2, 0]), teacher=np.array([1, 2]), twin=np.array([False, False]))
    batch = build_batch(plan, data, profile, torch.Generator().manual_seed(5), epoch=0, num_epochs=1, step=0,
                        augment=True)
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order: student side, then teacher side
    s_draws, t_draws = augment_draws(2, g, "cpu"), augment_draws(2, g, "cpu")
    assert callable(batch.student_image) and callable(batch.teacher_image)  # not made unless read
    torch.testing.assert_close(batch.student_x, student.batch(np.array([2, 0]), "imagenet", True, draws=s_draws))
    torch.testing.assert_close(batch.teacher_x, teacher.batch(np.array([4, 5]), "imagenet", True, draws=t_draws))
    torch.testing.assert_close(batch.student_pixels, student.pixels(np.array([2, 0]), s_draws))
    torch.testing.assert_close(batch.teacher_pixels, teacher.pixels(np.array([4, 5]), t_draws))
    assert batch.student_pixels.shape[1] == 3 and batch.student_x.shape[1] == 4  # images, not trunk outputs
