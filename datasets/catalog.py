"""Dataset names -> :class:`DatasetBundle`.

Resolution of ``--data NAME``:

1. ``folder:/path/to/root`` reads the generic layout at that path.
2. ``NAME:synthetic`` always renders the synthetic twin of ``NAME``.
3. ``NAME`` looks for real images at ``<data_root>/<NAME>`` (``--data-root`` or
   ``$KDBENCH_DATA``), read with the layout named ``NAME`` in :data:`LAYOUTS` (published
   layouts: PICCOLO, PolypsSet, HAM10000, ...) or the generic layout otherwise. When no
   real data is there and a synthetic twin of ``NAME`` exists, the twin is used, one
   line says so with how to point at real data, and the dataset id becomes
   ``NAME-synthetic``; ``require_real=True`` turns that into an error.

A name in :data:`ALIASES` is another spelling of a catalogue name: it is read as that
name (one line says so), its folder may carry either spelling, and its runs are filed
under the catalogue name.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import DataError, DatasetBundle, LoadOptions, RawDataset
from .images import check_duplicate_content
from .layouts import aptos, cpc_paired, folder, ham10000, isic2019, piccolo, polypset
from .splits import make_splits

LayoutLoader = Callable[[Path, LoadOptions], RawDataset]

LAYOUTS: dict[str, LayoutLoader] = {
    "folder": folder.load_folder,
    "aptos": aptos.load,
    "cpc_paired": cpc_paired.load_cpc_paired,
    "ham10000": ham10000.load,
    "isic2019": isic2019.load,
    "piccolo": piccolo.load_piccolo,
    "polypset": polypset.load_polypset,
}
# Other spellings of a catalogue name. PolypsSet's release spells it with a double s;
# the suite names it ``polypset`` (its synthetic twin, reports and run files).
ALIASES: dict[str, str] = {"polypsset": "polypset"}
DATA_ROOT_ENV = "KDBENCH_DATA"


def layouts() -> list[str]:
    return sorted(LAYOUTS)


def synthetic_names() -> list[str]:
    from .twins import TWINS

    return sorted(TWINS)


def synthetic_has_oracle(name: str) -> bool:
    """Whether the synthetic twin ``name`` has a WLI student (and so a WLI oracle)."""
    from .twins import TWINS

    return name in TWINS and TWINS[name].cross_modal


def known_names() -> list[str]:
    return sorted(set(synthetic_names()) | set(layouts()) - {"folder"})


@dataclass
class DataRequest:
    """Everything that decides which images a run sees.

    Attributes:
        name: catalogue name (see module docstring).
        data_root: folder holding real datasets (``None``: ``$KDBENCH_DATA`` if set).
        image_size: side of the decoded images.
        scale: fraction of the paper's split sizes for synthetic twins.
        min_class_images: floor per class and role for synthetic twins.
        data_seed: seed of rendering and of lesion-level splits (fixed across training
            seeds, so every seed is scored on the same test lesions).
        require_real: fail instead of falling back to a synthetic twin.
        on_bad_image: ``skip`` or ``error`` for unreadable files.
        cache_dir: decoded-image cache folder.
        modality_list: per-file modality CSV for layouts that need one.
        val_fraction, test_fraction: lesion fractions when the source has no official split.
        val_lesions, test_lesions: held-out lesions of a synthetic twin, sized for precision
            (``0``: the paper's fractions of the paired pool); real data keeps its own.
        oracle: factor k >= 2 (``0``: none) of extra WLI training lesions rendered for the
            WLI-oracle reference of a synthetic cross-modal twin (see
            :func:`datasets.synthetic.plan_twin`).
    """

    name: str
    data_root: str | None = None
    image_size: int = 32
    scale: float = 1.0
    min_class_images: int = 8
    data_seed: int = 0
    require_real: bool = False
    on_bad_image: str = "skip"
    cache_dir: str | None = None
    modality_list: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    val_lesions: int = 0
    test_lesions: int = 0
    oracle: int = 0


def _root(request: DataRequest) -> Path | None:
    root = request.data_root or os.environ.get(DATA_ROOT_ENV)
    return Path(root).expanduser() if root else None


def _spellings(name: str) -> list[str]:
    """``name`` and its aliases."""
    return [name, *sorted(alias for alias, target in ALIASES.items() if target == name)]


def _real_dir(root: Path, name: str) -> Path:
    """The first of ``root/<spelling>`` that exists over ``name``'s spellings, else ``root/name``."""
    for spelling in _spellings(name):
        found = _find_dir(root, spelling)
        if found.exists():
            return found
    return root / name


def _find_dir(root: Path, name: str) -> Path:
    """``root/name``, matched case-insensitively (``PolypSet`` for ``polypset``)."""
    exact = root / name
    if exact.exists() or not root.is_dir():
        return exact
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return exact


def _bundle(raw: RawDataset, dataset_id: str, name: str, synthetic: bool, request: DataRequest) -> DatasetBundle:
    for c, cname in enumerate(raw.classes):
        if not (raw.table.labels == c).any():
            raise DataError(
                f"dataset {dataset_id!r}: class {cname!r} has no images. Remove the class or add its images."
            )
    splits = make_splits(
        raw.table,
        raw.classes,
        raw.student_modality,
        raw.teacher_modality,
        seed=request.data_seed,
        val_fraction=request.val_fraction,
        test_fraction=request.test_fraction,
    )
    if not synthetic:
        check_duplicate_content(raw.table, splits)
    return DatasetBundle(
        dataset_id=dataset_id,
        name=name,
        synthetic=synthetic,
        classes=list(raw.classes),
        student_modality=raw.student_modality,
        teacher_modality=raw.teacher_modality,
        table=raw.table,
        splits=splits,
        provenance={**raw.provenance, "data_seed": request.data_seed},
        notes=list(raw.notes),
    )


def _options(request: DataRequest) -> LoadOptions:
    return LoadOptions(
        image_size=request.image_size,
        on_bad_image=request.on_bad_image,
        cache_dir=Path(request.cache_dir) if request.cache_dir else None,
        modality_list=Path(request.modality_list) if request.modality_list else None,
    )


def load_dataset(request: DataRequest, log: Callable[[str], None] | None = None) -> DatasetBundle:
    """Resolve ``request.name`` and return its lesion-level :class:`DatasetBundle`."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    name = request.name
    if name.startswith("folder:"):
        path = Path(name.split(":", 1)[1]).expanduser()
        raw = LAYOUTS["folder"](path, _options(request))
        return _bundle(raw, f"folder-{path.name}", name, False, request)

    force_synthetic = name.endswith(":synthetic")
    base = name.removesuffix(":synthetic")
    if base in ALIASES:
        log(f"[kdbench] {base!r} is another spelling of {ALIASES[base]!r}: read as {ALIASES[base]!r}")
        base = ALIASES[base]
    twins = synthetic_names()
    if base not in twins and base not in LAYOUTS:
        close = difflib.get_close_matches(base, known_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise DataError(
            f"unknown dataset {base!r}.{hint} Known: {', '.join(known_names())}; or use "
            "folder:/path/to/root for your own data in the generic layout."
        )

    root = _root(request)
    real_dir = _real_dir(root, base) if root else None
    if not force_synthetic and real_dir is not None and real_dir.exists():
        raw = LAYOUTS.get(base, LAYOUTS["folder"])(real_dir, _options(request))
        return _bundle(raw, base, base, False, request)

    if base not in twins or (request.require_real and not force_synthetic):
        where = real_dir if real_dir is not None else f"${DATA_ROOT_ENV}/{base} (no data root set)"
        raise DataError(
            f"no real data for {base!r} at {where}. Put the dataset there in its published layout "
            f"(or the generic layout <root>/{base}/{{wli,nbi}}/<class>/<image>), and pass "
            f"--data-root ROOT or set {DATA_ROOT_ENV}."
            + ("" if base in twins else f" {base!r} has no synthetic twin.")
        )
    if not force_synthetic and base != "synth":
        where = real_dir if real_dir is not None else f"--data-root/{base}"
        log(
            f"[kdbench] no real {base!r} data at {where}: using its SYNTHETIC twin "
            f"({base}-synthetic). Point --data-root (or ${DATA_ROOT_ENV}) at a folder holding "
            f"{base}/ to use real images; --require-real makes this an error."
        )
    from .synthetic import render_twin

    raw = render_twin(
        base,
        image_size=request.image_size,
        scale=request.scale,
        min_class_images=request.min_class_images,
        seed=request.data_seed,
        eval_lesions=(request.val_lesions, request.test_lesions),
        oracle=request.oracle if synthetic_has_oracle(base) else 0,
    )
    # The embedded default is synthetic by name; every other twin says so in its id.
    dataset_id = base if base == "synth" else f"{base}-synthetic"
    return _bundle(raw, dataset_id, base, True, request)
