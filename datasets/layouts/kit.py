"""The kit every dataset layout is built from: files to :class:`~datasets.base.RawDataset`.

- **Files and folders**: visible files below a folder (hidden files, ``Thumbs.db`` and
  ``desktop.ini`` skipped), the root check whose error shows the expected layout, one
  :class:`Entry` per image file before decoding.
- **Modality folders and class folders**: ``wli``/``nbi`` folder names in any spelling,
  class folders per modality, every class in every modality, entries from a
  ``<modality>/<class>/<image>`` tree and pairs by equal path below the modality folder.
- **Decoding**: :func:`build_raw` decodes the entries, keeps pairs whose two images
  decode, and checks that each modality has every class; :func:`finish` for a
  single-modality layout. Modalities called per image from a list or by colour
  (:func:`modality_assigner`).
- **Label tables of published releases**: a CSV or TSV found in the root or one folder
  below it, its required columns, images indexed by file stem, one-hot cells.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ..base import DataError, ImageTable, LoadOptions, RawDataset
from ..images import NBI_RED_RATIO, load_images, log_warning, nbi_by_colour

WLI, NBI, DERMOSCOPY = "wli", "nbi", "derm"
_WLI_NAMES = {"wl", "wli", "wle", "whitelight", "whitelightimaging", "whitelightendoscopy", "white"}
_NBI_NAMES = {"nbi", "narrowband", "narrowbandimaging", "nbimaging"}
JUNK_FILES = {"thumbs.db", "desktop.ini"}
GENERIC_LAYOUT = "<root>/{wli,nbi}/<class>/<image> (or <root>/<class>/<image> for one modality)"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


# ----------------------------------------------------------------- files and folders
def modality_of(folder_name: str) -> str | None:
    """``wli``/``nbi`` for a modality folder name (any case and separator), else None."""
    key = re.sub(r"[\s_\-.]+", "", folder_name.lower())
    if key in _WLI_NAMES:
        return WLI
    if key in _NBI_NAMES:
        return NBI
    return None


def lesion_from_name(rel: str) -> str:
    """Lesion id from a path below the class folder: the sub-folder path when there is one, else the
    file-name prefix before the first ``-``, else the stem."""
    p = PurePosixPath(rel)
    if len(p.parts) > 1:
        return str(p.parent)
    stem = p.stem
    return stem.split("-", 1)[0] if "-" in stem and stem.split("-", 1)[0] else stem


def visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower() not in JUNK_FILES


def list_files(folder: Path) -> list[Path]:
    """Every visible regular file below ``folder``, sorted, hidden folders skipped."""
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or not visible(p):
            continue
        if p.is_file():
            out.append(p)
    return out


def subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and visible(p))


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



# ----------------------------------------------------------------- modality and class folders
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


# ----------------------------------------------------------------- decoding
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


def note(notes: list[str], message: str, warn: bool = True) -> None:
    notes.append(message)
    if warn:
        log_warning(message)


def finish(
    entries: list[Entry],
    classes: list[str],
    options: LoadOptions,
    *,
    root: Path,
    name: str,
    layout: str,
    notes: list[str],
    modality: str,
) -> RawDataset:
    """Decode the entries of a single-modality layout ``name`` into a :class:`RawDataset`."""
    if not entries:
        raise DataError(f"{root}: none of the images the CSV names was found. Expected the {name} layout {layout}.")
    return build_raw(
        entries,
        classes,
        options,
        root=root,
        layout=name,
        student_modality=modality,
        teacher_modality=modality,
        notes=notes,
    )


# ----------------------------------------------------------------- modalities per image
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


# ----------------------------------------------------------------- label tables of published releases
def find_file(root: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` (case-insensitive) in ``root`` or one folder below it."""
    wanted = [n.casefold() for n in names]
    for folder in [root, *subdirs(root)]:
        by_name = {p.name.casefold(): p for p in folder.iterdir() if p.is_file()}
        for name in wanted:
            if name in by_name:
                return by_name[name]
    return None


def missing_file_error(root: Path, name: str, dataset: str, layout: str) -> DataError:
    return DataError(
        f"{root}: {name} not found (looked in {root} and its sub-folders one level down). The {dataset} "
        f"layout is {layout}. Put {name} from the official release there, or use folder:/path for the "
        "generic layout."
    )


def read_table(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV (or tab-separated) file as dicts with stripped keys and values."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if first.count("\t") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    if not reader.fieldnames:
        raise DataError(f"{path} is empty; restore it from the official release.")
    rows = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if any(clean.values()):
            rows.append(clean)
    return rows


def require_columns(path: Path, rows: list[dict[str, str]], columns: Iterable[str]) -> None:
    header = list(rows[0]) if rows else []
    missing = [c for c in columns if c not in header]
    if missing or not rows:
        raise DataError(
            f"{path}: expected columns {', '.join(columns)}; "
            + (f"missing {', '.join(missing)} (found {', '.join(header)})." if rows else "the file has no rows.")
            + " Use the file from the official release unchanged."
        )


def index_images(folder: Path) -> tuple[dict[str, Path], int]:
    """(file stem -> path, number of stems seen more than once) for image files below ``folder``.

    Hidden files and folders are skipped; on a repeated stem the first path in sorted
    order wins.
    """
    found: dict[str, Path] = {}
    repeats = 0
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel) or p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        if p.stem in found:
            repeats += 1
            continue
        found[p.stem] = p
    return found, repeats



def positive(value: str) -> bool:
    """A one-hot cell that is set (``1``, ``1.0``)."""
    try:
        return float(value) > 0.5
    except ValueError:
        return False

