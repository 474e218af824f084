"""The generic folder layout (``--data folder:/path/to/root``).

Cross-modal data::

    <root>/wli/<class>/<image>          white light: the student's modality
    <root>/nbi/<class>/<image>          narrow-band imaging: the teacher's modality
    <root>/pairs.csv                    optional: which WLI and NBI images are true pairs
    <root>/classes.txt                  optional: class order, one folder name a line

Modality folders are matched case-insensitively, ignoring ``-``, ``_`` and spaces:
``wli``, ``wl``, ``wle``, ``white_light``, ``White-light``, ``whitelight`` ... for white
light; ``nbi``, ``narrow_band``, ``narrow-band imaging`` ... for NBI. Other folders
beside them are ignored with a warning. Single-modality data puts the class folders
directly under the root (``<root>/<class>/<image>``); its modality is ``img`` and it
serves the ``same`` regime only.

* **Classes** are the class folder names, label = index in case-insensitive sorted
  order (spelled as in the WLI folder), unless
  ``classes.txt`` lists them (then label = line number; for two classes the second line
  is the positive class of the AUC). Class folders are matched across modalities
  case-insensitively. A class present in one modality only is an **error**: the NBI
  teacher and the WLI student are trained and scored on every class.
* **Files**: every file under a class folder (sub-folders included) except hidden files
  and ``Thumbs.db``/``desktop.ini`` is an image candidate; what cannot be decoded is
  skipped with a warning or stops loading (``--on-bad-image``, see
  :mod:`datasets.images`).
* **Lesion ids**: the file-name prefix before the first ``-`` (``01-3.png`` -> ``01``),
  else the file stem; an image in a sub-folder of its class folder takes the sub-folder
  path as lesion id (``adenoma/p07/f12.png`` -> ``p07``). Lesion ids are shared across
  modalities: ``wli/adenoma/01-1.png`` and ``nbi/adenoma/01-4.png`` are one lesion.
* **Pairs** (the ``twin`` column, one to one): without ``pairs.csv``, a WLI and an NBI
  image with the same path below their modality folder (``<class>/<file>``) are a pair.
  With ``pairs.csv`` (header ``wli,nbi`` and optionally ``lesion_id``), exactly its
  rows are the pairs. Its paths are relative to the modality folder (``adenoma/01-1.png``);
  paths relative to the root (``wli/adenoma/01-1.png``) are accepted too. ``lesion_id``
  sets the lesion of both images of the row; without it both file names must give the
  same lesion id. A row naming a missing file, an image in two rows, or a pair of two
  classes is an error.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from ..base import DataError, LoadOptions, RawDataset
from ..images import log_warning
from ..splits import MIN_LESIONS_PER_CLASS
from .kit import (
    GENERIC_LAYOUT,
    NBI,
    WLI,
    Entry,
    build_raw,
    check_classes_in_every_modality,
    check_root,
    entries_from_tree,
    find_modality_dirs,
    list_files,
    modality_of,
    pairs_by_name,
    scan_classes,
    subdirs,
    visible,
)

SINGLE = "img"
PAIRS_FILE = "pairs.csv"
CLASSES_FILE = "classes.txt"


def _describe(root: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if visible(p))
    if not names:
        return "nothing (the folder is empty)"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _unknown_layout(root: Path, why: str) -> DataError:
    hint = ""
    for d in subdirs(root):
        mods = [s.name for s in subdirs(d) if modality_of(s.name)]
        if mods:
            hint = (
                f" {d}/ holds modality folders ({', '.join(mods)}): the generic layout puts the modality "
                "first, <root>/wli/<class>/, not <root>/<class>/wli/."
            )
            break
    return DataError(
        f"{root}: unknown layout ({why}). Expected {GENERIC_LAYOUT}; modality folders may be named "
        f"wli, wl, white_light, nbi, ... in any case. Found: {_describe(root)}.{hint}"
    )


def read_class_order(root: Path, folder_names: list[str]) -> list[str] | None:
    """Class order from ``classes.txt`` (None when absent), checked against the folders."""
    path = root / CLASSES_FILE
    if not path.exists():
        return None
    listed = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    by_key = {n.casefold(): n for n in folder_names}
    missing = [n for n in listed if n.casefold() not in by_key]
    extra = [n for n in folder_names if n.casefold() not in {x.casefold() for x in listed}]
    if missing or extra or len({x.casefold() for x in listed}) != len(listed):
        raise DataError(
            f"{path} must list every class folder once. Not a folder: {missing or 'none'}; folders not "
            f"listed: {extra or 'none'}. Fix the file or delete it to use sorted folder names."
        )
    return [by_key[n.casefold()] for n in listed]



def read_pairs_csv(path: Path, root: Path, mod_dirs: dict[str, Path], entries: list[Entry]) -> list[tuple[int, int]]:
    """Pairs from ``pairs.csv``; sets the lesion of paired entries when it has ``lesion_id``."""
    by_path = {e.path.resolve(): i for i, e in enumerate(entries)}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if WLI not in header or NBI not in header:
            raise DataError(
                f"{path}: the header must name the columns wli and nbi (and optionally lesion_id); "
                f"found {header or 'an empty file'}."
            )
        col = {name: header.index(name) for name in header if name}
        lesion_col = col.get("lesion_id", col.get("lesion"))
        rows = [(n, row) for n, row in enumerate(reader, start=2) if any(c.strip() for c in row)]

    def resolve(n: int, mod: str, value: str) -> int:
        rel = PurePosixPath(value.strip().replace("\\", "/"))
        mdir = mod_dirs[mod]
        candidates = [mdir / rel, root / rel]
        for cand in candidates:
            if cand.is_file():
                idx = by_path.get(cand.resolve())
                if idx is None or entries[idx].modality != mod:
                    raise DataError(
                        f"{path}: line {n}: {mod} file {value!r} ({cand}) is not an image inside a class folder "
                        f"of {mdir}. Move it under {mdir}/<class>/ or fix the path."
                    )
                return idx
        raise DataError(
            f"{path}: line {n}: {mod} file {value!r} not found (looked for {candidates[0]} and {candidates[1]}). "
            f"Paths are relative to the modality folder ({mdir.name}/) or to the root; fix the path or remove the line."
        )

    pairs: list[tuple[int, int]] = []
    used: dict[int, int] = {}
    for n, row in rows:
        if len(row) <= max(col[WLI], col[NBI]):
            raise DataError(f"{path}: line {n} has {len(row)} column(s), the header has {len(header)}. Fix the line.")
        i, j = resolve(n, WLI, row[col[WLI]]), resolve(n, NBI, row[col[NBI]])
        for idx in (i, j):
            if idx in used:
                raise DataError(
                    f"{path}: {entries[idx].path} is in two pairs (lines {used[idx]} and {n}); pairs are one to "
                    "one, each image in at most one row. Remove one of the two lines."
                )
            used[idx] = n
        if entries[i].label != entries[j].label:
            raise DataError(
                f"{path}: line {n} pairs {entries[i].path} and {entries[j].path}, which are in different class "
                "folders. A pair shows one lesion; fix the line or move the file."
            )
        lesion = row[lesion_col].strip() if lesion_col is not None and lesion_col < len(row) else ""
        if lesion:
            entries[i].lesion = entries[j].lesion = lesion
        elif entries[i].lesion != entries[j].lesion:
            raise DataError(
                f"{path}: line {n} pairs files of lesions {entries[i].lesion!r} and {entries[j].lesion!r} "
                "(from their file names). Add a lesion_id column naming the lesion of each pair."
            )
        pairs.append((i, j))
    return pairs



def load_folder(root: Path, options: LoadOptions) -> RawDataset:
    """Read the generic layout (module docstring) at ``root``."""
    root = check_root(root, "folder", GENERIC_LAYOUT)
    mod_dirs, others = find_modality_dirs(root)
    notes: list[str] = []
    if len(mod_dirs) == 1:
        (mod, mdir), other = next(iter(mod_dirs.items())), NBI if WLI in mod_dirs else WLI
        raise DataError(
            f"{root} has a {mod.upper()} folder ({mdir.name}/) but no {other.upper()} folder. Cross-modal data "
            f"needs both {root}/wli/<class>/ and {root}/nbi/<class>/; for single-modality data put the class "
            f"folders directly under {root}."
        )
    if mod_dirs:
        for d in others:
            log_warning(f"ignored folder {d} (not a modality folder; expected wli/ and nbi/ beside it)")
        per_mod, names = scan_classes(mod_dirs)
        if not names:
            raise _unknown_layout(root, "the modality folders hold no class folders")
        check_classes_in_every_modality(per_mod, names)
        student, teacher = WLI, NBI
    else:
        class_dirs = [d for d in others if list_files(d)]
        if not class_dirs:
            why = "no modality folders (wli/, nbi/) and no class folders holding images"
            if any(p.is_file() and visible(p) for p in root.iterdir()):
                why += "; images must sit in one folder per class, not directly in the root"
            raise _unknown_layout(root, why)
        for d in others:
            if d not in class_dirs:
                log_warning(f"ignored empty folder {d}")
        mod_dirs = {SINGLE: root}
        per_mod = {SINGLE: {d.name: d for d in class_dirs}}
        names = sorted((d.name for d in class_dirs), key=lambda n: (n.casefold(), n))
        student = teacher = SINGLE
    classes = read_class_order(root, names) or names
    entries = entries_from_tree(per_mod, classes, mod_dirs)

    pairs_path = root / PAIRS_FILE
    if pairs_path.exists():
        if student == teacher:
            raise DataError(
                f"{pairs_path} pairs WLI with NBI images, but {root} has no wli/ and nbi/ folders. "
                "Remove pairs.csv or use the cross-modal layout."
            )
        pairs = read_pairs_csv(pairs_path, root, mod_dirs, entries)
        notes.append(f"{len(pairs)} WLI/NBI pair(s) from {pairs_path}")
    elif student != teacher:
        pairs = pairs_by_name(entries)
    else:
        pairs = []
    raw = build_raw(
        entries,
        classes,
        options,
        root=root,
        layout="folder",
        student_modality=student,
        teacher_modality=teacher,
        pairs=pairs,
        notes=notes,
    )
    check_lesions_per_class(raw, root, per_mod)
    return raw


def check_lesions_per_class(raw: RawDataset, root: Path, per_mod: dict[str, dict[str, Path]]) -> None:
    """Name the folders and the lesion ids when a class has too few lesions to split."""
    t = raw.table
    for c, cname in enumerate(raw.classes):
        lesions = sorted(set(t.lesion[t.labels == c].tolist()))
        if len(lesions) < MIN_LESIONS_PER_CLASS:
            folders = ", ".join(str(per_mod[m][cname]) for m in sorted(per_mod) if cname in per_mod[m])
            raise DataError(
                f"class {cname!r} has {len(lesions)} lesion(s) ({', '.join(lesions)}) in {folders}; at least "
                f"{MIN_LESIONS_PER_CLASS} are needed to split by lesion into train/val/test. Lesion ids are the "
                "file-name prefix before '-' (else the stem), a sub-folder of the class folder, or pairs.csv's "
                "lesion_id: add lesions of this class, fix the file names, or remove its folders."
            )
