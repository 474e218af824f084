"""Ablations: the tables each method's declared ablation variants (methods.Ablations) call for."""

from __future__ import annotations

import math

from methods import Ablations

from ..document import Report
from ..naming import (
    ablated,
    regime_key,
    regime_name,
)
from ..tables import Table, TCell, pct, prefix_csv, slug


def ablation_sections(doc: Report) -> None:
    """One section per method that declares ablations and has a variant among the runs.
    Table names are ``ablation_<table>``, or ``ablation_<method>_<table>`` when several
    methods' ablations ran."""
    studies = {m: s for m, s in ablated().items() if _family_ran(doc, m, s)}
    for method, study in studies.items():
        prefix = "ablation" if len(studies) == 1 else f"ablation_{slug(method)}"
        ablation_section(doc, method, study, prefix)


def _family(method: str, study: Ablations) -> set[str]:
    return {method, *study.variants()}


def _family_ran(doc: Report, method: str, study: Ablations) -> bool:
    fam = {c.method for c in doc.r.cells.values() if c.ok and c.method in _family(method, study)}
    return any(m != method for m in fam)


def _not_run_note(study: Ablations, ran: list[str]) -> str:
    """Names the declared variants with no run in the report, and how to run them."""
    missing = sorted(set(study.variants()) - set(ran))
    if not missing:
        return ""
    return (f"Not run in this grid (—): {', '.join(missing)}; "
            f"`--methods {','.join(missing)}` runs them.")


def ablation_section(doc: Report, method_name: str, study: Ablations, prefix: str) -> None:
    family = _family(method_name, study)
    fam = sorted({c.method for c in doc.r.cells.values() if c.ok and c.method in family})
    doc.emit(f"## Ablations ({study.title})", "")
    columns = []
    for ds in doc.r.datasets:
        regimes = sorted({c.regime for c in doc.r.dataset_cells(ds) if c.method in family}, key=regime_key)
        columns += [(ds, rg) for rg in regimes]
    col_names = [f"{doc.r.label(ds)} / {regime_name(rg)}" for ds, rg in columns]

    def auc_text(ds: str, rg: str, method: str) -> TCell:
        c = doc.r.cell(ds, rg, method)
        key = f"{doc.r.label(ds)}_{rg}_auc_mean"
        if c is None:
            return TCell("—", {key: math.nan})
        return TCell(
            pct(c.mean("auc"), c.std("auc")),
            {key: c.mean("auc"), f"{doc.r.label(ds)}_{rg}_auc_std": c.std("auc")},
        )

    if study.by_modules:
        table = Table(
            f"{prefix}_modules",
            f"{study.title} modules: AUC (%) with {' and/or '.join(study.modules)}",
            [*study.modules, "method", *col_names],
            numeric=set(range(len(study.modules) + 1, len(study.modules) + 1 + len(columns))),
        )
        for flags, method in study.by_modules.items():
            if not any(flags) and study.modules_off in fam:
                method = study.modules_off
            table.rows.append(
                [
                    *(TCell("yes" if on else "-") for on in flags),
                    TCell(method),
                    *(auc_text(ds, rg, method) for ds, rg in columns),
                ]
            )
        table.notes.append(
            " ".join(filter(None, [study.modules_note, "Mean ± std over seeds. Columns marked [SYNTHETIC] are "
                                                       "rendered twins.", _not_run_note(study, fam)]))
        )
        doc.add_table(table)
    module_variants = set(study.by_modules.values())
    level_only = {m for names in study.levels.values() for m in names} - module_variants
    if any(m in fam for m in level_only):
        lv = Table(
            f"{prefix}_levels",
            f"{study.title} {' vs '.join(study.levels)} distillation: AUC (%)",
            ["data", "level", *study.level_columns],
            numeric=set(range(2, 2 + len(study.level_columns))),
        )
        parts = [c.lower() for c in study.level_columns]
        for ds, rg in columns:
            for level, names in study.levels.items():
                lv.rows.append(
                    [
                        TCell(
                            f"{doc.r.label(ds)} / {regime_name(rg)}",
                            {"dataset": ds, "synthetic": bool(doc.r.synthetic.get(ds)), "regime": rg},
                        ),
                        TCell(level),
                        *(prefix_csv(auc_text(ds, rg, m), part) for m, part in zip(names, parts, strict=True)),
                    ]
                )
        lv.notes.append(" ".join(filter(None, [study.levels_note, "Missing variants show —."])))
        doc.add_table(lv)
    others = [m for m in fam if m not in {method_name, study.modules_off, *module_variants, *level_only}]
    if others:
        comp = Table(
            f"{prefix}_components",
            f"{study.title} component variants: AUC (%) and change against the reference",
            ["variant", "change", "reference", *col_names],
            numeric=set(range(3, 3 + len(columns))),
        )
        for m in others:
            what, ref = study.components.get(m, ("variant", method_name))
            row = [TCell(m), TCell(what), TCell(ref)]
            for ds, rg in columns:
                c, r = doc.r.cell(ds, rg, m), doc.r.cell(ds, rg, ref)
                key = f"{doc.r.label(ds)}_{rg}"
                if c is None:
                    row.append(TCell("—", {f"{key}_auc_mean": math.nan}))
                    continue
                delta = c.mean("auc") - r.mean("auc") if r is not None else math.nan
                text = pct(c.mean("auc"), c.std("auc")) + (f" ({100 * delta:+.1f})" if math.isfinite(delta) else "")
                row.append(TCell(text, {f"{key}_auc_mean": c.mean("auc"), f"{key}_delta_vs_ref": delta}))
            comp.rows.append(row)
        comp.notes.append(
            "In brackets: percentage-point change of mean AUC against the reference variant with the same data."
        )
        doc.add_table(comp)
