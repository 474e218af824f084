"""APTOS 2019 Blindness Detection (Kaggle; Asia Pacific Tele-Ophthalmology Society), training set.

Layout read (``--data aptos --data-root R`` reads ``R/aptos``)::

    <root>/train.csv                     id_code,diagnosis
    <root>/train_images/<id_code>.png

``train.csv`` may also sit one folder below the root, and the images anywhere below
the root (found by file stem; ``train_images/`` first). ``test.csv`` and
``test_images/`` carry no labels and are not read.

* **Classes**: the diabetic-retinopathy grade in ``diagnosis``, 0 (no DR), 1 (mild),
  2 (moderate), 3 (severe), 4 (proliferative), named ``"0"`` .. ``"4"`` as in the suite's
  synthetic twin. Rows with another value are dropped with a note.
* **Lesion id**: the ``id_code``: the release has one image per eye and no patient id.
* **Split**: none; the catalogue draws class-stratified splits by lesion (= image).
* **Modality**: one, ``fundus``: the ``same`` regime only.
"""

from __future__ import annotations

from pathlib import Path

from ..base import LoadOptions, RawDataset
from .kit import (
    Entry,
    check_root,
    find_file,
    finish,
    index_images,
    missing_file_error,
    note,
    read_table,
    require_columns,
)

MODALITY = "fundus"
CLASSES = ["0", "1", "2", "3", "4"]
LAYOUT = "<root>/train.csv (columns id_code,diagnosis) with the images as <root>/train_images/<id_code>.png"


def load(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "APTOS 2019", LAYOUT)
    csv_path = find_file(root, ["train.csv"])
    if csv_path is None:
        raise missing_file_error(root, "train.csv", "APTOS 2019", LAYOUT)
    rows = read_table(csv_path)
    require_columns(csv_path, rows, ("id_code", "diagnosis"))

    images: dict[str, Path] = {}
    for folder in (csv_path.parent / "train_images", root):
        if folder.is_dir():
            found, _ = index_images(folder)
            for stem, path in found.items():
                images.setdefault(stem, path)

    notes: list[str] = []
    label_of = {c: k for k, c in enumerate(CLASSES)}
    entries: list[Entry] = []
    other: dict[str, int] = {}
    missing = 0
    seen: set[str] = set()
    for row in rows:
        id_code, grade = row["id_code"], row["diagnosis"]
        if not id_code or id_code in seen:
            continue
        seen.add(id_code)
        key = grade[:-2] if grade.endswith(".0") else grade
        if key not in label_of:
            other[grade] = other.get(grade, 0) + 1
            continue
        path = images.get(id_code)
        if path is None:
            missing += 1
            continue
        entries.append(Entry(path=path, modality=MODALITY, label=label_of[key], rel=id_code, lesion=id_code))
    if other:
        listed = ", ".join(f"{k or '(empty)'} x{v}" for k, v in sorted(other.items()))
        note(notes, f"aptos: dropped {sum(other.values())} row(s) with a diagnosis outside 0-4: {listed}")
    if missing:
        note(notes, f"aptos: {missing} image(s) named in {csv_path.name} were not found below {root}; dropped")
    return finish(entries, CLASSES, options, root=root, name="aptos", layout=LAYOUT, notes=notes, modality=MODALITY)
