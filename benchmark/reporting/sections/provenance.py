"""Provenance: when, where and with which code and packages the runs were made."""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from typing import Any

from ..document import Report


def provenance(doc: Report) -> None:
    recs = doc.r.records
    prov = [r.get("provenance") or {} for r in recs]
    commits = sorted(
        {f"{p.get('git_commit', 'unknown')}{' (dirty)' if p.get('git_dirty') else ''}" for p in prov if p}
    )
    profiles = sorted({str(r.get("profile")) for r in recs if r.get("profile")})
    hw = sorted({_hardware(p.get("hardware")) for p in prov if p.get("hardware")})
    platforms = sorted({str(p.get("platform")) for p in prov if p.get("platform")})
    dates = sorted(str(p.get("date")) for p in prov if p.get("date"))
    status = defaultdict(int)
    for r in recs:
        status[r.get("status", "ok")] += 1
    versions: dict[str, set[str]] = defaultdict(set)
    for p in prov:
        for k, v in (p.get("versions") or {}).items():
            versions[k].add(str(v))
    cache_on = sum(1 for r in recs if _find_key(r.get("config") or {}, "teacher_cache") is True)
    cache_known = sum(1 for r in recs if _find_key(r.get("config") or {}, "teacher_cache") is not None)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    rows = [
        ("report built", now),
        ("run files", f"{len(recs)} ({', '.join(f'{v} {k}' for k, v in sorted(status.items()))})"),
        ("runs dated", f"{dates[0]} – {dates[-1]}" if dates else "unknown"),
        ("git commit", ", ".join(commits) or "unknown"),
        ("profile", ", ".join(profiles) or "unknown"),
        ("hardware", "; ".join(hw) or "unknown"),
        ("platform", "; ".join(platforms) or "unknown"),
        (
            "teacher-output cache",
            (
                f"on in {cache_on} of {cache_known} run configs (teacher logits/embeddings "
                "computed once per run on un-augmented teacher images, for methods that "
                "read only those)"
            )
            if cache_known
            else "not recorded",
        ),
        (
            "datasets",
            ", ".join(f"{d} ({'SYNTHETIC' if doc.r.synthetic.get(d) else 'real'})" for d in doc.r.datasets)
            or "none",
        ),
    ]
    doc.emit("## Provenance", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "")
    if versions:
        doc.emit(
            "Package versions: "
            + ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(versions.items()))
            + ".",
            "",
        )


def _hardware(hw: Any) -> str:
    if not isinstance(hw, dict):
        return str(hw)
    parts = [str(hw.get("cpu") or hw.get("machine") or "cpu")]
    if hw.get("cpu_count"):
        parts[0] += f" ({hw['cpu_count']} cores)"
    if hw.get("gpus"):
        parts.append(", ".join(map(str, hw["gpus"])))
    return " + ".join(parts)


def _find_key(obj: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in nested dicts, or ``None``."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for v in obj.values():
            found = _find_key(v, key)
            if found is not None:
                return found
    return None
