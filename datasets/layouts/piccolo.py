"""PICCOLO widefield release 0.1 (Sánchez-Peralta et al., Appl. Sci. 2020).

Layout read (``--data piccolo --data-root R`` reads ``R/piccolo``)::

    <root>/train/polyps/001_VP1_frame0075.png       (also train/train/polyps/, as some copies nest)
    <root>/validation/polyps/...     <root>/test/polyps/...
    <root>/clinical metadata_release0.1.csv

``<root>`` may also hold the unpacked ``piccolo dataset-release0.1/`` folder. Masks and
``void/`` are not read.

* **Labels** come from the clinical metadata CSV: ``;``-separated, read as UTF-8 and,
  where that fails, as Latin-1 (the release has non-UTF-8 bytes). Columns are found by
  header name: the lesion code is ``CODE - LESION``; the diagnosis is the header holding
  ``DIAGNOSIS`` whose values best match the vocabulary (the pathologist's column on a
  tie). Classes: **0 = Hyperplasia, 1 = Adenoma, 2 = Adenocarcinoma** (PaGKD's mapping).
  Rows without a diagnosis, or with another one, are dropped, and so are the frames of
  their lesions; both counts are printed and kept in the notes.
* **Lesion id**: the ``NNN`` code of the file name without leading zeros
  (``001_VP1_frame0075.png`` -> ``1``), matched to ``CODE - LESION`` the same way.
* **Split**: the official one, from the folder (``validation`` -> ``val``); it is
  patient-independent.
* **Modality**: from ``--modality-list`` (CSV ``file,modality``, file relative to the
  folder holding ``train/``), otherwise from the colour heuristic of
  :func:`datasets.images.nbi_by_colour`, with a printed count of frames called NBI
  (published: 2131 WL and 1302 NBI frames).

Regimes: PICCOLO pairs WL and NBI frames only at lesion level, never as views, so no
frame has a twin: D_p is empty, and the dataset serves ``unpaired`` (and ``all``, equal
to it, and ``same``). The ``paired`` regime needs pairs the user builds (e.g. a generic
layout with ``pairs.csv``).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from ..base import DataError, LoadOptions, RawDataset
from ..images import log_warning
from .kit import NBI, WLI, Entry, build_raw, check_root, list_files, modality_assigner, subdirs

CLASSES = ["Hyperplasia", "Adenoma", "Adenocarcinoma"]
DIAGNOSIS_WORDS = {
    "hyperplasia": 0,
    "hyperplastic": 0,
    "adenoma": 1,
    "adenomatous": 1,
    "adenocarcinoma": 2,
    "carcinoma": 2,
}
SPLIT_DIRS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
FRAME = re.compile(r"^(\d+)_VP\d+_frame\d+", re.IGNORECASE)
LAYOUT = "<root>/{train,validation,test}/polyps/NNN_VPk_frameFFFF.png with <root>/clinical metadata_release0.1.csv"


def lesion_code(code: str) -> str:
    """``"001"`` -> ``"1"``; the same normal form for file names and the CSV."""
    code = code.strip()
    return (code.lstrip("0") or "0") if code.isdigit() else code


def diagnosis_label(value: str) -> int | None:
    words = re.findall(r"[a-z]+", value.casefold())
    return DIAGNOSIS_WORDS.get(words[0]) if words else None


def read_text(path: Path) -> str:
    """UTF-8 (with or without BOM), falling back to Latin-1 for the release's non-UTF-8 bytes."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_clinical_csv(path: Path) -> tuple[dict[str, int], list[str]]:
    """(lesion code -> label, notes) from the clinical metadata CSV."""
    rows = list(csv.reader(io.StringIO(read_text(path)), delimiter=";"))
    if not rows:
        raise DataError(f"{path} is empty; restore clinical metadata_release0.1.csv from the release.")
    header = [h.strip() for h in rows[0]]
    norm = [re.sub(r"\s+", " ", h).upper() for h in header]
    code_col = next((k for k, h in enumerate(norm) if h.replace(" ", "") == "CODE-LESION"), None)
    diag_cols = [k for k, h in enumerate(norm) if "DIAGNOSIS" in h]
    if code_col is None or not diag_cols:
        raise DataError(
            f"{path}: expected ';'-separated columns 'CODE - LESION' and a '... DIAGNOSIS ...' column; found "
            f"{header}. Use the release's clinical metadata_release0.1.csv unchanged."
        )
    body = [r for r in rows[1:] if any(c.strip() for c in r)]

    def score(k: int) -> tuple[int, int]:
        hits = sum(1 for r in body if k < len(r) and diagnosis_label(r[k]) is not None)
        return hits, int("PATHOLOG" in norm[k] or "LITERAL" in norm[k])

    diag_col = max(diag_cols, key=score)
    labels: dict[str, int] = {}
    conflicting: set[str] = set()
    missing, other = 0, set()
    for r in body:
        if code_col >= len(r) or not r[code_col].strip():
            continue
        code = lesion_code(r[code_col])
        value = r[diag_col].strip() if diag_col < len(r) else ""
        label = diagnosis_label(value) if value else None
        if label is None:
            missing += 1
            if value:
                other.add(value)
            continue
        if labels.setdefault(code, label) != label:
            conflicting.add(code)
    for code in conflicting:
        del labels[code]
    notes = []
    if missing:
        extra = f" (other values: {', '.join(sorted(other))})" if other else ""
        notes.append(
            f"piccolo: dropped {missing} metadata row(s) without a Hyperplasia/Adenoma/Adenocarcinoma diagnosis{extra}"
        )
    if conflicting:
        notes.append(f"piccolo: dropped lesion(s) {', '.join(sorted(conflicting))}: rows with two different diagnoses")
    notes.append(f"piccolo: diagnosis from column {header[diag_col]!r}")
    return labels, notes


