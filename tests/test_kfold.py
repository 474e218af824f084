"""k-fold cross-validation by lesion, fold pooling, the step floor, the linear probe, one-class data."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from benchmark.orchestration.grid import run_grid
from benchmark.reporting.runs import Results
from benchmark.settings.config import GridConfig
from benchmark.settings.profiles import get_profile
from benchmark.training.folds import pool_folds, resolve_folds
from benchmark.training.probe import C_GRID, fit_probe, probe_record
from benchmark.training.runner import Session
from benchmark.training.schedule import schedule
from datasets.base import DataError
from datasets.catalog import DataRequest, load_dataset
from datasets.kfold import assign_folds, fold_assignment, fold_bundle

# ----------------------------------------------------------------------------- fold assignment

LABELS = {f"c{c}-{i:02d}": c for c, n in enumerate((21, 15, 40)) for i in range(n)}


def test_folds_are_stratified_disjoint_and_cover_every_lesion_once():
    k = 5
    fold_of = assign_folds(LABELS, k, seed=3)
    assert set(fold_of) == set(LABELS)  # every lesion exactly once (a dict: one fold each)
    assert set(fold_of.values()) == set(range(k))
    for c in range(3):
        per_fold = Counter(fold_of[les] for les, lab in LABELS.items() if lab == c)
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, (c, per_fold)
        assert sum(per_fold.values()) == sum(1 for lab in LABELS.values() if lab == c)
    sizes = Counter(fold_of.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1  # 76 lesions -> 16,15,15,15,15
    # test sets over the k folds partition the lesions
    tests = [{les for les, role in fold_assignment(LABELS, k, f, 3).items() if role == "test"} for f in range(k)]
    assert sum(len(t) for t in tests) == len(LABELS)
    assert set().union(*tests) == set(LABELS)


def test_inner_validation_lies_inside_the_training_folds_and_is_stratified():
    k = 5
    fold_of = assign_folds(LABELS, k, seed=0)
    for f in range(k):
        roles = fold_assignment(LABELS, k, f, seed=0)
        val = {les for les, r in roles.items() if r == "val"}
        train = {les for les, r in roles.items() if r == "train"}
        assert all(fold_of[les] != f for les in val | train)
        assert {les for les, r in roles.items() if r == "test"} == {les for les in LABELS if fold_of[les] == f}
        assert {LABELS[les] for les in val} == {0, 1, 2}  # every class in the inner validation split
        for c in range(3):
            n_train_c = sum(1 for les in val | train if LABELS[les] == c)
            n_val_c = sum(1 for les in val if LABELS[les] == c)
            assert n_val_c == max(1, round(0.2 * n_train_c))


def test_fold_assignment_is_deterministic_and_seeded():
    assert assign_folds(LABELS, 5, seed=1) == assign_folds(dict(reversed(LABELS.items())), 5, seed=1)
    assert fold_assignment(LABELS, 5, 2, seed=1) == fold_assignment(LABELS, 5, 2, seed=1)
    assert assign_folds(LABELS, 5, seed=1) != assign_folds(LABELS, 5, seed=2)


def test_too_few_lesions_for_k_folds_names_the_class():
    with pytest.raises(DataError, match=r"class 'rare' has 3 lesion.*--folds 3"):
        assign_folds({"a": 0, "b": 0, "c": 0, "d": 0, "e": 0, "x": 1, "y": 1, "z": 1}, 5, 0, ["common", "rare"])


# ----------------------------------------------------------------------------- a tiny real folder


def _save(path: Path, rng: np.random.Generator, tint: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 120, (10, 10, 3), dtype=np.uint8)
    arr[..., tint] += 100
    Image.fromarray(arr).save(path)


def make_folder(root: Path, per_class=(6, 5), classes=("adenoma", "hyperplastic")) -> Path:
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(zip(classes, per_class, strict=True)):
        for i in range(n):
            for mod in ("wli", "nbi"):
                _save(root / mod / name / f"{name[:2]}{i}.png", rng, c)
    return root


def test_fold_bundle_keeps_images_and_changes_only_the_splits(tmp_path):
    bundle = load_dataset(DataRequest(name=f"folder:{make_folder(tmp_path / 'd')}", image_size=8), log=lambda m: None)
    folds = [fold_bundle(bundle, 3, f, seed=0) for f in range(3)]
    test_lesions = [set(bundle.table.lesion[fb.splits.test_student]) for fb in folds]
    assert sorted(les for t in test_lesions for les in t) == sorted(set(bundle.table.lesion))
    for fb in folds:
        assert fb.table is bundle.table and fb.dataset_id == bundle.dataset_id
        val = set(bundle.table.lesion[fb.splits.val_student])
        train = set(bundle.table.lesion[fb.splits.paired_student])
        test = set(bundle.table.lesion[fb.splits.test_student])
        assert not (val & test) and not (train & test) and not (val & train)
        assert len(fb.splits.test_teacher) == len(fb.splits.test_student)  # NBI twins of the test lesions
    assert len({f.provenance["folds"]["fold"] for f in folds}) == 3


def test_real_folder_data_defaults_to_five_folds(tmp_path):
    small = load_dataset(DataRequest(name=f"folder:{make_folder(tmp_path / 'd')}", image_size=8), log=lambda m: None)
    assert resolve_folds(None, small) == 5
    assert resolve_folds(0, small) == 0 and resolve_folds(3, small) == 3
    assert resolve_folds(None, dataclasses.replace(small, synthetic=True)) == 0
    with pytest.raises(ValueError, match="--folds"):
        resolve_folds(1, small)


# ----------------------------------------------------------------------------- one class


def test_one_class_dataset_stops_before_training(tmp_path):
    root = make_folder(tmp_path / "onecls", per_class=(6,), classes=("adenoma",))
    with pytest.raises(DataError) as err:
        load_dataset(DataRequest(name=f"folder:{root}", image_size=8), log=lambda m: None)
    msg = str(err.value)
    assert str(root.resolve()) in msg and "'adenoma'" in msg and "at least 2 classes" in msg
    grid = GridConfig(methods=["baseline"], data=[f"folder:{root}"], seeds=[0], profile="smoke",
                      out=str(tmp_path / "out"), progress=False)
    with pytest.raises(DataError):
        run_grid(grid)
    assert not (tmp_path / "out" / "runs").exists()


# ----------------------------------------------------------------------------- step floor


def test_step_floor_stretches_small_sets_only():
    real = get_profile("real")
    small = schedule(real, real.epochs, 45)  # 45 images, batch 16: 3 steps an epoch
    assert small.steps_per_epoch == 3 and small.epochs == 67 and small.epochs * 3 >= real.min_steps
    assert small.epochs // small.val_every in (8, 9)  # about the profile's number of validations
    big = schedule(real, real.epochs, 16 * 100)
    assert big.epochs == real.epochs and big.val_every == real.val_every
    off = schedule(get_profile("smoke"), 2, 45)
    assert off.epochs == 2


def test_teacher_floor_applies_to_teachers_only():
    profile = get_profile("smoke").replace(batch_size=32, min_steps=0, teacher_min_steps=300, val_every=5)
    assert schedule(profile, 40, 128).epochs == 40  # 4 steps an epoch; a student keeps its epochs
    teacher = schedule(profile, 40, 128, teacher=True)
    assert teacher.epochs == 75 and teacher.epochs * teacher.steps_per_epoch >= 300 and teacher.min_steps == 300
    assert teacher.epochs // teacher.val_every == 75 // 5  # stretch 1: the profile's cadence
    large = schedule(profile, 40, 32 * 10, teacher=True)  # 400 steps already
    assert large.epochs == 40
    # the student's floor applies to a teacher too, when it is the larger
    both = schedule(profile.replace(min_steps=400), 40, 128, teacher=True)
    assert both.epochs == 100 and both.min_steps == 400


def test_step_cap_cuts_student_epochs_keeps_validations_and_spares_teachers():
    profile = get_profile("smoke").replace(batch_size=32, max_steps=80, val_every=5, teacher_min_steps=0)
    # 16 steps an epoch: 10 epochs would be 160 steps; the cap leaves 5, validated at 3 and 5
    capped = schedule(profile, 10, 32 * 16)
    assert capped.epochs == 5 and capped.epochs * capped.steps_per_epoch <= 80
    assert capped.val_every == 3
    # 8 steps an epoch: 10 epochs are exactly 80 steps, under the cap
    exact = schedule(profile, 10, 32 * 8)
    assert exact.epochs == 10 and exact.val_every == 5
    # teachers have no cap
    assert schedule(profile, 10, 32 * 16, teacher=True).epochs == 10
    # the oracle keeps the epochs of its recipe's pool (5 here) on 5x the rows
    oracle = schedule(profile, 10, 5 * 32 * 16, recipe_rows=32 * 16)
    assert oracle.epochs == 5 and oracle.steps_per_epoch == 80
    # never below one epoch; no cap at 0
    assert schedule(profile.replace(max_steps=10), 10, 32 * 16).epochs == 1
    assert schedule(profile.replace(max_steps=0), 10, 32 * 16).epochs == 10
    with pytest.raises(ValueError, match="min_steps 100 is above max_steps 80"):
        schedule(profile.replace(min_steps=100), 10, 32 * 16)


# ----------------------------------------------------------------------------- pooling


def _fold_record(fold: int, k: int, seed: int, lesions: list[str], y: np.ndarray, prob: np.ndarray) -> dict:
    return {"schema": 1, "status": "ok", "dataset": "d", "regime": "paired", "method": "kd", "seed": seed,
            "fold": {"k": k, "fold": fold}, "config_hash": f"h{fold}", "metrics": {"auc": 0.0},
            "timing": {"train_s": 1.0, "steps": 100 + fold},
            "predictions": {"classes": ["a", "b", "c"], "y": y.tolist(), "prob": prob.tolist(), "lesion": lesions,
                            "source": [f"wli/{les}.png" for les in lesions], "modality": "wli"}}


def test_pooling_scores_every_lesion_once_per_seed_and_auc_matches_direct():
    rng = np.random.default_rng(0)
    k, n = 4, 30
    lesions = [f"L{i}" for i in range(n)]
    y = np.arange(n) % 3
    prob = rng.dirichlet(np.ones(3), n) + np.eye(3)[y] * 0.3
    prob /= prob.sum(1, keepdims=True)
    fold_of = rng.permutation(n) % k
    records = [{"schema": 1, "status": "ok", "dataset": "d", "regime": "paired", "method": "baseline", "seed": 0}]
    for seed in (0, 1):
        for f in (3, 0, 2, 1):  # any file order
            sel = np.flatnonzero(fold_of == f)
            records.append(_fold_record(f, k, seed, [lesions[i] for i in sel], y[sel], prob[sel]))
    pooled = pool_folds(records)
    assert records[0] in pooled  # a record without folds passes through
    kd = [r for r in pooled if r["method"] == "kd"]
    assert sorted(r["seed"] for r in kd) == [0, 1]
    for r in kd:
        assert r["status"] == "ok"
        assert sorted(r["predictions"]["lesion"]) == sorted(lesions)
        direct = roc_auc_score(y, prob, multi_class="ovr", average="macro")
        assert r["metrics"]["auc"] == pytest.approx(direct, abs=1e-12)
        assert r["timing"]["steps_per_fold"] == [100, 101, 102, 103]


def test_pooling_reports_missing_and_failed_folds():
    y = np.array([0, 1, 2])
    prob = np.eye(3)
    recs = [_fold_record(f, 3, 0, [f"a{f}", f"b{f}", f"c{f}"], y, prob) for f in (0, 2)]
    [missing] = pool_folds(recs)
    assert missing["status"] == "failed" and missing["error"]["type"] == "IncompleteFolds"
    assert "1 of 3" in missing["error"]["message"]
    broken = _fold_record(1, 3, 0, ["x", "y", "z"], y, prob)
    broken.update(status="failed", predictions=None, error={"type": "NonFiniteLoss", "message": "nan at step 3"})
    [failed] = pool_folds([*recs, broken])
    assert failed["status"] == "failed" and "fold 1 of 3: nan at step 3" in failed["error"]["message"]


# ----------------------------------------------------------------------------- probe


def test_probe_chooses_c_on_validation_not_on_test():
    rng = np.random.default_rng(1)
    d = 40
    w = rng.normal(size=d)

    def draw(n: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, d))
        y = (x @ w + 2.0 * rng.normal(size=n) > 0).astype(int)
        return x, (1 - y if flip else y)

    tr_x, tr_y = draw(30, False)
    va_x, va_y = draw(40, False)
    te_x, te_y = draw(40, True)  # labels flipped: the test set prefers the worst validation C
    fit = fit_probe(tr_x, tr_y, va_x, va_y, te_x, 2)
    scaler = StandardScaler().fit(tr_x)

    def auc_for(c: float, x: np.ndarray, yy: np.ndarray) -> float:
        m = LogisticRegression(C=c, max_iter=3000).fit(scaler.transform(tr_x), tr_y)
        return roc_auc_score(yy, m.predict_proba(scaler.transform(x))[:, 1])

    val_aucs = [auc_for(c, va_x, va_y) for c in C_GRID]
    test_aucs = [auc_for(c, te_x, te_y) for c in C_GRID]
    assert fit.c == C_GRID[int(np.argmax(val_aucs))]
    assert fit.c != C_GRID[int(np.argmax(test_aucs))]
    assert roc_auc_score(te_y, fit.prob[:, 1]) == pytest.approx(test_aucs[C_GRID.index(fit.c)])


def test_probe_record_fits_on_the_folds_training_lesions_and_selects_on_inner_validation(tmp_path):
    bundle = load_dataset(DataRequest(name=f"folder:{make_folder(tmp_path / 'd', (9, 9))}", image_size=8),
                          log=lambda m: None)
    fb = fold_bundle(bundle, 3, 1, seed=0)
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(len(bundle.table), 6)) + bundle.table.labels[:, None] * 0.8
    grid = GridConfig(methods=["baseline"], data=[bundle.name], seeds=[0], profile="smoke")
    from benchmark.settings.config import RunConfig

    cfg = RunConfig(dataset=bundle.name, regime="paired", method="baseline", seed=0, profile=grid.resolved_profile(),
                    folds=3, fold=1)
    rec = probe_record(Session(tmp_path / "out"), cfg, fb, "wli", "efficientnet_lite0", feats, "key")
    train, val, test = fb.splits.paired_student, fb.splits.val_student, fb.splits.test_student
    labels = bundle.table.labels
    expect = fit_probe(feats[train], labels[train], feats[val], labels[val], feats[test], 2)
    assert rec["selection"]["C"] == expect.c
    assert rec["predictions"]["lesion"] == [str(x) for x in bundle.table.lesion[test]]
    assert rec["reference"] is True and rec["regime"] == "reference" and rec["fold"] == {"k": 3, "fold": 1}


# ----------------------------------------------------------------------------- end to end


def test_kfold_grid_writes_one_file_per_fold_resumes_and_pools_in_the_report(tmp_path):
    root = make_folder(tmp_path / "d", (6, 6))
    out = tmp_path / "out"
    grid = GridConfig(methods=["baseline"], data=[f"folder:{root}"], seeds=[0], profile="smoke",
                      profile_overrides={"image_size": 8, "min_steps": 6, "epochs": 1, "teacher_epochs": 1},
                      out=str(out), folds=3, progress=False)
    records = run_grid(grid)
    assert sorted(r["fold"]["fold"] for r in records) == [0, 1, 2]
    files = sorted(p.name for p in (out / "runs" / "folder-d" / "paired" / "baseline").glob("*.json"))
    assert files == ["seed0-fold0.json", "seed0-fold1.json", "seed0-fold2.json"]
    assert all(r["timing"]["steps"] >= 6 and r["timing"]["epochs"] > 1 for r in records)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("seed0-fold*.json")}
    run_grid(grid)  # resumes: every fold is done
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("seed0-fold*.json")} == mtimes
    res = Results.load(out)
    cell = res.cells[("folder-d", "paired", "baseline")]
    run = cell.ok[0]
    assert sorted(run.lesion) == sorted(set(map(str, res_lesions(root))))
    teacher = res.cells[("folder-d", "teacher", "teacher-nbi")].ok[0]
    assert len(teacher.y) == 12
    from benchmark import rerun

    again, original = rerun(out / "runs" / "folder-d" / "paired" / "baseline" / "seed0-fold1.json", tmp_path / "re")
    assert again["predictions"]["lesion"] == original["predictions"]["lesion"]  # the same fold's test lesions
    assert again["metrics"]["auc"] == original["metrics"]["auc"]


def res_lesions(root: Path) -> list[str]:
    return [p.stem for p in (root / "wli").rglob("*.png")]


def test_report_pools_folds_and_says_when_a_student_falls_below_its_probe(tmp_path):
    from benchmark.reporting import build_report
    from benchmark.training.runfile import run_path, write_json_atomic

    rng = np.random.default_rng(5)
    k, n = 3, 45
    y = np.arange(n) % 3
    lesions = [f"L{i}" for i in range(n)]
    fold_of = np.arange(n) % k

    def prob(strength: float) -> np.ndarray:
        logits = rng.normal(size=(n, 3)) + strength * np.eye(3)[y]
        e = np.exp(logits)
        return e / e.sum(1, keepdims=True)

    rows = [("paired", "baseline", 0.3, 0), ("reference", "probe-wli", 3.0, 0), ("teacher", "teacher-nbi", 3.0, 0)]
    for regime, method, strength, steps in rows:
        for seed in (0, 1):
            p = prob(strength)
            for f in range(k):
                sel = np.flatnonzero(fold_of == f)
                rec = _fold_record(f, k, seed, [lesions[i] for i in sel], y[sel], p[sel])
                rec.update(regime=regime, method=method, config_hash=f"{method}{seed}{f}")
                rec["timing"]["steps"] = 200 + f if method == "baseline" else steps
                rec["predictions"]["modality"] = "nbi" if method == "teacher-nbi" else "wli"
                write_json_atomic(run_path(tmp_path, "d", regime, method, seed, f), rec)
    text = build_report(tmp_path, n_boot=50).read_text()
    assert "## Linear-probe yardsticks" in text
    section = text.split("## Linear-probe yardsticks")[1].split("\n## ")[0]
    assert "**Below their probe**: `baseline` (paired)" in section
    assert "teacher-nbi" not in section.split("Below their probe")[1]  # the NBI teacher has no NBI probe here
    inventory = text.split("## Run inventory")[1]
    assert "| paired | baseline | 2 | 0,1 | 200–202 |" in inventory.replace("D_p", "paired")
    assert "| 45 | 45 |" in text  # datasets table: the pooled test set, every lesion once


# ----------------------------------------------------------------------------- the stand-in


def test_make_standin_command_writes_the_small_paired_set(tmp_path, capsys):
    from benchmark.orchestration.cli import main

    folder = tmp_path / "standin-synthetic"
    assert main(["make-standin", str(folder), "--image-size", "16"]) == 0
    assert "76 lesions" in capsys.readouterr().out
    wli = sorted(p.relative_to(folder / "wli") for p in (folder / "wli").rglob("*.png"))
    nbi = sorted(p.relative_to(folder / "nbi") for p in (folder / "nbi").rglob("*.png"))
    assert wli == nbi and len(wli) == 76  # one WLI and one NBI image per lesion, paired by name
    counts = Counter(p.parts[0] for p in wli)
    assert counts == {"hyperplastic": 21, "serrated": 15, "adenoma": 40}
    assert Image.open(folder / "wli" / wli[0]).size == (16, 16)
    assert (folder / "SYNTHETIC.txt").exists()


def test_main_regimes_fall_back_to_what_a_paired_only_set_serves(tmp_path, monkeypatch):
    from benchmark.orchestration.grid import method_regimes

    paired_only = load_dataset(DataRequest(name=f"folder:{make_folder(tmp_path / 'd')}", image_size=8),
                               log=lambda m: None)
    assert [str(r) for r in paired_only.regimes()] == ["paired", "same"]
    # PaGKD's main regimes (unpaired, all) are not served: it runs where it can, on the pairs
    assert method_regimes("pagkd", ["main"], paired_only) == ["paired"]
    assert method_regimes("kd", ["main"], paired_only) == ["paired"]
    # a method that accepts no served regime keeps its main ones, to be reported unsupported
    import methods.registry as registry
    from methods.base import Distiller

    class OnlyUnpaired(Distiller):
        regimes = frozenset({"unpaired"})
        main_regimes = frozenset({"unpaired"})

    monkeypatch.setitem(registry._REGISTRY, "only-unpaired-test-method", OnlyUnpaired)
    assert method_regimes("only-unpaired-test-method", ["main"], paired_only) == ["unpaired"]
