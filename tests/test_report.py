"""The report builds from hand-made run files (schema of benchmark/runfile.py)."""

from __future__ import annotations

import csv
import re
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmark.reporting import build_report
from benchmark.training.runfile import SCHEMA_VERSION, run_path, write_json_atomic

N_LESIONS = 60  # per dataset; two test images per lesion


def _test_set(k: int) -> tuple[np.ndarray, list[str], list[str]]:
    lesion_label = np.arange(N_LESIONS) % k
    y = np.repeat(lesion_label, 2)
    lesion = [f"L{i // 2:03d}" for i in range(len(y))]
    source = [f"wli/L{i // 2:03d}_{i % 2}.png" for i in range(len(y))]
    return y, lesion, source


def _prob(y: np.ndarray, k: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Logits: noise common to every run of the dataset, a little per-run noise, and the class signal."""
    common = np.random.default_rng(k).normal(size=(len(y), k))
    logits = common + 0.3 * rng.normal(size=(len(y), k)) + strength * np.eye(k)[y]
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _record(
    dataset: str,
    synthetic: bool,
    regime: str,
    method: str,
    seed: int,
    k: int,
    strength: float | None,
    status: str = "ok",
    message: str = "",
    noise_seed: int | None = None,
) -> dict:
    y, lesion, source = _test_set(k)
    rng = np.random.default_rng(zlib.crc32(f"{dataset}/{regime}/{method}/{seed}".encode()))
    rec = {
        "schema": SCHEMA_VERSION,
        "status": status,
        "dataset": dataset,
        "synthetic": synthetic,
        "regime": regime,
        "method": method,
        "seed": seed,
        "profile": "smoke",
        "config": {
            "dataset": dataset,
            "regime": regime,
            "method": method,
            "seed": seed,
            "profile": {"name": "smoke", "teacher_cache": True},
        },
        "config_hash": f"h-{dataset}-{regime}-{method}-{seed}",
        "provenance": {
            "versions": {"torch": "2.14.1", "numpy": "2.4.6"},
            "git_commit": "abc123def456",
            "git_dirty": False,
            "python": "3.11",
            "platform": "Linux",
            "hardware": {"cpu": "Test CPU", "cpu_count": 2},
            "date": f"2026-01-0{seed + 1}T00:00:00+00:00",
            "command": "kdbench",
        },
        "seeds": {"python": seed},
        "data": {
            "provenance": {"generator": "datasets.synthetic"} if synthetic else {"root": "/data/clinic"},
            "sizes": {},
            "classes": [f"c{i}" for i in range(k)],
            "notes": [],
        },
        "method_info": {
            "name": method,
            "summary": f"{method} summary",
            "paper": f"{method} paper",
            "deviations": f"{method} adapts to unpaired rows." if method == "kd" else "",
        },
        "metrics": {},
        "selection": None,
        "teacher": None,
        "cost": None,
        "timing": {},
        "history": [],
        "predictions": None,
        "error": None,
    }
    if status == "ok":
        prob = _prob(y, k, strength, rng)
        rec["predictions"] = {
            "classes": rec["data"]["classes"],
            "y": y.tolist(),
            "prob": prob.tolist(),
            "lesion": lesion,
            "source": source,
        }
    else:
        rec["error"] = {"type": "NonFiniteLoss" if status == "failed" else "Unsupported", "message": message}
    return rec


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("results")
    recs = []
    # synthetic binary dataset, 3 seeds, two regimes, a teacher, a planted strong method
    for seed in range(3):
        recs.append(_record("synth", True, "teacher", "teacher-nbi", seed, 2, 3.0))
        for regime in ("unpaired", "all"):
            recs.append(_record("synth", True, regime, "baseline", seed, 2, 0.6))
            recs.append(_record("synth", True, regime, "strong", seed, 2, 2.5))  # planted: far above baseline
            recs.append(_record("synth", True, regime, "kd", seed, 2, 0.6))
        for m, s in (
            ("pagkd", 1.6),
            ("pagkd-pro", 1.0),
            ("pagkd-den", 1.2),
            ("pagkd-image", 0.9),
            ("pagkd-avgpool", 0.8),
        ):
            recs.append(_record("synth", True, "all", m, seed, 2, s))
    recs.append(_record("synth", True, "all", "crash", 0, 2, None, "failed", "loss became NaN at step 3"))
    recs.append(
        _record(
            "synth",
            True,
            "paired",
            "pagkd",
            0,
            2,
            None,
            "unsupported",
            "method 'pagkd' does not support regime 'paired'",
        )
    )
    # a real three-class dataset with one seed
    for m, s in (("teacher-nbi", 3.0), ("baseline", 0.8), ("strong", 2.5), ("kd", 1.0), ("pagkd", 1.5)):
        recs.append(_record("clinic", False, "teacher" if m.startswith("teacher") else "unpaired", m, 0, 3, s))
    for rec in recs:
        write_json_atomic(run_path(out, rec["dataset"], rec["regime"], rec["method"], rec["seed"]), rec)
    # what an earlier build left (a section whose runs are gone) and a file of the user's
    (out / "report" / "tables").mkdir(parents=True)
    (out / "report" / "figures").mkdir(parents=True)
    for stale in ("tables/old_section.csv", "figures/old_figure.png", "tables/my_notes.txt"):
        (out / "report" / stale).write_text("old")
    path = build_report(out, n_boot=200)
    return path, path.read_text()


def _row(text: str, *starts: str) -> str:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= len(starts) and all(c.strip("*") == s for c, s in zip(cells, starts, strict=False)):
            return line
    raise AssertionError(f"no row starting with {starts}")


def test_stale_tables_and_figures_of_an_earlier_build_are_removed(report: tuple[Path, str]) -> None:
    folder = report[0].parent / "report"
    assert not (folder / "tables" / "old_section.csv").exists()
    assert not (folder / "figures" / "old_figure.png").exists()
    assert (folder / "tables" / "my_notes.txt").exists()  # not a kind the report writes: kept
    assert (folder / "tables" / "datasets.csv").exists()  # what this build wrote stays


def test_report_written_with_tables_and_figures(report: tuple[Path, str]) -> None:
    path, _ = report
    assert path.name == "REPORT.md"
    figs = path.parent / "report" / "figures"
    for stem in ("roc_synth", "auc_synth", "roc_clinic", "auc_clinic", "critical_difference", "gap_closed"):
        assert (figs / f"{stem}.png").stat().st_size > 1000, stem
        assert (figs / f"{stem}.svg").exists(), stem
    tables = path.parent / "report" / "tables"
    for name in (
        "synth_main",
        "clinic_main",
        "auc_summary",
        "inventory",
        "ablation_modules",
        "ablation_levels",
        "ablation_components",
        "synth_vs_baseline",
        "friedman_ranks",
    ):
        for ext in ("md", "csv", "tex"):
            assert (tables / f"{name}.{ext}").exists(), (name, ext)
    tex = (tables / "synth_main.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and "SYNTHETIC" in tex
    rows = list(csv.DictReader((tables / "synth_main.csv").open()))
    strong = next(r for r in rows if r["method"] == "strong" and r["regime"] == "unpaired")
    assert float(strong["AUC_mean"]) > 0.85 and strong["synthetic"] == "True"
    assert "*" in strong["AUC_sig_vs_baseline"]


def test_synthetic_label_everywhere_and_real_unlabelled(report: tuple[Path, str]) -> None:
    path, text = report
    assert "## synth [SYNTHETIC]" in text and "## clinic\n" in text
    assert "clinic [SYNTHETIC]" not in text
    for table in (path.parent / "report" / "tables").glob("*.md"):
        body = table.read_text()
        if re.search(r"\bsynth\b", body):
            assert "SYNTHETIC" in body, table.name


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def test_teacher_row_and_planted_significance(report: tuple[Path, str]) -> None:
    _, full = report
    text = _section(full, "## synth [SYNTHETIC]")
    assert "NBI teacher (upper bound)" in _row(text, "NBI teacher (upper bound)", "NBI train images")
    strong = _row(text, "strong", "D_unp")
    auc_cell = strong.strip("|").split("|")[-2]
    low, high = map(float, re.findall(r"[\d.]+", strong.strip("|").split("|")[-1]))
    assert low < float(re.findall(r"[\d.]+", auc_cell)[0]) <= high
    assert auc_cell.strip().endswith("\\*†")  # MRMC (primary) and paired t-test, after Holm
    best_auc = [_row(text, "strong", r).strip("|").split("|")[-2].strip() for r in ("D_unp", "D_p+D_unp")]
    assert any(c.startswith("**") and c.endswith("**\\*†") for c in best_auc)  # best AUC in bold
    kd = _row(text, "kd", "D_unp").strip("|").split("|")[-2]
    assert "\\*" not in kd and "†" not in kd
    # summary: teacher upper bound, strongest non-PaGKD (the planted method), PaGKD
    summary = _row(full, "strongest non-PaGKD method")
    assert "strong" in summary
    assert "pagkd" in _row(full, "PaGKD")


def test_failed_unsupported_and_one_seed(report: tuple[Path, str]) -> None:
    _, text = report
    crash = _row(text, "synth [SYNTHETIC]", "D_p+D_unp", "crash")
    assert "loss became NaN at step 3" in crash and "NonFiniteLoss" in crash
    unsup = _row(text, "synth [SYNTHETIC]", "D_p", "pagkd")
    assert "does not support regime 'paired'" in unsup
    # one seed: no std, no MRMC (one reader) nor t-test, the Wilcoxon note appears; the CI is the
    # lesion-clustered DeLong interval of the single model
    clinic_strong = _row(text, "strong", "D_unp", "baseline", "1")
    assert "— (—)" in clinic_strong and "°" in clinic_strong and "one seed: no RRRC" in clinic_strong
    assert _row(text, "strong", "D_unp", "1").rstrip(" |").endswith("‡")
    assert "too few seeds for the Wilcoxon test" in text


def test_ablation_deviations_provenance(report: tuple[Path, str]) -> None:
    _, text = report
    assert "| - | - | baseline |" in text and "| yes | yes | pagkd |" in text
    assert _row(text, "synth [SYNTHETIC] / D_p+D_unp", "image-level")
    assert "LR-QFormer replaced by average pooling" in text
    assert "kd adapts to unpaired rows." in text
    assert "abc123def456" in text and "smoke" in text and "Test CPU" in text
    assert "teacher-output cache | on in" in text
    assert "Friedman χ²" in text


def test_empty_results_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run files"):
        build_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "missing")


def test_primary_test_needs_shared_test_images() -> None:
    """Same test images across seeds and methods: the MRMC analysis runs over the common seeds;
    seeds scored on different images: no MRMC (and no DeLong-type test), only the paired tests."""
    from benchmark.reporting.comparisons import compare
    from benchmark.reporting.runs import Cell, to_run

    def cell(method: str, strength: float, shift_sources: bool = False) -> Cell:
        c = Cell("synth", "unpaired", method)
        for seed in range(3):
            rec = _record("synth", True, "unpaired", method, seed, 2, strength)
            if shift_sources:  # each seed scored on its own images (ids differ per seed)
                rec["predictions"]["source"] = [f"s{seed}/{s}" for s in rec["predictions"]["source"]]
            c.ok[seed] = to_run(rec)
        return c

    same = compare(cell("strong", 2.5), cell("baseline", 0.6))
    assert same.rrrc is not None and same.rrrc.p < 1e-3 and same.paired.n == 3 and same.mrmc.seeds == [0, 1, 2]
    assert same.mrmc.analysis.components.n_cases == N_LESIONS  # views of a lesion are one case
    per_seed = compare(cell("strong", 2.5, True), cell("baseline", 0.6, True))
    assert per_seed.rrrc is None and "not on the same test images" in per_seed.mrmc.note
    assert per_seed.paired.n == 3


_CD_SCRIPT = """
import sys
from pathlib import Path
import pandas as pd
from benchmark.analysis.figures import cd_diagram
names = ["crd", "pkt", "ssd-kd", "kd", "rkd", "fitnets", "baseline", "crckd-nbi"]
ranks = pd.Series([3.0, 3.0, 3.0, 4.17, 4.67, 5.0, 6.0, 7.17], index=names)
nemenyi = pd.DataFrame(0.9, index=names, columns=names)
cd_diagram("t", ranks, nemenyi, 6.06, Path(sys.argv[1]))
"""


def test_cd_diagram_pixels_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """Merged shards and a rerun must draw the same figure: the crossbar through a set of
    labels is drawn in rank order, not in the process's string-hash order, and the SVG
    carries neither a date nor random ids."""
    import os
    import subprocess
    import sys

    pngs = []
    for hash_seed in ("1", "2", "3"):
        stem = tmp_path / f"cd{hash_seed}"
        subprocess.run([sys.executable, "-c", _CD_SCRIPT, str(stem)], check=True, timeout=120,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed, "MPLBACKEND": "Agg"})
        pngs.append(stem.with_suffix(".png").read_bytes() + stem.with_suffix(".svg").read_bytes())
    assert pngs[0] == pngs[1] == pngs[2]
