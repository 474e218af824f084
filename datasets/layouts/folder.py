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
import hashlib
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .base import DataError, ImageTable, LoadOptions, RawDataset
from .catalog import register_layout
from .images import NBI_RED_RATIO, load_images, log_warning, nbi_by_colour
from .splits import MIN_LESIONS_PER_CLASS

WLI, NBI, SINGLE = "wli", "nbi", "img"
_WLI_NAMES = {"wl", "wli", "wle", "whitelight", "whitelightimaging", "whitelightendoscopy", "white"}
_NBI_NAMES = {"nbi", "narrowband", "narrowbandimaging", "nbimaging"}
JUNK_FILES = {"thumbs.db", "desktop.ini"}
PAIRS_FILE = "pairs.csv"
CLASSES_FILE = "classes.txt"
GENERIC_LAYOUT = "<root>/{wli,nbi}/<class>/<image> (or <root>/<class>/<image> for one modality)"


def modality_of(folder_name: str) -> str | None:
    """``wli``/``nbi`` for a modality folder name (any case and separator), else None."""
    key = re.sub(r"[\s_\-.]+", "", folder_name.lower())
    if key in _WLI_NAMES:
        return WLI
    if key in _NBI_NAMES:
        return NBI
    return None


def lesion_from_name(rel: str) -> str:
    """Lesion id from a path below the class folder (rules in the module docstring)."""
    p = PurePosixPath(rel)
    if len(p.parts) > 1:
        return str(p.parent)
    stem = p.stem
    return stem.split("-", 1)[0] if "-" in stem and stem.split("-", 1)[0] else stem


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower() not in JUNK_FILES


def list_files(folder: Path) -> list[Path]:
    """Every visible regular file below ``folder``, sorted, hidden folders skipped."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not _visible(p):
            continue
        if p.is_file():
            out.append(p)
    return out


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))


@dataclass
class Entry:
    """One image file before decoding."""

    path: Path
    modality: str
    label: int
    rel: str  # path below the modality folder, ``<class folder>/<file>``: the pairing key
    lesion: str
    split: str = ""


def check_root(root: Path, layout: str, expected: str) -> Path:
    """The root as an existing folder, or a DataError that shows the expected layout."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(
            f"data root {root} does not exist. Put the {layout} data there in the layout "
            f"{expected}, or point --data / --data-root at the folder that holds it."
        )
    if not root.is_dir():
        raise DataError(f"data root {root} is a file, not a folder. Point --data / --data-root at a folder.")
    return root


def find_modality_dirs(root: Path) -> tuple[dict[str, Path], list[Path]]:
    """(modality -> folder, other folders) among the root's sub-folders."""
    found: dict[str, Path] = {}
    others = []
    for d in subdirs(root):
        mod = modality_of(d.name)
        if mod is None:
            others.append(d)
            continue
        if mod in found:
            raise DataError(
                f"{root} has two {mod.upper()} folders, {found[mod].name}/ and {d.name}/. "
                "Merge them into one folder or rename one."
            )
        found[mod] = d
    return found, others


def _describe(root: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir() if _visible(p))
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


def scan_classes(
    mod_dirs: dict[str, Path], class_map: dict[str, str] | None = None
) -> tuple[dict[str, dict[str, Path]], list[str]]:
    """Class folders per modality, keyed by canonical class name.

    ``class_map`` maps folder names (casefolded) to canonical names (published layouts
    with several spellings); folders absent from it are kept under their own name
    unless ``class_map`` is given, in which case they are an error.
    """
    per_mod: dict[str, dict[str, Path]] = {}
    spelling: dict[str, str] = {}
    for mod, mdir in sorted(mod_dirs.items(), key=lambda kv: kv[0] != WLI):  # WLI spelling wins
        per_mod[mod] = {}
        for cdir in subdirs(mdir):
            key = cdir.name.casefold()
            if class_map is not None:
                if key not in class_map:
                    raise DataError(
                        f"{cdir}: unexpected class folder. Expected one of "
                        f"{', '.join(sorted(set(class_map)))}; move or remove it."
                    )
                key = class_map[key]
            name = spelling.setdefault(key, class_map[cdir.name.casefold()] if class_map else cdir.name)
            if name in per_mod[mod]:
                raise DataError(
                    f"{mdir} has two folders for class {name!r} ({per_mod[mod][name].name}/ and {cdir.name}/). "
                    "Merge them."
                )
            per_mod[mod][name] = cdir
    names = sorted({n for classes in per_mod.values() for n in classes}, key=lambda n: (n.casefold(), n))
    return per_mod, names


