"""Training curves in the report: curve data from run files, the runs-to-look-at rules,
and byte-stable curve figures."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmark.reporting.sections.curves import cell_mean, run_curve, runs_to_look_at
from benchmark.training.runfile import SCHEMA_VERSION, run_path, write_json_atomic

WEIGHTS = {"baseline": {"ce": 1.0}, "kd": {"ce": 0.1, "kd": 0.9}, "pkt": {"ce": 1.0, "pkt": 30000.0}}


def _record(method: str, seed: int, val_auc: list[float], term: list[float] | None, regime: str = "paired") -> dict:
    history = []
    for epoch, auc in enumerate(val_auc):
        loss = {"ce": 1.0 - 0.1 * epoch}
        if term is not None:
            loss[method] = term[epoch]
        history.append({"epoch": epoch, "loss": loss, "val_auc": auc})
    return {
        "schema": SCHEMA_VERSION, "status": "ok", "dataset": "synth", "synthetic": True, "regime": regime,
        "method": method, "seed": seed, "profile": "smoke",
        "config": {"dataset": "synth", "regime": regime, "method": method, "seed": seed,
                   "profile": {"name": "smoke"}, "weights": {}},
        "config_hash": f"h-{regime}-{method}-{seed}", "provenance": {}, "seeds": {},
        "data": {"provenance": {"generator": "datasets.synthetic"}, "sizes": {}, "classes": ["a", "b"], "notes": []},
        "method_info": {"name": method, "summary": method, "default_weights": WEIGHTS[method]},
        "metrics": {"auc": val_auc[int(np.argmax(val_auc))], "acc": 0.7, "f1": 0.7}, "selection": None,
        "teacher": None, "cost": None, "timing": {}, "history": history, "predictions": None, "error": None,
    }


def grid_records() -> list[dict]:
    """Three seeds of baseline, kd and pkt; pkt seed 1 collapses (AUC 0.80 -> 0.65) and
    its term grows 20x. The healthy runs sit just inside both thresholds: kd seed 2 ends
    0.09 below its peak, pkt seed 2's term grows 9x."""
    recs = []
    for seed in range(3):
        d = 0.01 * seed
        recs.append(_record("baseline", seed, [0.60 + d, 0.70 + d, 0.75 + d, 0.78 + d], None))
        kd_auc = [0.62, 0.80, 0.75, 0.71] if seed == 2 else [0.62 + d, 0.74 + d, 0.79 + d, 0.80 + d]
        recs.append(_record("kd", seed, kd_auc, [1.0, 0.8, 0.6, 0.5]))
        if seed == 1:
            recs.append(_record("pkt", seed, [0.60, 0.80, 0.75, 0.65], [0.001, 0.004, 0.02, 0.01]))
        elif seed == 2:
            recs.append(_record("pkt", seed, [0.61, 0.70, 0.74, 0.73], [0.001, 0.003, 0.006, 0.009]))
        else:
            recs.append(_record("pkt", seed, [0.61, 0.70, 0.74, 0.73], [0.001, 0.0008, 0.0006, 0.0005]))
    return recs


def write_grid(out: Path) -> None:
    for rec in grid_records():
        write_json_atomic(run_path(out, rec["dataset"], rec["regime"], rec["method"], rec["seed"]), rec)


def test_distillation_loss_is_the_weighted_sum_of_the_non_task_terms() -> None:
    rec = _record("kd", 0, [0.6, 0.7], [0.5, 0.25])
    rec["method_info"]["default_weights"] = {"ce": 1.0, "kd": 0.9, "aux": 0.0}
    rec["config"]["weights"] = {"kd": 2.0}  # the run's override wins over the default
    for h in rec["history"]:
        h["loss"].update({"aux": 3.0, "adv_disc": 7.0})
    curve = run_curve(rec)
    assert curve is not None
    np.testing.assert_allclose(curve.distill, [1.0, 0.5])  # 2.0 x kd; not ce, not the zero-weight aux, not adv_*
    assert list(curve.terms) == ["kd"]
    assert run_curve(_record("baseline", 0, [0.6, 0.7], None)).distill is None
    assert run_curve({**rec, "status": "failed"}) is None and run_curve({**rec, "history": []}) is None


def test_cell_mean_skips_epochs_without_validation() -> None:
    a = _record("kd", 0, [0.5, 0.6, 0.7], [1.0, 1.0, 1.0])
    b = _record("kd", 1, [0.7, 0.6, 0.9], [3.0, 1.0, 2.0])
    for rec in (a, b):
        del rec["history"][1]["val_auc"]  # epoch 1 not validated (val_every = 2)
    epochs, mean, std = cell_mean([run_curve(a), run_curve(b)], "val_auc")
    assert epochs.tolist() == [0, 2]
    np.testing.assert_allclose(mean, [0.6, 0.8])
    np.testing.assert_allclose(std, [math.sqrt(0.02), math.sqrt(0.02)])  # ddof = 1 over two seeds
    epochs, mean, std = cell_mean([run_curve(a), run_curve(b)], "distill")
    np.testing.assert_allclose(mean, [1.8, 0.9, 1.35])  # 0.9 x mean(kd)
    np.testing.assert_allclose(std[1], 0.0)


def test_runs_to_look_at_flags_the_collapsing_run_only() -> None:
    curves = [run_curve(r) for r in grid_records()]
    found = runs_to_look_at(curves)
    assert sorted({f.curve.name for f in found}) == ["synth/paired/pkt/seed1"]
    reasons = " | ".join(f.reason for f in found)
    assert "ends at 0.650 (epoch 3), 0.150 below its peak 0.800 (epoch 1)" in reasons
    assert "`pkt` grows 20x" in reasons
    # the thresholds are what decides: tighter ones catch the runs just inside them
    tighter = {f.curve.name for f in runs_to_look_at(curves, auc_drop=0.08, growth=8.0)}
    assert {"synth/paired/kd/seed2", "synth/paired/pkt/seed2"} <= tighter


_FIGURE_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from test_curves import write_grid
from benchmark.reporting import build_report
out = Path(sys.argv[1])
write_grid(out)
build_report(out, n_boot=20)
"""


def test_curve_figures_are_byte_stable_and_listed(tmp_path: Path) -> None:
    """The report draws both curve figures from the run files, byte-identical in two
    processes with different string-hash seeds, and lists the collapsing run under them."""
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"r{hash_seed}"
        subprocess.run([sys.executable, "-c", _FIGURE_SCRIPT, str(out), str(Path(__file__).parent)], check=True,
                       timeout=300, env={**os.environ, "PYTHONHASHSEED": hash_seed, "MPLBACKEND": "Agg"})
        outs.append(out)
    text = (outs[0] / "REPORT.md").read_text()
    for series in ("auc", "distill"):
        stems = [o / "report" / "figures" / f"curves_{series}_synth" for o in outs]
        blobs = [s.with_suffix(".png").read_bytes() + s.with_suffix(".svg").read_bytes() for s in stems]
        assert blobs[0] == blobs[1], series
        assert f"report/figures/curves_{series}_synth.png" in text
    section = text.split("training curves", 1)[1].split("\n## ", 1)[0]
    looked = [line for line in section.splitlines() if line.startswith("- `")]
    assert len(looked) == 2 and all("synth/paired/pkt/seed1" in line for line in looked)
