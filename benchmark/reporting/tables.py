"""Tables and their formats: Markdown, LaTeX (booktabs) and CSV, and the number formats of every table."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TCell:
    """A table cell: display text, optional bold, and the raw values written to CSV."""

    text: str
    csv: dict[str, Any] | None = None
    bold: bool = False
    mark: str = ""

    def md(self) -> str:
        text = self.text.replace("|", "\\|")
        text = f"**{text}**" if self.bold and text else text
        return text + self.mark.replace("*", "\\*")

    def tex(self) -> str:
        text = r"\textbf{" + tex_escape(self.text) + "}" if self.bold and self.text else tex_escape(self.text)
        if self.mark:
            text += "$^{" + self.mark.replace("†", r"\dagger") + "}$"
        return text


@dataclass
class Table:
    name: str
    title: str
    columns: list[str]
    rows: list[list[TCell]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numeric: set[int] = field(default_factory=set)

    def markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        lines = [
            "| " + " | ".join(esc(c) for c in self.columns) + " |",
            "|" + "|".join("---:" if i in self.numeric else "---" for i in range(len(self.columns))) + "|",
        ]
        for row in self.rows:
            lines.append("| " + " | ".join(c.md() for c in row) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        spec = "".join("r" if i in self.numeric else "l" for i in range(len(self.columns)))
        body = [" & ".join(tex_escape(c) for c in self.columns) + r" \\"]
        out = [
            r"\begin{table}[t]",
            r"\centering",
            r"\caption{" + tex_escape(self.title) + "}",
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
            *body,
            r"\midrule",
        ]
        for row in self.rows:
            out.append(" & ".join(c.tex() for c in row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        if self.notes:
            out.append(r"\par\smallskip{\footnotesize " + tex_escape(" ".join(self.notes)) + "}")
        out.append(r"\end{table}")
        return "\n".join(out) + "\n"

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        md = folder / f"{self.name}.md"
        md.write_text(f"**{self.title}**\n\n{self.markdown()}\n" + "".join(f"\n{n}\n" for n in self.notes))
        tex = folder / f"{self.name}.tex"
        tex.write_text(self.latex())
        path = folder / f"{self.name}.csv"
        header: list[str] = []
        rows: list[dict[str, Any]] = []
        for row in self.rows:
            d: dict[str, Any] = {}
            for col, c in zip(self.columns, row, strict=True):
                d.update(c.csv if c.csv is not None else {col: c.text})
            for k in d:
                if k not in header:
                    header.append(k)
            rows.append(d)
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header)
            writer.writeheader()
            for d in rows:
                writer.writerow({k: _csv_value(d.get(k)) for k in header})
        return [md, path, tex]


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return "" if v is None else v


_TEX_REPL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\^{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "‡": r"$^\ddagger$",
    "°": r"$^\circ$",
    "−": "-",
    "Δ": r"$\Delta$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "→": r"$\to$",
    "—": "--",
    "–": "--",
    "α": r"$\alpha$",
    "`": "",
}


def tex_escape(s: str) -> str:
    return "".join(_TEX_REPL.get(ch, ch) for ch in s)


def pct(mean: float, std: float | None = None, digits: int = 1) -> str:
    if not math.isfinite(mean):
        return "—"
    if std is None or not math.isfinite(std):
        return f"{100 * mean:.{digits}f}"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float) -> str:
    """``p = 0.123`` or ``p < 0.001`` for running text."""
    return f"p {fmt_p(p).replace('<', '< ')}" if math.isfinite(p) and p < 0.001 else f"p = {fmt_p(p)}"



def best_value(values: Iterable[float]) -> float:
    """The highest finite value, or NaN when there is none or when all values tie
    (bold on every row would say nothing)."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals or (len(vals) > 1 and np.allclose(vals, vals[0], rtol=0, atol=1e-12)):
        return math.nan
    return max(vals)


def prefix_csv(c: TCell, part: str) -> TCell:
    if c.csv:
        c.csv = {f"{part}_{k}": v for k, v in c.csv.items()}
    return c



def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "dataset"