def check_classes_in_every_modality(per_mod: dict[str, dict[str, Path]], names: list[str]) -> None:
    for name in names:
        have = [m for m in per_mod if name in per_mod[m]]
        if len(have) != len(per_mod):
            miss = [m for m in per_mod if m not in have]
            path = per_mod[have[0]][name]
            raise DataError(
                f"class {name!r} is in {', '.join(have)} only ({path}); the NBI teacher and the WLI "
                f"student need every class in both modalities. Add {', '.join(miss)} images of "
                f"{name!r} (a {name}/ folder in the {miss[0]} folder) or remove {path}."
            )


def entries_from_tree(
    per_mod: dict[str, dict[str, Path]], classes: list[str], mod_dirs: dict[str, Path]
) -> list[Entry]:
    entries = []
    label_of = {c: k for k, c in enumerate(classes)}
    for mod in sorted(per_mod):
        for cname, cdir in sorted(per_mod[mod].items()):
            for f in list_files(cdir):
                rel_in_class = f.relative_to(cdir).as_posix()
                entries.append(
                    Entry(
                        path=f,
                        modality=mod,
                        label=label_of[cname],
                        rel=f"{cname.casefold()}/{rel_in_class}",
                        lesion=lesion_from_name(rel_in_class),
                    )
                )
    return entries


def pairs_by_name(entries: list[Entry]) -> list[tuple[int, int]]:
    """(WLI entry, NBI entry) with the same ``<class>/<file>`` path below the modality folder."""
    nbi = {e.rel: i for i, e in enumerate(entries) if e.modality == NBI}
    return [(i, nbi[e.rel]) for i, e in enumerate(entries) if e.modality == WLI and e.rel in nbi]


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


def file_list_hash(root: Path, paths: list[Path]) -> str:
    """sha256 of the file list (paths relative to the root, sizes): provenance of a real dataset."""
    h = hashlib.sha256()
    for p in sorted(paths):
        try:
            size = p.stat().st_size
        except OSError:
            size = -1
        h.update(f"{p.relative_to(root).as_posix()}\t{size}\n".encode())
    return h.hexdigest()


