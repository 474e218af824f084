"""The datasets table: classes, test-set sizes and where the data came from."""

from __future__ import annotations

from ..document import Report
from ..tables import Table, TCell


def datasets_section(doc: Report) -> None:
    table = Table("datasets", "Datasets", ["dataset", "data", "classes", "test images", "test lesions", "source"])
    for ds in doc.r.datasets:
        recs = [r for r in doc.r.records if r.get("dataset") == ds]
        classes = (
            next(((r.get("data") or {}).get("classes") for r in recs if (r.get("data") or {}).get("classes")), None)
            or []
        )
        run = next((c.ok[s] for c in doc.r.dataset_cells(ds) if not c.is_teacher for s in c.seeds), None)
        n_img = str(len(run.y)) if run is not None and run.y is not None else "—"
        n_les = str(len(set(run.lesion))) if run is not None and run.lesion else "—"
        prov = (
            next(
                ((r.get("data") or {}).get("provenance") for r in recs if (r.get("data") or {}).get("provenance")),
                {},
            )
            or {}
        )
        src = ", ".join(f"{k}={v}" for k, v in list(prov.items())[:4] if not isinstance(v, dict | list))
        table.rows.append(
            [
                TCell(doc.r.label(ds), {"dataset": ds}),
                TCell(
                    "SYNTHETIC" if doc.r.synthetic.get(ds) else "real",
                    {"synthetic": bool(doc.r.synthetic.get(ds))},
                ),
                TCell(", ".join(map(str, classes))),
                TCell(n_img),
                TCell(n_les),
                TCell(src[:160]),
            ]
        )
    table.notes.append(
        "Test images are WLI images of held-out lesions (teachers are scored on test images of "
        "their own modality). Splits are by lesion and fixed across training seeds."
    )
    doc.emit("## Datasets", "")
    doc.add_table(table)
