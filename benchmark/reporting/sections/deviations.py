"""Methods and their documented deviations from the papers."""

from __future__ import annotations

from typing import Any

from ..document import Report
from ..naming import (
    method_rank,
)


def deviations_section(doc: Report) -> None:
    infos: dict[str, dict[str, Any]] = {}
    for rec in doc.r.records:
        m = str(rec.get("method"))
        if m.startswith("teacher-") or m in infos:
            continue
        infos[m] = rec.get("method_info") or {}
    if not infos:
        return
    doc.emit("## Methods and their documented deviations", "")
    for m in sorted(infos, key=method_rank):
        info = infos[m]
        head = f"- **{m}**"
        if info.get("paper"):
            head += f" ({info['paper']})"
        if info.get("summary"):
            head += f": {info['summary']}"
        doc.emit(head)
        dev = " ".join(str(info.get("deviations") or "").split())
        doc.emit(f"  - Deviations: {dev if dev else 'none documented.'}")
    doc.emit("")
