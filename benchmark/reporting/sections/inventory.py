"""The run inventory: ok, failed and unsupported runs per cell, with their messages."""

from __future__ import annotations

from ..document import Report
from ..naming import (
    cell_order,
    regime_name,
)
from ..tables import Table, TCell
from .probes import steps_text


def inventory_section(doc: Report) -> None:
    doc.emit("## Run inventory", "")
    table = Table(
        "inventory",
        "Runs per (dataset, training data, method)",
        ["dataset", "training data", "method", "ok", "seeds", "steps", "failed", "unsupported", "message"],
        numeric={3, 6, 7},
    )
    for key in sorted(doc.r.cells, key=lambda k: (k[0], *cell_order(doc.r.cells[k].regime, doc.r.cells[k].method))):
        c = doc.r.cells[key]
        msgs = []
        for rec in c.failed + c.unsupported:
            err = rec.get("error") or {}
            text = f"{err.get('type', rec.get('status'))}: {err.get('message', '')}".strip()
            text = " ".join(text.split())
            if text not in msgs:
                msgs.append(text)
        failed_seeds = sorted(int(r.get("seed", 0)) for r in c.failed)
        table.rows.append(
            [
                TCell(
                    doc.r.label(c.dataset),
                    {"dataset": c.dataset, "synthetic": bool(doc.r.synthetic.get(c.dataset))},
                ),
                TCell(regime_name(c.regime), {"regime": c.regime}),
                TCell(c.method),
                TCell(str(len(c.ok)), {"ok": len(c.ok)}),
                TCell(",".join(map(str, c.seeds)), {"seeds": " ".join(map(str, c.seeds))}),
                TCell(steps_text(c), {"steps": steps_text(c)}),
                TCell(
                    str(len(c.failed)) + (f" (seed {','.join(map(str, failed_seeds))})" if failed_seeds else ""),
                    {"failed": len(c.failed)},
                ),
                TCell(str(len(c.unsupported)), {"unsupported": len(c.unsupported)}),
                TCell("; ".join(m[:200] for m in msgs), {"message": " | ".join(msgs)}),
            ]
        )
    doc.add_table(table)