def build_raw(
    entries: list[Entry],
    classes: list[str],
    options: LoadOptions,
    *,
    root: Path,
    layout: str,
    student_modality: str,
    teacher_modality: str,
    pairs: list[tuple[int, int]] | None = None,
    notes: list[str] | None = None,
    images_fn: Callable[[list[Entry], np.ndarray, np.ndarray], tuple[list[Entry], np.ndarray, np.ndarray]]
    | None = None,
    modality_hint: str = "",
) -> RawDataset:
    """Decode the entries and assemble the :class:`RawDataset` (shared by every layout).

    ``images_fn`` may post-process ``(entries, images, twin)`` after decoding (e.g. assign
    modalities by colour) and returns them, possibly changed.
    """
    notes = notes if notes is not None else []  # shared with images_fn, which may add to it
    if not entries:
        raise DataError(f"{root}: no image files found. Expected the layout {GENERIC_LAYOUT}.")
    paths = [e.path for e in entries]
    images, kept, warnings = load_images(paths, options)
    for w in warnings:
        log_warning(w)
    # Per-file lines go to stderr only; the count and cache repairs become notes for the report.
    notes += [w for w in warnings if not w.startswith("skipped ") or "image file(s) that cannot be decoded" in w]
    new_index = np.full(len(entries), -1, dtype=np.int64)
    new_index[kept] = np.arange(int(kept.sum()))
    entries = [e for e, k in zip(entries, kept, strict=True) if k]

    twin = np.full(len(entries), -1, dtype=np.int64)
    lost = 0
    for i, j in pairs or []:
        a, b = new_index[i], new_index[j]
        if a < 0 or b < 0:
            lost += 1
            continue
        twin[a], twin[b] = b, a
    if lost:
        notes.append(f"{lost} pair(s) lost an image that could not be decoded; their other image is kept unpaired")
        log_warning(notes[-1])

    if images_fn is not None:
        entries, images, twin = images_fn(entries, images, twin)

    table = ImageTable(
        images=images,
        labels=np.array([e.label for e in entries], dtype=np.int64),
        lesion=np.array([e.lesion for e in entries], dtype=str),
        modality=np.array([e.modality for e in entries], dtype=str),
        source=np.array([str(e.path) for e in entries], dtype=str),
        twin=twin,
        split=np.array([e.split for e in entries], dtype=str),
    )
    for mod in sorted({student_modality, teacher_modality}):
        labels_here = set(table.labels[table.modality == mod].tolist())
        for c, cname in enumerate(classes):
            if c not in labels_here:
                raise DataError(
                    f"{root}: no decodable {mod} image of class {cname!r}; the teacher and the student need "
                    f"every class in both modalities. Add readable {mod} images of {cname!r} or remove the class."
                    + (f" {modality_hint}" if modality_hint else "")
                )
    provenance = {
        "layout": layout,
        "root": str(root.resolve()),
        "files_sha256": file_list_hash(root, paths),
        "n_files": len(paths),
        "n_images": len(table),
        "n_pairs": int((twin >= 0).sum() // 2),
    }
    return RawDataset(
        table=table,
        classes=list(classes),
        student_modality=student_modality,
        teacher_modality=teacher_modality,
        provenance=provenance,
        notes=notes,
    )


MODALITY_LIST_HELP = (
    "a CSV with header file,modality: file is the image path relative to the dataset folder "
    "(or its bare name when unique), modality is wli or nbi (aliases such as WL, White_light accepted)"
)


def read_modality_list(path: Path, base: Path, entries: list[Entry]) -> list[str]:
    """Modality of every entry from a ``file,modality`` CSV (``--modality-list``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"modality list {path} not found. --modality-list takes {MODALITY_LIST_HELP}.")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        if "file" not in header or "modality" not in header:
            raise DataError(f"{path}: header must be file,modality; found {header or 'an empty file'}.")
        fcol, mcol = header.index("file"), header.index("modality")
        listed: dict[str, str] = {}
        for n, row in enumerate(reader, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) <= max(fcol, mcol):
                raise DataError(f"{path}: line {n} has {len(row)} column(s); expected file,modality.")
            mod = modality_of(row[mcol])
            if mod is None:
                raise DataError(f"{path}: line {n}: modality {row[mcol]!r} is neither wli nor nbi (or an alias).")
            listed[row[fcol].strip().replace("\\", "/").removeprefix("./")] = mod
    names = Counter(e.path.name for e in entries)
    out, missing = [], []
    for e in entries:
        rel = e.path.relative_to(base).as_posix()
        mod = listed.get(rel)
        if mod is None and names[e.path.name] == 1:
            mod = listed.get(e.path.name)
        if mod is None:
            missing.append(rel)
        out.append(mod or "")
    if missing:
        raise DataError(
            f"{path} gives no modality for {len(missing)} of {len(entries)} image(s), e.g. "
            f"{', '.join(missing[:3])}. Add a line per image ({MODALITY_LIST_HELP}), or leave out "
            "--modality-list to call modalities by the colour heuristic."
        )
    return out


def modality_assigner(
    dataset: str, base: Path, options: LoadOptions, notes: list[str]
) -> Callable[[list[Entry], np.ndarray, np.ndarray], tuple[list[Entry], np.ndarray, np.ndarray]]:
    """An ``images_fn`` for :func:`build_raw` setting WLI/NBI from the list or by colour.

    With ``options.modality_list`` each image's modality comes from that CSV; otherwise
    :func:`datasets.images.nbi_by_colour` decides, and one printed line (also kept in
    ``notes``) says how many frames it called NBI.
    """

    def assign(entries: list[Entry], images: np.ndarray, twin: np.ndarray):
        if options.modality_list is not None:
            mods = read_modality_list(Path(options.modality_list), base, entries)
            msg = f"{dataset}: modalities from {options.modality_list}: {mods.count(NBI)} NBI, {mods.count(WLI)} WLI"
        else:
            nbi = nbi_by_colour(images)
            mods = [NBI if x else WLI for x in nbi]
            msg = (
                f"{dataset}: colour heuristic called {int(nbi.sum())} of {len(nbi)} frames NBI "
                f"(mean R / mean(G,B) < {NBI_RED_RATIO} over non-black, non-specular pixels); "
                "pass --modality-list FILE (CSV file,modality) to set modalities explicitly"
            )
        log_warning(msg)
        notes.append(msg)
        for e, m in zip(entries, mods, strict=True):
            e.modality = m
        return entries, images, twin

    return assign


@register_layout("folder")
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
            if any(p.is_file() and _visible(p) for p in root.iterdir()):
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