def find_base(root: Path) -> Path | None:
    """The folder holding the split folders: ``root`` or one level below."""
    for cand in [root, *subdirs(root)]:
        if any((cand / d).is_dir() for d in SPLIT_DIRS):
            return cand
    return None


def polyp_dir(base: Path, split_dir: str) -> Path | None:
    for cand in (base / split_dir / "polyps", base / split_dir / split_dir / "polyps"):
        if cand.is_dir():
            return cand
    return None


def find_metadata(base: Path, root: Path) -> Path:
    for folder in dict.fromkeys([base, root]):
        hits = sorted(p for p in folder.glob("*.csv") if p.name.casefold().startswith("clinical metadata"))
        if hits:
            return hits[0]
    raise DataError(
        f"{base}: no 'clinical metadata_release0.1.csv' found (looked in {base} and {root}). PICCOLO labels come "
        "from that file; copy it from the release next to the train/ folder."
    )


def load_piccolo(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "PICCOLO", LAYOUT)
    base = find_base(root)
    if base is None:
        raise DataError(
            f"{root}: no train/, validation/ or test/ folder found (also looked one level down). PICCOLO is read "
            f"in its published layout {LAYOUT}."
        )
    labels, notes = read_clinical_csv(find_metadata(base, root))
    entries: list[Entry] = []
    unnamed: list[Path] = []
    no_label: dict[str, int] = {}
    for split_dir, split in SPLIT_DIRS.items():
        pdir = polyp_dir(base, split_dir)
        if pdir is None:
            continue
        for f in list_files(pdir):
            m = FRAME.match(f.name)
            if m is None:
                unnamed.append(f)
                continue
            code = lesion_code(m.group(1))
            if code not in labels:
                no_label[code] = no_label.get(code, 0) + 1
                continue
            entries.append(Entry(path=f, modality="", label=labels[code], rel=f.name, lesion=code, split=split))
    if not entries:
        raise DataError(
            f"{base}: no labelled frame found in {{train,validation,test}}/polyps/. Expected the layout {LAYOUT}."
        )
    if unnamed:
        notes.append(f"piccolo: ignored {len(unnamed)} file(s) not named NNN_VPk_frameFFFF (e.g. {unnamed[0]})")
    if no_label:
        notes.append(
            f"piccolo: dropped {sum(no_label.values())} frame(s) of lesion(s) {', '.join(sorted(no_label))} "
            "without a usable diagnosis"
        )
    for n in notes:
        log_warning(n)
    return build_raw(
        entries,
        CLASSES,
        options,
        root=base,
        layout="piccolo",
        student_modality=WLI,
        teacher_modality=NBI,
        notes=notes,
        images_fn=modality_assigner("piccolo", base, options, notes),
        modality_hint="Check the modalities: pass --modality-list FILE (CSV file,modality).",
    )
