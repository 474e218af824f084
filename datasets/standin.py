"""A small synthetic stand-in for a small real paired WLI/NBI set, written as a folder layout.

Shape of a typical in-house or public small polyp set (the UCI colonoscopy set's
counts: 21 hyperplastic, 15 serrated, 40 adenoma lesions): 76 lesions, 3 classes, one
white-light and one NBI image per lesion, the two images of a lesion a true pair. The
images come from the synthetic generator (:mod:`datasets.synthetic`) and are written in
the generic folder layout::

    <dir>/wli/<class>/<lesion>.png
    <dir>/nbi/<class>/<lesion>.png      (same file name = same lesion, a pair)
    <dir>/SYNTHETIC.txt

so ``--data folder:<dir>`` runs the real-data path (k-fold by default, probes) on it.
Name the folder ``...-synthetic`` and every report labels its numbers SYNTHETIC (the
dataset id is ``folder-<dir name>``).

Texture prototypes: hyperplastic and adenoma as in every twin; serrated lesions sit in
between (NICE type 1 colour with a denser, more regular surface pattern than
hyperplastic), so the serrated-vs-hyperplastic distinction is the hard one, as in the
real data. Chosen once from the physics note, not fitted to any method.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from .base import DataError
from .synthetic import plan_twin, render_plan
from .twins import ADENOMA, HYPERPLASTIC, TwinSpec

SERRATED = (0.35, 0.6, 0.05)
STANDIN = TwinSpec(
    name="standin76",
    mirrors="a small paired WLI/NBI set: 76 lesions (21 hyperplastic, 15 serrated, 40 adenoma), one image each",
    classes=("hyperplastic", "serrated", "adenoma"),
    modality="endoscopy",
    paired=76,
    class_fractions=(21 / 76, 15 / 76, 40 / 76),
    texture=(HYPERPLASTIC, SERRATED, ADENOMA),
    cue=(-0.6, -0.2, 0.6),
    views=(1, 1),
    # The real set this stands in for shows its classes about as well in white light as
    # in NBI to frozen ImageNet features (linear probes: WL 0.80, NBI 0.80 AUC). At the
    # generator's default leak (0.1) the stand-in's WLI probe sat near chance (0.55 vs
    # NBI 0.75); 0.6, the leak of the other three-class polyp twin (piccolo), gives 0.67,
    # about the most the generator's scatter blur lets white light show (0.3: 0.65,
    # 0.9: 0.66). Set from the probes, before any method ran on it.
    wli_leak=0.6,
)


def make_standin(folder: Path | str, image_size: int, seed: int = 0, spec: TwinSpec = STANDIN) -> dict[str, int]:
    """Render the stand-in into ``folder`` (which must not hold images yet); returns
    lesions per class."""
    from PIL import Image

    folder = Path(folder)
    if folder.exists() and any(folder.rglob("*.png")):
        raise DataError(f"{folder} already holds images; pass an empty or new folder")
    plan = plan_twin(dataclasses.replace(spec), scale=1.0, min_class_images=1, seed=seed)
    images = render_plan(plan, image_size)
    counts: dict[str, int] = {}
    for i in range(len(plan)):
        lesion = int(plan.image_lesion[i])
        cls = spec.classes[int(plan.label[lesion])]
        path = folder / str(plan.modality[i]) / cls / f"L{lesion:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(images[i])).save(path)
        if plan.modality[i] == "wli":
            counts[cls] = counts.get(cls, 0) + 1
    (folder / "SYNTHETIC.txt").write_text(
        f"Synthetic stand-in rendered by kdbench ({spec.mirrors}); image size {image_size}, seed {seed}. "
        "No patient images.\n"
    )
    return counts
