"""Specifications of the synthetic twins: classes, sizes, palette and difficulty knobs.

A twin mirrors one dataset's classes and split sizes (as the PaGKD paper reports them,
or as published for the same-modality sets) and is rendered by
:mod:`datasets.synthetic`. Every number a twin produces is synthetic.

Sizes (before the profile's ``scale`` and the per-class floor; validation and test
lesions can instead be set for precision by the profile, see
:func:`datasets.synthetic.plan_twin`):

- Cross-modal twins (``modality="endoscopy"``): ``paired`` lesion views seen in WLI and
  NBI (one image each, twins of one another), ``unpaired_student`` WLI-only and
  ``unpaired_teacher`` NBI-only images, the paper's D_p / D_unp sizes. Validation and
  test lesions are carved out of the paired pool (``val_fraction``, ``test_fraction`` of
  its images), as PaGKD's code draws its test folds from the paired list: the student
  is scored on their WLI views and the NBI teacher on their NBI views of the same
  lesions. Class proportions are not published for these sets; the ones chosen here are
  stated per twin (``class_fractions``).
- Same-modality twins: the published class counts (``class_counts``), split by lesion
  into train/val/test with ``val_fraction``/``test_fraction``.

Difficulty knobs (see :mod:`datasets.synthetic` for how each enters the image):

- ``texture``: per class, the prototype of the superficial vessel/pit texture latent
  ``(density, order, disruption)``, each roughly in [0, 1]. Density sets the vessel
  spacing, order the orientation coherence (1: parallel tubular pattern, 0: lacy
  isotropic network), disruption the area of amorphous surface with vessels missing.
- ``texture_spread``: per-lesion standard deviation around the prototype; the overlap it
  causes bounds what any NBI classifier can reach.
- ``cue``: per class, the mean of the weak cue (lesion size and tint) in units of its
  per-lesion standard deviation; visible in every modality.
- ``wli_leak``: fraction of the NBI contrast of the superficial texture that shows in
  WLI, where it is also blurred by scatter. Set per endoscopy twin so that the WLI view
  holds texture a student can learn from more data (the WLI oracle, five times the WLI
  training lesions, gains at least 8 AUC points over the baseline at the cpu profile)
  but not as clearly as NBI (the NBI teacher stays above the oracle); measured values in
  the README's calibration table. Twins with fewer training images need a higher leak.
- ``contrast``: contrast of the class texture in a single-modality twin.
- ``noise``: upper end of the per-image Gaussian pixel noise (fraction of full scale).
"""

from __future__ import annotations

from dataclasses import dataclass

Texture = tuple[float, float, float]

# (density, order, disruption) prototypes, following NICE/Kudo (data.md section 3.2):
# hyperplastic: sparse lacy vessels, round/stellar pits; adenoma: dense regular network
# around tubular pits; carcinoma: dense, irregular, disrupted or amorphous surface.
HYPERPLASTIC: Texture = (0.05, 0.25, 0.0)
ADENOMA: Texture = (0.75, 0.95, 0.1)
CARCINOMA: Texture = (0.9, 0.2, 0.9)


@dataclass(frozen=True)
class TwinSpec:
    """One synthetic twin.

    Attributes:
        name: catalogue name.
        mirrors: the dataset (and source of its sizes) this twin stands in for.
        classes: class names, index = label (neoplastic classes last for polyp sets).
        modality: ``"endoscopy"`` (WLI student / NBI teacher) or a single modality
            (``"derm"``, ``"fundus"``) for same-modality sets.
        paired, unpaired_student, unpaired_teacher: cross-modal sizes in images per
            modality (``paired`` counts pairs); zero for single-modality twins.
        class_fractions: class proportions for cross-modal twins (chosen, not published).
        class_counts: published per-class image counts for single-modality twins.
        val_fraction, test_fraction: share of the paired pool (cross-modal) or of each
            class (single-modality) held out for validation and test, by lesion.
        views: inclusive range of images (views) per lesion.
        eval_views: views per held-out lesion when validation and test are sized in
            lesions (the profile's ``val_lesions``/``test_lesions``): precision comes
            from lesions, the views of one lesion are correlated, and every view costs
            evaluation time in every run.
        texture, texture_spread, cue, wli_leak, contrast, noise: see module docstring.
    """

    name: str
    mirrors: str
    classes: tuple[str, ...]
    modality: str
    texture: tuple[Texture, ...]
    cue: tuple[float, ...]
    paired: int = 0
    unpaired_student: int = 0
    unpaired_teacher: int = 0
    class_fractions: tuple[float, ...] = ()
    class_counts: tuple[int, ...] = ()
    val_fraction: float = 0.12
    test_fraction: float = 0.2
    views: tuple[int, int] = (1, 4)
    eval_views: tuple[int, int] = (1, 2)
    texture_spread: float = 0.3
    wli_leak: float = 0.1
    contrast: float = 0.6
    noise: float = 0.04

    def __post_init__(self) -> None:
        k = len(self.classes)
        if len(self.texture) != k or len(self.cue) != k:
            raise ValueError(f"twin {self.name!r}: texture and cue need one entry per class ({k})")
        if self.cross_modal:
            if len(self.class_fractions) != k or abs(sum(self.class_fractions) - 1.0) > 1e-6:
                raise ValueError(f"twin {self.name!r}: class_fractions must have {k} entries summing to 1")
        elif len(self.class_counts) != k:
            raise ValueError(f"twin {self.name!r}: class_counts must have {k} entries")
        for name, (lo, hi) in (("views", self.views), ("eval_views", self.eval_views)):
            if not 1 <= lo <= hi:
                raise ValueError(f"twin {self.name!r}: {name} must be (lo, hi) with 1 <= lo <= hi")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"twin {self.name!r}: val_fraction + test_fraction must stay below 1")

    @property
    def cross_modal(self) -> bool:
        return self.modality == "endoscopy"

    @property
    def student_modality(self) -> str:
        return "wli" if self.cross_modal else self.modality

    @property
    def teacher_modality(self) -> str:
        return "nbi" if self.cross_modal else self.modality


