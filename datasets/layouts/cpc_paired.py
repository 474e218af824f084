"""CPC-Paired, public part (Wang et al., MICCAI 2021; PolypsAlign / CPC-Trans / ADD releases).

Layout read (``--data cpc_paired --data-root R`` reads ``R/cpc_paired``)::

    <root>/White_light/adenomas/01-1.png            <root>/NBI/adenomas/01-1.png
    <root>/White_light/hyperplastic_lesions/011-2.png   ...

The folder holding ``White_light/`` and ``NBI/`` may also sit one or two levels down
(``dataset/``, ``classification_pub/``, ``PolyDataset/``). Modality folders follow the
generic aliases (``White_light``, ``white_light``, ``WL``, ``NBI``). Class folders of
both published spellings are read: ``adenomas`` / ``abnormal`` -> ``adenoma`` and
``hyperplastic_lesions`` / ``normal`` -> ``hyperplastic``.

* **Label convention: 0 = hyperplastic, 1 = adenoma (neoplastic)**, so the AUC's
  positive class is the neoplastic one, as in ADD and PaGKD. PolypsAlign's own loader
  uses the opposite (1 = ``normal`` = hyperplastic); scores are comparable only after
  flipping theirs.
* **Pairs**: a White_light and an NBI file with the same class folder and file name are
  one pair (the ADD release's convention). Files without a same-named partner stay
  unpaired; no pseudo-pairing by lesion prefix is done.
* **Lesion id**: the file-name prefix before ``-`` (``21-1401.png`` -> ``21``); the
  public part's ids are disjoint between classes (``01``-``40`` adenomas, ``011``-``211``
  hyperplastic). No official split: lesions are split by :mod:`datasets.splits`.

Regimes: every image has a twin, so CPC-Paired serves ``paired`` (and ``same``);
D_unp is empty unless some files lack a partner. The CPC-Trans fold reorganisation
(``White_light/train_fold_k/<class>/``) is not read: point at the original release.
"""

from __future__ import annotations

from pathlib import Path

from ..base import DataError, LoadOptions, RawDataset
from .kit import (
    NBI,
    WLI,
    build_raw,
    check_classes_in_every_modality,
    check_root,
    entries_from_tree,
    find_modality_dirs,
    pairs_by_name,
    scan_classes,
    subdirs,
)

CLASSES = ["hyperplastic", "adenoma"]
CLASS_FOLDERS = {
    "adenomas": "adenoma",
    "adenoma": "adenoma",
    "abnormal": "adenoma",
    "hyperplastic_lesions": "hyperplastic",
    "hyperplastic": "hyperplastic",
    "normal": "hyperplastic",
}
LAYOUT = "<root>/{White_light,NBI}/{adenomas,hyperplastic_lesions}/<lesion>-<k>.png"


def find_base(root: Path, depth: int = 2) -> Path | None:
    """The folder (root or up to ``depth`` levels below) holding both modality folders."""
    mods, _ = find_modality_dirs(root)
    if WLI in mods and NBI in mods:
        return root
    if depth:
        for d in subdirs(root):
            found = find_base(d, depth - 1)
            if found is not None:
                return found
    return None


def load_cpc_paired(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "CPC-Paired", LAYOUT)
    base = find_base(root)
    if base is None:
        raise DataError(
            f"{root}: no White_light/ and NBI/ folders found (searched two levels down). CPC-Paired is read in its "
            f"published layout {LAYOUT}; unpack the release there."
        )
    mod_dirs, _ = find_modality_dirs(base)
    mod_dirs = {WLI: mod_dirs[WLI], NBI: mod_dirs[NBI]}
    per_mod, names = scan_classes(mod_dirs, class_map=CLASS_FOLDERS)
    check_classes_in_every_modality(per_mod, names)
    missing = [c for c in CLASSES if c not in names]
    if missing:
        raise DataError(
            f"{base}: no class folder for {', '.join(missing)} (expected adenomas/ and hyperplastic_lesions/ "
            "in both modality folders). Restore the missing folder from the release."
        )
    entries = entries_from_tree(per_mod, CLASSES, mod_dirs)
    return build_raw(
        entries,
        CLASSES,
        options,
        root=base,
        layout="cpc_paired",
        student_modality=WLI,
        teacher_modality=NBI,
        pairs=pairs_by_name(entries),
        notes=["CPC-Paired labels: 0 = hyperplastic, 1 = adenoma (PolypsAlign's code uses the opposite)"],
    )
