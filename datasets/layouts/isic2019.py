"""ISIC 2019 training set (BCN20000, HAM10000 and MSK images; Codella et al. 2018, Combalia et al. 2019).

Layout read (``--data isic2019 --data-root R`` reads ``R/isic2019``)::

    <root>/ISIC_2019_Training_GroundTruth.csv      image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    <root>/ISIC_2019_Training_Metadata.csv         optional: image,age_approx,anatom_site_general,lesion_id,sex
    <root>/ISIC_2019_Training_Input/ISIC_0000000.jpg

The CSV files may also sit one folder below the root; images are found by file stem
anywhere below the root (the archive nests ``ISIC_2019_Training_Input/`` twice in some
copies).

* **Classes**: the one-hot columns in file order. A column without a single positive
  row is dropped with a note: the training set's ``UNK`` column is all zero, which
  leaves the 8 published classes MEL, NV, BCC, AK, BKL, DF, VASC, SCC. Rows with no
  positive or with two are dropped with a note.
* **Lesion id**: the metadata's ``lesion_id`` where it is given (the HAM10000 and MSK
  parts carry one; BCN20000 images mostly do not), else the image id. Without the
  metadata file every image is its own lesion and a note says so: images of one lesion
  may then land in different splits.
* **Split**: none is published for the labelled images; the catalogue draws
  class-stratified lesion-level splits.
* **Modality**: one, ``derm``: the ``same`` regime only.
"""

from __future__ import annotations

from pathlib import Path

from ..base import DataError, LoadOptions, RawDataset
from .kit import (
    DERMOSCOPY,
    Entry,
    check_root,
    find_file,
    finish,
    index_images,
    missing_file_error,
    note,
    positive,
    read_table,
    require_columns,
)

MODALITY = DERMOSCOPY
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
LAYOUT = (
    f"<root>/{GROUND_TRUTH} (column image plus one-hot class columns), optional <root>/{METADATA} "
    "(columns image,lesion_id) and the images as <root>/ISIC_2019_Training_Input/<image>.jpg"
)


def read_lesions(path: Path) -> dict[str, str]:
    """image -> lesion_id from the metadata CSV (rows without a lesion_id are left out)."""
    rows = read_table(path)
    require_columns(path, rows, ("image", "lesion_id"))
    return {r["image"]: r["lesion_id"] for r in rows if r["image"] and r["lesion_id"]}


def load(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "ISIC 2019", LAYOUT)
    truth = find_file(root, [GROUND_TRUTH])
    if truth is None:
        raise missing_file_error(root, GROUND_TRUTH, "ISIC 2019", LAYOUT)
    rows = read_table(truth)
    require_columns(truth, rows, ("image",))
    columns = [c for c in rows[0] if c != "image"]
    if len(columns) < 2:
        raise DataError(f"{truth}: expected one-hot class columns after 'image' (MEL, NV, ...); found {columns}.")

    notes: list[str] = []
    hot = {r["image"]: [c for c in columns if positive(r.get(c, ""))] for r in rows if r["image"]}
    used = [c for c in columns if any(c in cs for cs in hot.values())]
    dropped_cols = [c for c in columns if c not in used]
    if dropped_cols:
        note(notes, f"isic2019: class column(s) {', '.join(dropped_cols)} have no image and are left out", False)
    classes = used

    meta = find_file(root, [METADATA])
    lesions: dict[str, str] = {}
    if meta is None:
        note(
            notes,
            f"isic2019: {METADATA} not found; every image is its own lesion, so images of one lesion may "
            "fall into different splits. Add the metadata file to split by lesion_id.",
        )
    else:
        lesions = read_lesions(meta)

    images, repeats = index_images(root)
    if repeats:
        note(notes, f"isic2019: {repeats} image file(s) repeat a file name seen earlier; the first copy is read", False)
    label_of = {c: k for k, c in enumerate(classes)}
    entries: list[Entry] = []
    unlabelled, multi, missing = 0, 0, 0
    for image_id, positives in hot.items():
        if not positives:
            unlabelled += 1
            continue
        if len(positives) > 1:
            multi += 1
            continue
        path = images.get(image_id)
        if path is None:
            missing += 1
            continue
        entries.append(
            Entry(
                path=path,
                modality=MODALITY,
                label=label_of[positives[0]],
                rel=image_id,
                lesion=lesions.get(image_id, image_id),
            )
        )
    labels_of_lesion: dict[str, set[int]] = {}
    for e in entries:
        labels_of_lesion.setdefault(e.lesion, set()).add(e.label)
    mixed = {lesion for lesion, labs in labels_of_lesion.items() if len(labs) > 1}
    if mixed:
        before = len(entries)
        entries = [e for e in entries if e.lesion not in mixed]
        note(
            notes,
            f"isic2019: dropped {before - len(entries)} image(s) of {len(mixed)} lesion(s) whose images carry "
            f"two diagnoses (e.g. {sorted(mixed)[0]})",
        )
    if unlabelled:
        note(notes, f"isic2019: dropped {unlabelled} row(s) of {truth.name} without a positive class")
    if multi:
        note(notes, f"isic2019: dropped {multi} row(s) of {truth.name} with more than one positive class")
    if missing:
        note(notes, f"isic2019: {missing} image(s) named in {truth.name} were not found below {root}; dropped")
    if meta is not None:
        grouped = sum(1 for e in entries if e.lesion != e.rel)
        notes.append(f"isic2019: {grouped} of {len(entries)} images carry a lesion_id; the others are their own lesion")
    return finish(entries, classes, options, root=root, name="isic2019", layout=LAYOUT, notes=notes, modality=MODALITY)
