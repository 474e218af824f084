"""Names and order of rows: methods, training data (regimes) and teachers.

Rows run teacher, baseline, the other methods, then each method that declares
ablations (:func:`methods.ablations`) followed by its variants; training data in
:data:`datasets.regimes.REGIMES` order, teachers' rows last.
"""

from __future__ import annotations

import methods
from datasets.regimes import REGIMES, Regime

BASELINE = "baseline"
TEACHER = "teacher"
"""The run-file regime of the teachers' own rows (the upper bound)."""
ORACLE = Regime.ORACLE.value
"""The run-file regime of the WLI-oracle reference (``baseline`` trained on k x the WLI training
lesions of a synthetic twin): a reference row, not a distillation regime."""
REGIME_ORDER: tuple[str, ...] = (*REGIMES, TEACHER)


def regime_name(regime: str) -> str:
    """The paper's name of a regime's training data (``D_p``, ``D_unp``, ...)."""
    return Regime(regime).label if regime in REGIMES else regime


def regime_key(regime: str) -> int:
    return REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)


def is_teacher(regime: str, method: str) -> bool:
    return regime in (TEACHER, "reference") or method.startswith("teacher-")  # not a student


def is_oracle(regime: str) -> bool:
    return regime == ORACLE


def is_reference(regime: str, method: str) -> bool:
    """Teachers and the WLI oracle: yardsticks beside the students, never in comparisons or rankings."""
    return is_teacher(regime, method) or is_oracle(regime)


def oracle_factor(record: dict | None) -> str:
    """The oracle's data multiple ``k`` from its run record (``oracle.factor``), or ``k`` when unknown."""
    factor = ((record or {}).get("oracle") or {}).get("factor")
    return str(factor) if factor else "k"


def ablated() -> dict[str, methods.Ablations]:
    """Every method that declares ablation variants, with its declaration."""
    return methods.ablations()


def method_rank(method: str) -> tuple[int, str]:
    if method == "teacher-nbi":
        return (0, method)
    if method.startswith("teacher-"):
        return (1, method)
    if method == BASELINE:
        return (2, method)
    studies = ablated()
    if method in studies:
        return (4, method)
    if any(method in study.variants() for study in studies.values()):
        return (5, method)
    return (3, method)


def cell_order(regime: str, method: str) -> tuple:
    if is_oracle(regime):  # next to the NBI teacher
        return (1, "", 0, regime)
    return (*method_rank(method), regime_key(regime), regime)


def method_label(method: str, regime: str = "", record: dict | None = None) -> str:
    if is_oracle(regime):
        return f"WLI oracle ({oracle_factor(record)} x WLI training lesions)"
    if method.startswith("teacher-"):
        return (
            f"{method.removeprefix('teacher-').upper()} teacher (upper bound)"
            if method == "teacher-nbi"
            else (f"{method.removeprefix('teacher-').upper()} teacher")
        )
    return method


def regime_label(regime: str, method: str, record: dict | None = None) -> str:
    """The "training data" column: the regime's name, or a teacher's or the oracle's train images."""
    if is_oracle(regime):
        info = (record or {}).get("oracle") or {}
        base = regime_name(str(info.get("base_regime", Regime.ALL.value)))
        lesions = info.get("train_lesions")
        return f"{lesions} WLI train lesions, {oracle_factor(record)} x {base}" if lesions else f"k x {base}"
    if is_teacher(regime, method):
        return f"{method.split('-', 1)[-1].upper()} train images"  # teacher-nbi, probe-wli
    return regime_name(regime)