TWINS: dict[str, TwinSpec] = {
    spec.name: spec
    for spec in (
        TwinSpec(
            name="synth",
            mirrors="kdbench's embedded default (3 balanced classes, no real counterpart)",
            classes=("hyperplastic", "adenoma", "carcinoma"),
            modality="endoscopy",
            paired=600,
            unpaired_student=600,
            unpaired_teacher=600,
            class_fractions=(1 / 3, 1 / 3, 1 / 3),
            texture=(HYPERPLASTIC, ADENOMA, CARCINOMA),
            cue=(-1.1, 0.0, 1.1),
        ),
        TwinSpec(
            name="piccolo",
            mirrors="PICCOLO (PaGKD table: paired 1,055, unpaired WLI 1,065, unpaired NBI 214)",
            classes=("Hyperplasia", "Adenoma", "Adenocarcinoma"),
            modality="endoscopy",
            paired=1055,
            unpaired_student=1065,
            unpaired_teacher=214,
            class_fractions=(0.25, 0.6, 0.15),
            texture=(HYPERPLASTIC, ADENOMA, CARCINOMA),
            cue=(-1.1, 0.0, 1.1),
            wli_leak=0.7,
        ),
        TwinSpec(
            name="polypset",
            mirrors="PolypSet / CPC-Paired (PaGKD table: paired 165, unpaired WLI 450, unpaired NBI 450)",
            classes=("hyperplastic", "adenoma"),
            modality="endoscopy",
            paired=165,
            unpaired_student=450,
            unpaired_teacher=450,
            class_fractions=(0.38, 0.62),
            texture=(HYPERPLASTIC, ADENOMA),
            cue=(-0.35, 0.35),
            texture_spread=0.15,
            wli_leak=0.72,
        ),
        TwinSpec(
            name="ih_polyp",
            mirrors="IH-Polyp, in-house (PaGKD table: paired 556, unpaired WLI 3,730, unpaired NBI 921)",
            classes=("hyperplastic", "adenoma"),
            modality="endoscopy",
            paired=556,
            unpaired_student=3730,
            unpaired_teacher=921,
            class_fractions=(0.4, 0.6),
            texture=(HYPERPLASTIC, ADENOMA),
            cue=(-0.35, 0.35),
            texture_spread=0.22,
            wli_leak=0.4,
        ),
        TwinSpec(
            name="ih_gc",
            mirrors="IH-GC, in-house gastric (PaGKD table: paired 264, unpaired WLI 469, unpaired NBI 303)",
            classes=("non_cancer", "gastric_cancer"),
            modality="endoscopy",
            paired=264,
            unpaired_student=469,
            unpaired_teacher=303,
            class_fractions=(0.55, 0.45),
            texture=((0.35, 0.8, 0.0), (0.85, 0.15, 0.75)),
            cue=(-0.35, 0.35),
            wli_leak=0.9,
        ),
        TwinSpec(
            name="ham10000",
            mirrors="HAM10000 (published class counts)",
            classes=("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"),
            modality="derm",
            class_counts=(6705, 1113, 1099, 514, 327, 142, 115),
            views=(1, 2),
            texture=(
                (0.3, 0.85, 0.0),
                (0.85, 0.2, 0.8),
                (0.55, 0.4, 0.3),
                (0.3, 0.15, 0.6),
                (0.75, 0.6, 0.45),
                (0.0, 0.6, 0.2),
                (0.6, 0.9, 0.6),
            ),
            cue=(0.0, 0.6, 0.2, -0.4, 0.4, -0.8, -0.2),
        ),
        TwinSpec(
            name="isic2019",
            mirrors="ISIC 2019 training set (published class counts)",
            classes=("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"),
            modality="derm",
            class_counts=(4522, 12875, 3323, 867, 2624, 239, 253, 628),
            views=(1, 2),
            texture=(
                (0.85, 0.2, 0.8),
                (0.3, 0.85, 0.0),
                (0.3, 0.15, 0.6),
                (0.75, 0.6, 0.45),
                (0.55, 0.4, 0.3),
                (0.6, 0.9, 0.6),
                (0.0, 0.6, 0.2),
                (0.95, 0.5, 0.95),
            ),
            cue=(0.6, 0.0, -0.4, 0.4, 0.2, -0.2, -0.8, 0.8),
        ),
        TwinSpec(
            name="aptos",
            mirrors="APTOS 2019 blindness detection (published grade counts)",
            classes=("0", "1", "2", "3", "4"),
            modality="fundus",
            class_counts=(1805, 370, 999, 193, 295),
            views=(1, 1),
            texture=(
                (0.0, 0.7, 0.0),
                (0.25, 0.6, 0.2),
                (0.5, 0.5, 0.4),
                (0.75, 0.4, 0.6),
                (1.0, 0.3, 0.8),
            ),
            cue=(-0.8, -0.4, 0.0, 0.4, 0.8),
        ),
    )
}
