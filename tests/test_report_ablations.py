"""The report's ablation tables come from the methods' own declarations
(:func:`methods.register_ablations`), not from names the report knows."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from test_report import _record

import methods
from benchmark.reporting.document import Report
from benchmark.reporting.runs import Results
from benchmark.reporting.sections.ablations import ablation_sections
from benchmark.reporting.sections.summary import summary_section
from benchmark.training.runfile import run_path, write_json_atomic
from methods import registry

TOY = methods.Ablations(
    title="Toy",
    modules=("Head",),
    by_modules={(False,): "baseline", (True,): "toy"},
    modules_note="Toy with and without its head.",
    components={"toy-lite": ("half-width head", "toy")},
)
STRENGTH = {"baseline": 0.6, "kd": 1.0, "toy": 1.8, "toy-lite": 1.2}


def _write_runs(out: Path) -> list[dict]:
    recs = [_record("synth", True, "unpaired", m, seed, 2, s) for m, s in STRENGTH.items() for seed in range(2)]
    for rec in recs:
        write_json_atomic(run_path(out, rec["dataset"], rec["regime"], rec["method"], rec["seed"]), rec)
    return recs


def _auc(recs: list[dict], method: str) -> float:
    """Seed-mean AUC of a method, straight from the records' predictions."""
    aucs = [roc_auc_score(r["predictions"]["y"], np.asarray(r["predictions"]["prob"])[:, 1])
            for r in recs if r["method"] == method]
    return float(np.mean(aucs))


def _sections(out: Path) -> tuple[str, Report]:
    """The summary and ablation sections only (no figures): what the declarations drive."""
    doc = Report(Results.load(out), out, "t", n_boot=50)
    summary_section(doc)
    ablation_sections(doc)
    return "\n".join(doc.md), doc


def test_a_declared_ablation_study_gets_its_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._ABLATIONS, "toy", TOY)
    recs = _write_runs(tmp_path)
    text, doc = _sections(tmp_path)
    assert "## Ablations (Toy)" in text and "## Ablations (PaGKD)" not in text  # no PaGKD run, no PaGKD section
    assert "Toy modules: AUC (%) with Head" in text and "Toy with and without its head." in text
    with (tmp_path / "report" / "tables" / "ablation_components.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    assert (row["variant"], row["change"], row["reference"]) == ("toy-lite", "half-width head", "toy")
    delta = float(row["synth [SYNTHETIC]_unpaired_delta_vs_ref"])
    assert delta == pytest.approx(_auc(recs, "toy-lite") - _auc(recs, "toy"), abs=1e-5)
    # the ablated method is a study's subject: its own summary row, left out of "strongest other"
    assert "strongest non-PaGKD/Toy method" in text
    other = next(line for line in text.splitlines() if line.startswith("| strongest non-"))
    assert "(kd," in other
    # rows: the other methods, then the ablated method, then its variants
    order = [c.method for c in doc.r.dataset_cells("synth")]
    assert order == ["baseline", "kd", "toy", "toy-lite"]


def test_undeclared_variants_get_no_ablation_section(tmp_path: Path) -> None:
    _write_runs(tmp_path)
    text, doc = _sections(tmp_path)
    assert "## Ablations" not in text
    other = next(line for line in text.splitlines() if line.startswith("| strongest non-"))
    assert "(toy," in other  # an undeclared method competes as any other
    assert [c.method for c in doc.r.dataset_cells("synth")] == ["baseline", "kd", "toy", "toy-lite"]


def test_declared_variants_without_runs_are_named_with_the_command_that_runs_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = methods.Ablations(title="Toy", modules=("Head",), by_modules={(False,): "baseline", (True,): "toy"},
                              components={"toy-lite": ("half-width head", "toy"), "toy-wide": ("wide", "toy")})
    monkeypatch.setitem(registry._ABLATIONS, "toy", study)
    _write_runs(tmp_path)
    text, _ = _sections(tmp_path)
    assert "Not run in this grid (—): toy-wide; `--methods toy-wide` runs them." in text
    monkeypatch.setitem(registry._ABLATIONS, "toy", TOY)  # every declared variant ran: no such note
    text, _ = _sections(tmp_path)
    assert "Not run in this grid" not in text
