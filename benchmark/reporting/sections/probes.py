"""Report section: fine-tuned students and teachers against their linear probes.

A probe (:mod:`benchmark.training.probe`) is the simplest use of the pretrained weights a run
fine-tunes. A student below the probe of its own modality, or a teacher below the probe
of its modality, is a finding a reader must see: fine-tuning (as configured) lost what the
frozen features already held. This section says so in words, per dataset; the numbers
are the mean AUC over seeds (pooled over folds under k-fold cross-validation).
"""

from __future__ import annotations

import math
from typing import Any

PROBE_PREFIX = "probe-"


def _modality(cell: Any) -> str | None:
    if cell.method.startswith(PROBE_PREFIX):
        return cell.method.removeprefix(PROBE_PREFIX)
    if cell.method.startswith("teacher-"):
        return cell.method.removeprefix("teacher-")
    for run in cell.ok.values():
        mod = (run.record.get("predictions") or {}).get("modality")
        if mod:
            return str(mod)
    return None


def steps_text(cell: Any) -> str:
    """Optimiser steps per training of a cell's finished runs (per fold under k-fold)."""
    steps: list[int] = []
    for run in cell.ok.values():
        timing = run.record.get("timing") or {}
        per = timing.get("steps_per_fold") or [timing.get("steps")]
        steps += [int(s) for s in per if isinstance(s, int | float)]
    if not steps:
        return "—"
    lo, hi = min(steps), max(steps)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def below_probe(results: Any, dataset: str) -> tuple[dict[str, float], list[tuple[str, str, float, float]]]:
    """(probe AUC per modality, [(method, regime, AUC, probe AUC)] of trained models below
    the probe of their modality)."""
    cells = results.dataset_cells(dataset)
    probes = {c.method.removeprefix(PROBE_PREFIX): c.mean("auc") for c in cells
              if c.method.startswith(PROBE_PREFIX) and math.isfinite(c.mean("auc"))}
    below = []
    for c in cells:
        if c.method.startswith(PROBE_PREFIX):
            continue
        mod, auc = _modality(c), c.mean("auc")
        if mod in probes and math.isfinite(auc) and auc < probes[mod]:
            below.append((c.method, c.regime, auc, probes[mod]))
    return probes, below


def probe_section(results: Any) -> list[str]:
    """Markdown lines of the section (none when no dataset has probe rows)."""
    lines: list[str] = []
    for ds in results.datasets:
        probes, below = below_probe(results, ds)
        if not probes:
            continue
        ref = ", ".join(f"{m.upper()} probe AUC {100 * a:.1f}" for m, a in sorted(probes.items()))
        lines.append(f"- **{results.label(ds)}**: {ref} (frozen ImageNet features + logistic regression).")
        if below:
            items = "; ".join(f"`{m}` ({r}) {100 * a:.1f} < {100 * p:.1f}" for m, r, a, p in below)
            lines.append(f"  - **Below their probe**: {items}. Fine-tuning as configured does worse than the "
                         "frozen pretrained features of the same backbone; suspect the schedule (too few steps, "
                         "learning rate) or too little data for fine-tuning before reading the method comparison.")
        else:
            lines.append("  - Every trained student and teacher reaches at least the probe of its modality.")
    if not lines:
        return []
    return ["## Linear-probe yardsticks", "",
            "Mean AUC over seeds; students are held to the probe of their own modality, teachers to the probe "
            "of theirs.", "", *lines, ""]
