"""Named method sets for ``--methods`` (PaGKD's ablation set lives beside PaGKD)."""

from __future__ import annotations

from .registry import register_method_set

GENERIC_KD = ("kd", "fitnets", "rkd", "crd", "pkt")
MEDICAL_KD = ("crckd-nbi", "ssd-kd")
PAIRED_CROSS_MODAL = ("add", "cpc-trans", "polypsalign", "samd")

register_method_set("generic-kd", ("baseline", *GENERIC_KD))
register_method_set("medical-kd", ("baseline", *MEDICAL_KD))
register_method_set("paired-baselines", ("baseline", *PAIRED_CROSS_MODAL))
# The PaGKD paper's comparison: generic KD, medical KD, paired cross-modal baselines and
# PaGKD as the paper describes it. The released code's behaviour (`pagkd-released`) is a
# variant of PaGKD and runs with its ablations (`pagkd-ablations`).
register_method_set(
    "paper-table",
    ("baseline", *GENERIC_KD, *MEDICAL_KD, *PAIRED_CROSS_MODAL, "pagkd"),
)
register_method_set("same-modality", ("baseline", "kd", "crckd", "ssd-kd"))
