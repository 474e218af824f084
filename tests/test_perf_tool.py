"""benchmark.perf on tiny sizes: every section returns well-formed, sane figures (no
timing thresholds: those live in tests/perf), and the teacher-output cache feeds the
teacher's outputs on the un-augmented images it is indexed by."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import perf
from benchmark.models.backbones import create_backbone
from benchmark.perf.probe import run_probe
from benchmark.settings.profiles import get_profile
from benchmark.training.inputs import ImageStore, augment_batch, normalize_batch, turn_maps
from benchmark.training.train import TeacherOutputCache, loss_values


@pytest.fixture(scope="module")
def tiny() -> perf.PerfData:
    profile = get_profile("smoke").replace(batch_size=16, image_size=16)
    return perf.perf_data(profile, "ih_polyp")


def test_expected_images_drops_only_a_last_single_row() -> None:
    assert perf.expected_images(64, 16, 2) == 128
    assert perf.expected_images(65, 16, 1) == 64  # a last batch of one row is dropped
    assert perf.expected_images(66, 16, 3) == 198  # a last batch of two rows is kept


def test_throughput_flops_and_table(tiny: perf.PerfData) -> None:
    tp = perf.measure_throughput(tiny, epochs=1, repeats=1)
    n = len(tiny.data.student_pool)
    for method in ("baseline", "kd"):
        m = tp["methods"][method]
        assert m["images_harness"] == m["images_bare"] == m["images_expected"] == perf.expected_images(n, 16, 1)
        assert m["harness_images_per_s"] > 0 and m["bare_images_per_s"] > 0
        assert m["ratio"] > 0 and math.isfinite(m["ratio"])
        assert m["ratio"] == pytest.approx(m["harness_images_per_s"] / m["bare_images_per_s"])
        assert m["harness"][0]["steps"] == m["bare"][0]["steps"] == -(-n // 16) - (1 if n % 16 == 1 else 0)
        assert m["step_ratio"] > 0 and m["harness_median_step_s"] > 0 and m["bare_median_step_s"] > 0
    fl = perf.measure_flops(tiny, tp, matmul_n=128, matmul_repeats=2)
    assert fl["matmul_gflops"] > 0
    assert fl["step_flops_per_image"]["kd"] > fl["step_flops_per_image"]["baseline"] == 3 * fl["student_forward_flops"]
    for method in ("baseline", "kd"):
        g = fl["methods"][method]["harness"]
        assert g["gflops"] > 0
        assert g["fraction_of_matmul"] == pytest.approx(g["gflops"] / fl["matmul_gflops"])
    result = {"machine": perf.machine_state(), "profile": "smoke", "dataset": "ih_polyp-synthetic",
              "throughput": tp, "flops": fl}
    json.dumps(result)  # the --out file
    table = perf.format_table(result)
    assert "baseline: harness / bare loop" in table and "kd: achieved GFLOP/s" in table
    assert "SYNTHETIC" in table


def test_step_clock_times_full_steps_within_an_epoch(tiny: perf.PerfData) -> None:
    n = len(tiny.data.student_pool)
    for run in (perf.harness_run, perf.bare_run):
        t = run(tiny, "baseline", 2)
        assert len(t.step_s) == 2 * (n // 16 - 1), run.__name__  # full batches after each epoch's first
        assert all(s > 0 for s in t.step_s) and t.median_step_s <= t.seconds


def test_decode_cache_counts_every_file_and_hits_the_memory_map(tmp_path: Path) -> None:
    dc = perf.measure_decode_cache(tmp_path, n_files=20, file_size=16, image_size=12, repeats=1, batch_size=8)
    assert len(list((tmp_path / "png").glob("*.png"))) == 20
    assert dc["images"] == 20 and dc["cache_hit_is_mmap"] and dc["identical_pixels"]
    assert dc["cached_epoch_s"] > 0 and dc["decode_epoch_s"] > 0
    assert dc["speedup"] == pytest.approx(dc["decode_epoch_s"] / dc["cached_epoch_s"])


def test_png_variants_are_distinct_files(tmp_path: Path) -> None:
    from PIL import Image

    paths = perf.write_png_files(tmp_path, 6, file_size=12, distinct=2)
    pixels = [np.asarray(Image.open(p)) for p in paths]
    assert all(p.shape == (12, 12, 3) for p in pixels)
    assert len({p.tobytes() for p in pixels}) == 6


def test_teacher_cache_section(tiny: perf.PerfData) -> None:
    tc = perf.measure_teacher_cache(tiny, epochs=1, repeats=1)
    assert tc["train_s_off"] > 0 and tc["train_s_on"] > 0
    assert tc["saving"] == pytest.approx(1 - tc["train_s_on"] / tc["train_s_off"])
    assert tc["cache_build_s"] > 0 and tc["projected_saving_at_profile_epochs"] < 1
    assert tc["images"] == perf.expected_images(len(tiny.data.student_pool), 16, 1)
    with pytest.raises(ValueError, match="augmented teacher inputs"):
        perf.measure_teacher_cache(tiny, method="pagkd")


def test_teacher_output_cache_matches_the_teacher_on_unaugmented_images(tiny: perf.PerfData) -> None:
    torch.manual_seed(0)
    teacher = create_backbone("kdbench_cnn4", tiny.bundle.num_classes).eval()
    cache = TeacherOutputCache(teacher, tiny.data, tiny.profile, batch_size=7)  # several chunks
    assert cache.logits.shape[0] == len(tiny.data.teacher_pool)
    idx = torch.tensor([5, 0, 5, len(tiny.data.teacher_pool) - 1])
    out = cache.outputs(idx)
    x = tiny.store.batch(tiny.data.teacher_pool[idx.numpy()], tiny.profile.normalize, augment=False)
    with torch.no_grad():
        ref = teacher(x)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.embedding, ref.embedding, rtol=1e-4, atol=1e-5)
    assert out.features == [] and out.classifier is teacher.classifier


@pytest.mark.parametrize(("h", "w", "channels_last"), [(16, 16, False), (12, 20, False), (16, 16, True)])
def test_store_batch_gather_equals_augmenting_the_float_batch(h: int, w: int, channels_last: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (40, h, w, 3), dtype=np.uint8)
    store = ImageStore(images, torch.device("cpu"), channels_last)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    seen = set()
    for k in range(6):
        idx = np.random.default_rng(k).integers(0, 40, 16)
        fast = store.batch(idx, "imagenet", True, g1)
        plain = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div(255.0)
        ref = normalize_batch(augment_batch(plain, g2), "imagenet")
        assert torch.equal(fast, ref)
        assert fast.is_contiguous(memory_format=torch.channels_last) == channels_last
        seen |= {tuple(r) for r in turn_maps(h, w)[:, :3].tolist()}
    assert len(seen) == (8 if h == w else 4)  # every flip/turn pattern is a distinct permutation


def test_loss_values_are_the_terms_and_total_as_floats() -> None:
    terms = {"ce": torch.tensor(0.25), "kd": torch.tensor(float("nan"), dtype=torch.float64)}
    values, total = loss_values(terms, torch.tensor(1.5, dtype=torch.bfloat16))
    assert total == 1.5 and values["ce"] == 0.25 and math.isnan(values["kd"]) and list(values) == ["ce", "kd"]


def test_main_writes_json_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "perf.json"
    assert perf.main(["--only", "decode", "--decode-files", "10", "--decode-file-size", "16", "--repeats", "1",
                      "--profile", "smoke", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["decode"]["images"] == 10 and data["synthetic"] is True
    assert "load_1m" in data["machine"] and "epoch data access" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown perf section"):
        perf.run_all(["speed"])


def test_precision_section_records_what_each_fresh_process_applied() -> None:
    pr = perf.measure_precision("smoke", ("pagkd",), variants=("fp32", "bf16+channels_last"),
                                overrides={"image_size": 16, "batch_size": 16})
    table = pr["methods"]["pagkd"]
    assert list(table) == ["fp32", "bf16+channels_last"]
    for variant, row in table.items():
        assert row["images"] > 0 and row["steps"] >= 2 and row["images_per_s"] > 0
        assert row["image_size"] == 16 and row["batch_size"] == 16 and row["backbone"] == "kdbench_cnn4"
        assert row["channels_last"] is variant.endswith("channels_last")
    assert table["fp32"]["speedup"] == 1.0 and table["fp32"]["effective_precision"] == "no"
    applied = table["bf16+channels_last"]["effective_precision"]
    assert applied == ("bf16" if torch.cuda.is_available() else "no")
    text = perf.format_table({"precision": pr, "machine": {}})
    assert ("bf16 not applied" in text) is (applied == "no")
    with pytest.raises(ValueError, match="unknown precision variant"):
        perf.measure_precision("smoke", ("baseline",), variants=("fp16",))


def test_a_probe_runs_in_a_fresh_process_under_the_environment_it_is_given() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # this process runs one thread per core
    result = run_probe(perf.thread_probe, {"batch": 4, "image_size": 8, "budget_s": 0.0}, "thread probe", env=env)
    assert result["threads"] == 1 and result["steps"] == 3 and result["images_per_s"] > 0
    with pytest.raises(RuntimeError, match=r"(?s)thread probe failed:.*budget_s"):
        run_probe(perf.thread_probe, {"batch": 4, "image_size": 8}, "thread probe")
