"""PolypsSet (KUMC; Li et al., PLoS ONE 2021; Harvard Dataverse doi:10.7910/DVN/FCBUOR).

Layout read (``--data polypset --data-root R`` reads ``R/polypset``, or ``R/polypsset``
when only that is there; ``--data polypsset``, the release's own spelling, is accepted
as another name for ``polypset``, and its runs are filed under ``polypset``)::

    <root>/train2019/Image/<N>.jpg           <root>/train2019/Annotation/<N>.xml
    <root>/val2019/Image/<seq>/<n>.jpg       <root>/val2019/Annotation/<seq>/<n>.xml
    <root>/test2019/Image/<seq>/<n>.jpg      <root>/test2019/Annotation/<seq>/<n>.xml

``<root>`` may also hold the unpacked ``PolypsSet/`` folder one level down.

* **Labels** from the Pascal-VOC XML ``<object><name>``: **0 = hyperplastic,
  1 = adenoma** (``adenomatous`` in the XML; 1 = neoplastic, as for every polyp set
  here). Frames with no ``<object>`` (negative frames), with objects of both classes, or
  with no XML are dropped, with counts. An XML that cannot be parsed is a bad input,
  handled like an unreadable image (``--on-bad-image``).
* **Lesion id = sequence**: the sequence folder (``val2019/3``). The sequence numbers are
  video ids, not classes. ``train2019`` is flat in the release, so its frames carry no
  sequence id and each frame is its own lesion id there (``train2019/<N>``); this is
  harmless because the split is the official one.
* **Split**: official, from the folder (``train2019`` / ``val2019`` / ``test2019``).
* **Modality**: as for PICCOLO, from ``--modality-list`` or the colour heuristic
  (NBI frames come from the GLRC/UCI part of the set), with a printed count.

Regimes: no frame has a twin, so D_p is empty: PolypsSet serves ``unpaired`` (``all``
equal to it) and ``same``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from ..base import DataError, LoadOptions, RawDataset
from ..images import log_warning
from .kit import NBI, WLI, Entry, build_raw, check_root, list_files, modality_assigner, subdirs

CLASSES = ["hyperplastic", "adenoma"]
XML_NAMES = {"hyperplastic": 0, "hyperplasia": 0, "adenomatous": 1, "adenoma": 1}
SPLIT_DIRS = {"train2019": "train", "val2019": "val", "test2019": "test"}
LAYOUT = "<root>/{train2019,val2019,test2019}/{Image,Annotation}/[<sequence>/]<n>.{jpg,xml}"


def find_base(root: Path) -> Path | None:
    for cand in [root, *subdirs(root)]:
        if any((cand / d / "Image").is_dir() for d in SPLIT_DIRS):
            return cand
    return None


def xml_label(path: Path) -> int | str | None:
    """Class index, None for a negative frame, ``"both"`` for both classes; raises ET.ParseError."""
    names = {
        XML_NAMES.get((obj.findtext("name") or "").strip().casefold(), -1) for obj in ET.parse(path).iter("object")
    }
    names.discard(-1)
    if not names:
        return None
    if len(names) > 1:
        return "both"
    return names.pop()


def load_polypset(root: Path, options: LoadOptions) -> RawDataset:
    root = check_root(root, "PolypsSet", LAYOUT)
    base = find_base(root)
    if base is None:
        raise DataError(
            f"{root}: no train2019/Image, val2019/Image or test2019/Image folder found (also looked one level "
            f"down). PolypsSet is read in its published layout {LAYOUT}."
        )
    entries: list[Entry] = []
    counts: Counter[str] = Counter()
    bad_xml: list[str] = []
    for split_dir, split in SPLIT_DIRS.items():
        image_dir, ann_dir = base / split_dir / "Image", base / split_dir / "Annotation"
        if not image_dir.is_dir():
            continue
        for f in list_files(image_dir):
            rel = f.relative_to(image_dir)
            xml = (ann_dir / rel).with_suffix(".xml")
            if not xml.is_file():
                counts["no annotation XML"] += 1
                continue
            try:
                label = xml_label(xml)
            except ET.ParseError as err:
                bad_xml.append(f"{xml}: {err}")
                continue
            if label is None:
                counts["no polyp object (negative frame)"] += 1
                continue
            if label == "both":
                counts["objects of both classes"] += 1
                continue
            lesion = f"{split_dir}/{rel.parent.as_posix()}" if rel.parent.parts else f"{split_dir}/{rel.stem}"
            entries.append(Entry(path=f, modality="", label=int(label), rel=rel.as_posix(), lesion=lesion, split=split))
    if bad_xml:
        listed = "\n  ".join(bad_xml[:20])
        if options.on_bad_image == "error":
            raise DataError(
                f"{len(bad_xml)} annotation XML file(s) cannot be parsed:\n  {listed}\nRestore them from the "
                "release, or pass --on-bad-image skip to leave their frames out with a warning."
            )
        for line in bad_xml:
            log_warning(f"skipped frame of unparsable annotation {line}")
    notes = [f"polypset: dropped {n} frame(s) with {why}" for why, n in sorted(counts.items())]
    if bad_xml:
        notes.append(f"polypset: skipped {len(bad_xml)} frame(s) whose annotation XML cannot be parsed")
    for n in notes:
        log_warning(n)
    if not entries:
        raise DataError(f"{base}: no frame with an adenomatous/hyperplastic annotation found. Expected {LAYOUT}.")
    return build_raw(
        entries,
        CLASSES,
        options,
        root=base,
        layout="polypset",
        student_modality=WLI,
        teacher_modality=NBI,
        notes=notes,
        images_fn=modality_assigner("polypset", base, options, notes),
        modality_hint="Check the modalities: pass --modality-list FILE (CSV file,modality).",
    )

