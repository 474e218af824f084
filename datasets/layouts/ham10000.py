"""HAM10000 (Tschandl, Rosendahl & Kittler, Sci. Data 2018; the ISIC 2018 task 3 training set).

Layout read (``--data ham10000 --data-root R`` reads ``R/ham10000``)::

    <root>/HAM10000_metadata.csv                  lesion_id,image_id,dx,dx_type,age,sex,localization
    <root>/HAM10000_images_part_1/ISIC_0024306.jpg
    <root>/HAM10000_images_part_2/ISIC_0032258.jpg

The metadata file may also sit one folder below the root, and may be the Dataverse's
tab-separated ``HAM10000_metadata.tab``. The ISIC 2018 challenge release of the same
images is read too: ``ISIC2018_Task3_Training_GroundTruth.csv`` (one-hot MEL, NV, BCC,
AKIEC, BKL, DF, VASC) with ``ISIC2018_Task3_Training_LesionGroupings.csv``
(``image,lesion_id``) and ``ISIC2018_Task3_Training_Input/``. Images are found by file stem (``image_id``)
anywhere below the root, so the two part folders, a single merged folder and the
Kaggle copy (which ships each part twice, upper- and lower-case) all work; a stem found
twice is read from its first path in sorted order.

* **Classes** (the ``dx`` column), in the order of the suite's synthetic twin (most to
  fewest images): nv, mel, bkl, bcc, akiec, vasc, df. Rows with another ``dx`` are
  dropped with a note.
* **Lesion id**: ``lesion_id`` (``HAM_0000118``); the 10,015 images show 7,470 lesions,
  several photographed more than once, so splits are drawn by lesion (the release has
  no official split; the catalogue draws class-stratified lesion-level splits).
* **Modality**: one, ``derm`` (dermoscopy): the ``same`` regime only.

Rows whose image file is missing are dropped (counted in the notes); images on disk
that the CSV does not name are ignored.
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
CLASSES = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
ISIC2018_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC2018_GROUPS = "ISIC2018_Task3_Training_LesionGroupings.csv"
LAYOUT = (
    "<root>/HAM10000_metadata.csv (columns lesion_id,image_id,dx) with the images under "
    "<root>/HAM10000_images_part_1/ and <root>/HAM10000_images_part_2/ as <image_id>.jpg"
)


def read_labels(root: Path, notes: list[str]) -> tuple[Path, list[dict[str, str]]]:
    """(label file, rows with ``image_id``, ``lesion_id``, ``dx``) from HAM10000_metadata.csv, or
    from the ISIC 2018 task 3 ground truth (one-hot) and lesion groupings when that is what is there."""
    meta = find_file(root, METADATA_NAMES)
    if meta is not None:
        rows = read_table(meta)
        require_columns(meta, rows, ("lesion_id", "image_id", "dx"))
        return meta, rows
    truth = find_file(root, [ISIC2018_TRUTH])
    if truth is None:
        raise missing_file_error(
            root, "HAM10000_metadata.csv", "HAM10000", LAYOUT + f" (or the ISIC 2018 release's {ISIC2018_TRUTH})"
        )
    table = read_table(truth)
    require_columns(truth, table, ("image",))
    columns = [c for c in table[0] if c != "image"]
    groups = find_file(root, [ISIC2018_GROUPS])
    lesion_of: dict[str, str] = {}
    if groups is None:
        note(
            notes,
            f"ham10000: {ISIC2018_GROUPS} not found; every image is its own lesion, so images of one lesion "
            "may fall into different splits. Add the lesion groupings (or HAM10000_metadata.csv).",
        )
    else:
        grouping = read_table(groups)
        require_columns(groups, grouping, ("image", "lesion_id"))
        lesion_of = {r["image"]: r["lesion_id"] for r in grouping}
    rows = []
    for r in table:
        hot = [c for c in columns if positive(r.get(c, ""))]
        dx = hot[0].casefold() if len(hot) == 1 else ""
        rows.append({"image_id": r["image"], "lesion_id": lesion_of.get(r["image"], ""), "dx": dx})
    notes.append(f"ham10000: labels from the ISIC 2018 task 3 release ({truth.name})")
    return truth, rows



def load(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "HAM10000", LAYOUT)
    notes: list[str] = []
    meta, rows = read_labels(root, notes)
    images, repeats = index_images(root)
    if repeats:
        note(notes, f"ham10000: {repeats} image file(s) repeat a file name seen earlier; the first copy is read", False)

    label_of = {c: k for k, c in enumerate(CLASSES)}
    lesion_label: dict[str, int] = {}
    entries: list[Entry] = []
    other: dict[str, int] = {}
    missing = 0
    seen: set[str] = set()
    for row in rows:
        image_id, dx = row["image_id"], row["dx"].casefold()
        if not image_id or image_id in seen:
            continue
        seen.add(image_id)
        if dx not in label_of:
            other[dx] = other.get(dx, 0) + 1
            continue
        path = images.get(image_id)
        if path is None:
            missing += 1
            continue
        lesion = row["lesion_id"] or image_id
        label = label_of[dx]
        if lesion_label.setdefault(lesion, label) != label:
            raise DataError(
                f"{meta}: lesion {lesion!r} has images with dx {CLASSES[lesion_label[lesion]]!r} and {dx!r}; "
                "a lesion must have one diagnosis. Fix the lesion_id or dx column."
            )
        entries.append(Entry(path=path, modality=MODALITY, label=label, rel=image_id, lesion=lesion))
    if other:
        listed = ", ".join(f"{k or '(empty)'} x{v}" for k, v in sorted(other.items()))
        note(notes, f"ham10000: dropped {sum(other.values())} row(s) with a dx outside {', '.join(CLASSES)}: {listed}")
    if missing:
        note(notes, f"ham10000: {missing} image(s) named in {meta.name} were not found below {root}; dropped")
    return finish(entries, CLASSES, options, root=root, name="ham10000", layout=LAYOUT, notes=notes, modality=MODALITY)
