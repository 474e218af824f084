"""Procedural WLI/NBI lesion renderer: the synthetic twins and the embedded default data.

The generator follows the physics note (``research/data.md`` section 3): class evidence
lives mostly in fine superficial vessel/pit texture, which narrow-band imaging shows at
high contrast and white light shows faintly. Every image is SYNTHETIC.

Latent lesion (shared by all views of a lesion, and by both modalities of a paired one):

- class label; a texture latent ``(density, order, disruption)`` drawn around the class
  prototype (:class:`datasets.twins.TwinSpec.texture`) with ``texture_spread``;
- a weak cue ``q`` ~ N(class mean, 1) that sets lesion size and tint (how far the lesion
  colour departs from the mucosa), visible in every modality. It is rendered strongly
  enough to be read off one image, so what a WLI-only model can reach from it is set by
  the class overlap of ``q`` (binary cue means +-m give a Bayes AUC of Phi(sqrt(2) m));
- the standard-normal offsets of both latents are Latin-hypercube stratified within each
  class, role and split, so even a small test set has the intended class overlap;
- shape (elliptic blob with random boundary harmonics, a dome for shading);
- three random fields in lesion coordinates, each a sum of cosines: the superficial
  field (class statistics: its frequency grows with density, its orientation spread
  shrinks with order), a disruption field (amorphous patches whose area grows with
  disruption), and a class-agnostic deep-vessel field plus a mucosa colour field.

Superficial vessels are the zero crossings of the superficial field (thin curvilinear
lines; thicker with disruption), pits its positive peaks (round when the field is
isotropic, tubular when it is oriented); deep vessels are the zero crossings of the
low-frequency deep field (thick, class-agnostic).

Rendering per modality (Beer-Lambert flavoured, alpha blending of layers):

- ``nbi``: brown superficial vessels and whitish pits at full contrast on teal-beige
  mucosa, cyan deep vessels, browner lesion tint.
- ``wli``: pink/red palette; the superficial layer blurred by scattering (1.6x wider
  lines) and at ``wli_leak`` of the NBI contrast; deep vessels purple and visible.
- single modalities (``derm``, ``fundus``): the same layers with their own palette and
  the class texture at ``contrast``.

Held-out sets can be sized in lesions for precision (``eval_lesions``; 1-2 views each),
while training sets keep the paper's sizes. For the WLI-oracle reference, ``oracle=k``
adds k - 1 times the WLI training lesions as WLI-only lesions in split ``oracle``, from
their own random streams, leaving every other lesion and pixel unchanged.

Per view (each image is a random partial view of its lesion; the two views of a paired
lesion are drawn independently, so twins are not pixel-aligned): rotation, mirror,
zoom, off-centre window, illumination gain/gradient/vignetting/colour cast, dome shading,
0-3 specular highlights, blur and Gaussian pixel noise.

Everything random is drawn from ``numpy.random.default_rng([seed, crc32(name), ...])``:
the same seed gives byte-identical images, another seed different ones. Rendering is
vectorised over chunks of images (no per-pixel Python loop); small sizes are rendered
at 2x and averaged down, so the finest texture does not alias at 24-32 px.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.special import ndtri

from .base import DataError, ImageTable, RawDataset
from .splits import ORACLE_SPLIT
from .twins import TWINS, TwinSpec

GENERATOR_VERSION = "2.0"

K_SUPERFICIAL = 10
K_DISRUPTION = 4
K_DEEP = 6
K_MUCOSA = 3
MAX_SPECULAR = 3
# cos() evaluations per chunk (images x components x pixels), bounds memory to ~100 MB.
CHUNK_BUDGET = 6_000_000
# Validation and test get at least this many times the per-class floor: an AUC from a
# dozen lesions per class is too noisy to select or rank models.
EVAL_FLOOR_FACTOR = 2
# Per class, the least held-out lesions when validation/test are sized in lesions.
MIN_EVAL_LESIONS = 2


@dataclass(frozen=True)
class Palette:
    """Linear RGB colours in [0, 1] of one modality's layers."""

    mucosa: tuple[float, float, float]
    lesion: tuple[float, float, float]
    vessel: tuple[float, float, float]
    pit: tuple[float, float, float]
    amorphous: tuple[float, float, float]
    deep: tuple[float, float, float]
    deep_alpha: float
    line_width: float  # superficial line half-width, in units of the field's std


PALETTES: dict[str, Palette] = {
    # 415 nm -> G,B and 540 nm -> R: superficial capillaries brown, deep veins cyan.
    "nbi": Palette(
        mucosa=(0.60, 0.64, 0.57),
        lesion=(0.52, 0.42, 0.30),
        vessel=(0.30, 0.15, 0.09),
        pit=(0.86, 0.87, 0.78),
        amorphous=(0.36, 0.24, 0.16),
        deep=(0.18, 0.50, 0.62),
        deep_alpha=0.45,
        line_width=0.32,
    ),
    # Broadband light: red dominates, fine capillaries washed out and blurred by scatter.
    "wli": Palette(
        mucosa=(0.84, 0.50, 0.43),
        lesion=(0.72, 0.30, 0.27),
        vessel=(0.55, 0.16, 0.16),
        pit=(0.93, 0.66, 0.60),
        amorphous=(0.62, 0.26, 0.24),
        deep=(0.52, 0.30, 0.42),
        deep_alpha=0.35,
        line_width=0.32 * 1.6,
    ),
    # Not dermoscopy-realistic: skin background, brown pigment network, blue-grey veil.
    "derm": Palette(
        mucosa=(0.86, 0.70, 0.60),
        lesion=(0.58, 0.40, 0.30),
        vessel=(0.28, 0.17, 0.12),
        pit=(0.80, 0.66, 0.56),
        amorphous=(0.45, 0.46, 0.56),
        deep=(0.78, 0.42, 0.42),
        deep_alpha=0.25,
        line_width=0.32,
    ),
    # Not fundus-realistic: orange fundus, dark red vessels, yellow exudates, blots.
    "fundus": Palette(
        mucosa=(0.86, 0.44, 0.18),
        lesion=(0.80, 0.38, 0.16),
        vessel=(0.50, 0.10, 0.06),
        pit=(0.96, 0.86, 0.46),
        amorphous=(0.45, 0.08, 0.05),
        deep=(0.58, 0.14, 0.08),
        deep_alpha=0.6,
        line_width=0.32,
    ),
}


@dataclass
class TwinPlan:
    """Everything random about a rendered twin except pixel noise.

    Per lesion (``L`` rows): ``lesion_id``, ``label``, ``group`` (``paired``, ``wli``,
    ``nbi`` or the single modality), ``split``, ``texture`` (L, 3) latent, ``cue`` (L,),
    shape and field parameters. Per image (``N`` rows): ``image_lesion`` (row of its
    latent lesion), ``modality``, ``twin`` and the view parameters. A paired WLI/NBI
    image pair shares ``image_lesion``; an unpaired image's lesion has one modality.
    """

    spec: TwinSpec
    seed: int
    scale: float
    min_class_images: int
    lesion_id: np.ndarray
    label: np.ndarray
    group: np.ndarray
    split: np.ndarray
    texture: np.ndarray
    cue: np.ndarray
    radius: np.ndarray
    shape: np.ndarray  # (L, 8): ellipticity, axis angle, 3 harmonic amplitudes, 3 phases
    fields: dict[str, np.ndarray]  # name -> (L, K, 3): frequency x, frequency y, phase
    line_width: np.ndarray  # (L,) multiplier of the palette's line width
    image_lesion: np.ndarray
    modality: np.ndarray
    twin: np.ndarray
    view: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.image_lesion)


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


@dataclass(frozen=True)
class _Block:
    """Lesions of one class in one role: ``count`` images (``views`` per lesion until
    they are used up), or ``count`` lesions when ``by_lesion``."""

    group: str
    split: str
    label: int
    count: int
    views: tuple[int, int]
    by_lesion: bool = False


def _class_shares(spec: TwinSpec) -> list[float]:
    if spec.cross_modal:
        return list(spec.class_fractions)
    total = float(sum(spec.class_counts))
    return [n / total for n in spec.class_counts]


def _targets(spec: TwinSpec, scale: float, floor: int, eval_lesions: tuple[int, int]) -> list[_Block]:
    """Every role's block; ``group`` ``paired`` counts pairs.

    Training roles keep the paper's sizes times ``scale`` (at least ``floor`` images per
    class). Validation and test follow the paper's fractions of the paired pool (at
    least ``EVAL_FLOOR_FACTOR * floor`` images per class), unless ``eval_lesions`` =
    (val, test) sets them in lesions, split over classes by the class shares, each lesion
    seen in ``spec.eval_views`` views.
    """
    if scale <= 0:
        raise DataError(f"synthetic twin {spec.name!r}: scale must be > 0, got {scale}")
    if min(eval_lesions) < 0:
        raise DataError(f"synthetic twin {spec.name!r}: validation/test lesions must be >= 0, got {eval_lesions}")
    held = {"test": spec.test_fraction, "val": spec.val_fraction}
    held["train"] = 1.0 - held["test"] - held["val"]
    sized = dict(zip(("val", "test"), eval_lesions, strict=True))
    shares = _class_shares(spec)
    eval_group = "paired" if spec.cross_modal else spec.modality
    out = []
    for c in range(len(spec.classes)):
        if spec.cross_modal:
            p = spec.class_fractions[c]
            bases = [("paired", split, spec.paired * frac * p) for split, frac in held.items()]
            bases += [("wli", "train", spec.unpaired_student * p), ("nbi", "train", spec.unpaired_teacher * p)]
        else:
            bases = [(spec.modality, split, spec.class_counts[c] * frac) for split, frac in held.items()]
        for group, split, base in bases:
            if sized.get(split, 0) > 0:
                continue
            if base > 0:
                least = floor * EVAL_FLOOR_FACTOR if split != "train" else floor
                out.append(_Block(group, split, c, max(least, round(base * scale)), spec.views))
        for split, n in sized.items():
            if n > 0:
                out.append(_Block(eval_group, split, c, max(MIN_EVAL_LESIONS, round(n * shares[c])),
                                  spec.eval_views, by_lesion=True))
    return out


def _fields(rng: np.random.Generator, n: int, k: int, freq: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """(n, k, 3) cosine components: frequency vector (cycles per unit) and phase."""
    phase = rng.uniform(0.0, 2 * np.pi, (n, k))
    return np.stack([freq * np.cos(angle), freq * np.sin(angle), phase], axis=-1).astype(np.float64)


def _stratified_normal(rng: np.random.Generator, block: np.ndarray, dims: int) -> np.ndarray:
    """(len(block), dims) standard-normal draws, Latin-hypercube stratified within each block.

    Within a block of n lesions (one class in one role and split), each dimension takes one
    value from each of n equal-probability strata, in random order. A small test set then
    has the class overlap the spec intends instead of a lucky or unlucky draw.
    """
    out = np.empty((len(block), dims))
    for b in np.unique(block):
        rows = np.flatnonzero(block == b)
        n = len(rows)
        strata = np.stack([rng.permutation(n) for _ in range(dims)], axis=1)
        out[rows] = ndtri((strata + rng.random((n, dims))) / n)
    return out


def _draw_lesions(rng: np.random.Generator, spec: TwinSpec, blocks: list[_Block]) -> dict[str, Any]:
    """Latents, fields and views of the lesions of ``blocks`` (one plan part)."""
    les_group: list[str] = []
    les_split: list[str] = []
    les_label: list[int] = []
    les_views: list[int] = []
    les_block: list[int] = []
    for k, blk in enumerate(blocks):
        lo, hi = blk.views
        left = blk.count
        while left > 0:
            v = int(rng.integers(lo, hi + 1))
            if not blk.by_lesion:
                v = min(left, v)
            les_block.append(k)
            les_group.append(blk.group)
            les_split.append(blk.split)
            les_label.append(blk.label)
            les_views.append(v)
            left -= 1 if blk.by_lesion else v
    n_les = len(les_label)
    label = np.asarray(les_label, dtype=np.int64)

    # Latent lesion: class prototype plus a stratified standard-normal offset.
    offsets = _stratified_normal(rng, np.asarray(les_block, dtype=np.int64), 4)
    proto = np.asarray(spec.texture, dtype=np.float64)[label].reshape(n_les, 3)
    texture = proto + spec.texture_spread * offsets[:, :3]
    cue = np.asarray(spec.cue, dtype=np.float64)[label] + offsets[:, 3]
    radius = 0.85 * np.exp(0.12 * cue + 0.06 * rng.standard_normal(n_les))
    shape = np.concatenate(
        [
            rng.uniform(0.0, 0.25, (n_les, 1)),
            rng.uniform(0.0, np.pi, (n_les, 1)),
            rng.uniform(0.0, 0.08, (n_les, 3)),
            rng.uniform(0.0, 2 * np.pi, (n_les, 3)),
        ],
        axis=1,
    )
    density, order, disruption = (np.clip(texture[:, j], -0.3, 1.3) for j in range(3))
    f0 = 1.5 + 1.3 * np.clip(density, -0.2, 1.2)
    spread = 0.12 + (np.pi / 2) * (1.0 - np.clip(order, 0.0, 1.0))
    theta0 = rng.uniform(0.0, np.pi, (n_les, 1))
    jitter = 0.08 + 0.15 * disruption[:, None].clip(0, 1)  # irregular calibre when disrupted
    sup_freq = f0[:, None] * np.exp(jitter * rng.standard_normal((n_les, K_SUPERFICIAL)))
    sup_angle = theta0 + spread[:, None] * rng.standard_normal((n_les, K_SUPERFICIAL))
    fields = {
        "superficial": _fields(rng, n_les, K_SUPERFICIAL, sup_freq, sup_angle),
        "disruption": _fields(
            rng, n_les, K_DISRUPTION, 0.55 * np.exp(0.2 * rng.standard_normal((n_les, K_DISRUPTION))),
            rng.uniform(0.0, np.pi, (n_les, K_DISRUPTION)),
        ),
        "deep": _fields(
            rng, n_les, K_DEEP, 0.42 * np.exp(0.2 * rng.standard_normal((n_les, K_DEEP))),
            rng.uniform(0.0, np.pi, (n_les, K_DEEP)),
        ),
        "mucosa": _fields(
            rng, n_les, K_MUCOSA, 0.3 * np.exp(0.2 * rng.standard_normal((n_les, K_MUCOSA))),
            rng.uniform(0.0, np.pi, (n_les, K_MUCOSA)),
        ),
    }
    # Disrupted area: threshold on the unit-variance disruption field.
    fields["disruption_threshold"] = (2.0 - 2.4 * disruption.clip(0, 1.2))[:, None, None]
    line_width = 1.0 + 0.6 * disruption.clip(0, 1)

    # Images: paired lesions give (wli, nbi) twins per view; others one modality.
    image_lesion: list[int] = []
    modality: list[str] = []
    twin: list[int] = []
    for k in range(n_les):
        for _ in range(les_views[k]):
            if les_group[k] == "paired":
                i = len(image_lesion)
                image_lesion += [k, k]
                modality += ["wli", "nbi"]
                twin += [i + 1, i]
            else:
                image_lesion.append(k)
                modality.append(les_group[k])
                twin.append(-1)
    lesion_of = np.asarray(image_lesion, dtype=np.int64)
    return {
        "label": label,
        "group": np.array(les_group, dtype=str),
        "split": np.array(les_split, dtype=str),
        "texture": texture,
        "cue": cue,
        "radius": radius,
        "shape": shape,
        "fields": fields,
        "line_width": line_width,
        "image_lesion": lesion_of,
        "modality": np.array(modality, dtype=str),
        "twin": np.asarray(twin, dtype=np.int64),
        "view": _draw_views(rng, len(lesion_of), radius[lesion_of]),
    }


def _oracle_blocks(spec: TwinSpec, part: dict[str, Any], factor: int) -> list[_Block]:
    """(factor - 1) x the WLI training lesions of ``part``, per class, as WLI-only lesions."""
    wli_train = (part["split"] == "train") & np.isin(part["group"], ["paired", "wli"])
    return [
        _Block("wli", ORACLE_SPLIT, c, (factor - 1) * int(np.sum(wli_train & (part["label"] == c))), spec.views,
               by_lesion=True)
        for c in range(len(spec.classes))
    ]


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Plan part ``b`` appended after ``a`` (lesion and twin indices shifted)."""
    out = {}
    for key, va in a.items():
        vb = b[key]
        if key == "fields" or key == "view":
            out[key] = {k: np.concatenate([va[k], vb[k]]) for k in va}
        elif key == "image_lesion":
            out[key] = np.concatenate([va, vb + len(a["label"])])
        elif key == "twin":
            out[key] = np.concatenate([va, np.where(vb >= 0, vb + len(va), vb)])
        else:
            out[key] = np.concatenate([va, vb])
    return out


def plan_twin(
    spec: TwinSpec | str,
    *,
    scale: float,
    min_class_images: int,
    seed: int,
    eval_lesions: tuple[int, int] = (0, 0),
    oracle: int = 0,
) -> TwinPlan:
    """Draw lesions, latents and views of a twin (no pixels).

    ``eval_lesions`` = (validation, test) lesions sized for precision (``0``: the
    paper's fractions of the paired pool). ``oracle`` = k >= 2 adds, for the WLI-oracle
    reference, k - 1 times the WLI training lesions (paired and unpaired) as extra
    WLI-only lesions in split ``oracle``, drawn from their own random stream after
    everything else, so every other lesion and image is the same with or without them.
    """
    if isinstance(spec, str):
        spec = get_spec(spec)
    if oracle == 1 or oracle < 0:
        raise DataError(f"synthetic twin {spec.name!r}: oracle must be 0 (none) or a factor k >= 2, got {oracle}")
    if oracle and not spec.cross_modal:
        raise DataError(f"synthetic twin {spec.name!r} has no WLI student modality; the WLI oracle needs a "
                        "cross-modal twin (oracle=0)")
    rng = np.random.default_rng([seed, _name_key(spec.name), 0])
    part = _draw_lesions(rng, spec, _targets(spec, scale, min_class_images, eval_lesions))
    if oracle:
        extra_rng = np.random.default_rng([seed, _name_key(spec.name), 2])
        part = _concat(part, _draw_lesions(extra_rng, spec, _oracle_blocks(spec, part, oracle)))
    n_les = len(part["label"])
    return TwinPlan(
        spec=spec,
        seed=seed,
        scale=scale,
        min_class_images=min_class_images,
        lesion_id=np.array([f"{spec.name}-{k:05d}" for k in range(n_les)]),
        **part,
    )


def _draw_views(rng: np.random.Generator, n: int, radius: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image pose, window, illumination and degradation parameters."""
    off_angle = rng.uniform(0.0, 2 * np.pi, n)
    off = radius * rng.uniform(0.0, 0.5, n)
    spec_on = rng.random((n, MAX_SPECULAR)) < np.array([0.7, 0.4, 0.2])
    return {
        "angle": rng.uniform(0.0, 2 * np.pi, n),
        "mirror": np.where(rng.random(n) < 0.5, -1.0, 1.0),
        "half_width": rng.uniform(0.8, 1.1, n),
        "centre": np.stack([off * np.cos(off_angle), off * np.sin(off_angle)], axis=1),
        "gain": rng.uniform(0.78, 1.08, n),
        "gradient": rng.uniform(0.0, 0.3, n),
        "gradient_angle": rng.uniform(0.0, 2 * np.pi, n),
        "vignette": rng.uniform(0.1, 0.4, n),
        "cast": 1.0 + 0.035 * rng.standard_normal((n, 3)),
        "light_angle": rng.uniform(0.0, 2 * np.pi, n),
        "shading": rng.uniform(0.03, 0.12, n),
        "specular_xy": rng.uniform(-0.55, 0.55, (n, MAX_SPECULAR, 2)),
        "specular_size": rng.uniform(0.03, 0.08, (n, MAX_SPECULAR)),
        "specular_amp": rng.uniform(0.35, 0.85, (n, MAX_SPECULAR)) * spec_on,
        "blur": rng.uniform(0.0, 1.0, n),
        "noise": rng.uniform(0.3, 1.0, n),
    }


def _cos_field(params: np.ndarray, affine: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Unit-variance sum of cosines on each image's pixel grid, (B, S, S).

    ``params`` (B, K, 3): frequency vector and phase in lesion coordinates; ``affine``
    (B, 2, 3): image -> lesion coordinates; ``grid`` (S,): pixel centres in [-1, 1].
    Since the phase is affine in the pixel coordinates, the field is a batched matrix
    product of per-row and per-column complex exponentials (no per-pixel trig).
    """
    k = params.shape[1]
    fx, fy, ph = params[..., 0], params[..., 1], params[..., 2]
    a = 2 * np.pi * (fx * affine[:, None, 0, 0] + fy * affine[:, None, 1, 0])  # x frequency in image units
    b = 2 * np.pi * (fx * affine[:, None, 0, 1] + fy * affine[:, None, 1, 1])  # y frequency
    c = 2 * np.pi * (fx * affine[:, None, 0, 2] + fy * affine[:, None, 1, 2]) + ph
    col = a[..., None] * grid + c[..., None]  # (B, K, S) over x
    row = b[..., None] * grid  # (B, K, S) over y
    field = np.cos(row).transpose(0, 2, 1) @ np.cos(col) - np.sin(row).transpose(0, 2, 1) @ np.sin(col)
    return (field * np.sqrt(2.0 / k)).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _blend(col: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> None:
    """In place: ``col += alpha * (target - col)``; target (B, 1, 1, 3), alpha (B, S, S)."""
    col += alpha[..., None] * (target - col)


def _per_image(x: np.ndarray) -> np.ndarray:
    """(B,) parameters as float32 (B, 1, 1) for broadcasting over pixels."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _palette_arrays(plan: TwinPlan, mods: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-image palette colours (B, 1, 1, 3) and line widths / contrasts (B, 1, 1)."""
    spec = plan.spec
    names = ["nbi" if m == "nbi" else "wli" if m == "wli" else spec.modality for m in mods]
    pals = [PALETTES[n] for n in names]
    colours = {
        key: np.asarray([getattr(p, key) for p in pals], dtype=np.float32)[:, None, None, :]
        for key in ("mucosa", "lesion", "vessel", "pit", "amorphous", "deep")
    }
    contrast = [1.0 if m == "nbi" else spec.wli_leak if m == "wli" else spec.contrast for m in mods]
    scalars = np.stack([[p.deep_alpha for p in pals], [p.line_width for p in pals], contrast], axis=0)
    return colours, scalars.astype(np.float32)[:, :, None, None]


def _render_chunk(
    plan: TwinPlan, rows: np.ndarray, size: int, supersample: int, rng: np.random.Generator
) -> np.ndarray:
    """Render images ``rows`` of the plan to (B, size, size, 3) uint8."""
    f32 = np.float32
    les = plan.image_lesion[rows]
    vw = {k: v[rows] for k, v in plan.view.items()}
    b = len(rows)
    s = size * supersample
    grid = ((np.arange(s, dtype=np.float64) + 0.5) / s) * 2.0 - 1.0
    gy, gx = (g.astype(f32) for g in np.meshgrid(grid, grid, indexing="ij"))  # image coordinates in [-1, 1]

    # Image -> lesion coordinates: rotate, mirror, zoom, shift (an affine map per image).
    c, sn, mir, h = np.cos(vw["angle"]), np.sin(vw["angle"]), vw["mirror"], vw["half_width"]
    affine = np.stack(
        [
            np.stack([c * mir * h, -sn * h, vw["centre"][:, 0]], axis=1),
            np.stack([sn * mir * h, c * h, vw["centre"][:, 1]], axis=1),
        ],
        axis=1,
    )
    u = _per_image(affine[:, 0, 0]) * gx + _per_image(affine[:, 0, 1]) * gy + _per_image(affine[:, 0, 2])
    v = _per_image(affine[:, 1, 0]) * gx + _per_image(affine[:, 1, 1]) * gy + _per_image(affine[:, 1, 2])

    # Lesion shape: ellipse with boundary harmonics; a dome for shading.
    shp = plan.shape[les]
    r = plan.radius[les]
    cb, sb, e = np.cos(shp[:, 1]), np.sin(shp[:, 1]), shp[:, 0]
    qa = _per_image(cb / (r * (1 + e))) * u + _per_image(sb / (r * (1 + e))) * v
    qb = _per_image(-sb / (r * (1 - e))) * u + _per_image(cb / (r * (1 - e))) * v
    rho = np.sqrt(qa * qa + qb * qb)
    phi = np.arctan2(qb, qa)
    bound = np.ones_like(rho)
    for j in range(3):
        bound += _per_image(shp[:, 2 + j]) * np.cos((j + 2) * phi + _per_image(shp[:, 5 + j]))
    lesion = _sigmoid((bound - rho) * f32(20.0))
    dome = np.clip(1.0 - (rho / bound) ** 2, 0.0, 1.0)

    # Texture layers in lesion coordinates.
    f = plan.fields
    sup = _cos_field(f["superficial"][les], affine, grid)
    disrupt_field = _cos_field(f["disruption"][les], affine, grid)
    deep = _cos_field(f["deep"][les], affine, grid)
    mucosa = _cos_field(f["mucosa"][les], affine, grid)
    disrupted = _sigmoid((disrupt_field - _per_image(f["disruption_threshold"][les, 0, 0])) * f32(5.0)) * lesion
    intact = lesion * (1.0 - disrupted)
    pits = _sigmoid((sup - f32(1.3)) * f32(6.0))
    deep_lines = np.exp(-((deep / f32(0.3)) ** 2)) * (1.0 - f32(0.6) * lesion)
    tint = _per_image(0.1 + 0.8 / (1.0 + np.exp(-1.6 * plan.cue[les])))

    # Colour by modality.
    colours, (deep_alpha, line_width, contrast) = _palette_arrays(plan, plan.modality[rows])
    vessels = np.exp(-((sup / (line_width * _per_image(plan.line_width[les]))) ** 2))
    col = colours["mucosa"] * (1.0 + f32(0.05) * mucosa)[..., None]
    _blend(col, colours["lesion"], lesion * tint)
    _blend(col, colours["deep"], deep_alpha * deep_lines)
    _blend(col, colours["vessel"], f32(0.85) * contrast * vessels * intact)
    _blend(col, colours["pit"], f32(0.4) * contrast * pits * intact)
    _blend(col, colours["amorphous"], f32(0.6) * contrast * disrupted)

    # Illumination, shading and specular highlights (independent per view).
    ga, la = vw["gradient_angle"], vw["light_angle"]
    dy, dx = np.gradient(dome, axis=(1, 2))
    light = _per_image(vw["gain"]) * (
        1.0 + _per_image(vw["gradient"] * np.cos(ga)) * gx + _per_image(vw["gradient"] * np.sin(ga)) * gy
    )
    light *= 1.0 - _per_image(vw["vignette"] / 2) * (gx * gx + gy * gy)
    light *= 1.0 + f32(0.08) * dome + _per_image(vw["shading"] * np.cos(la) * s / 2) * dx
    light += _per_image(vw["shading"] * np.sin(la) * s / 2) * dy * (light / (1.0 + f32(0.08) * dome))
    col *= light[..., None]
    col *= vw["cast"].astype(f32)[:, None, None, :]
    for j in range(MAX_SPECULAR):
        d2 = (gx - _per_image(vw["specular_xy"][:, j, 0])) ** 2 + (gy - _per_image(vw["specular_xy"][:, j, 1])) ** 2
        col += (_per_image(vw["specular_amp"][:, j]) * np.exp(-d2 * _per_image(0.5 / vw["specular_size"][:, j] ** 2)))[
            ..., None
        ]

    # Blur, downsampling, noise, quantisation.
    blurred = gaussian_filter(col, sigma=(0, 0.9 * supersample, 0.9 * supersample, 0), mode="nearest")
    col += _per_image(vw["blur"])[..., None] * (blurred - col)
    if supersample > 1:
        col = col.reshape(b, size, supersample, size, supersample, 3).mean(axis=(2, 4))
    col += _per_image(plan.spec.noise * vw["noise"])[..., None] * rng.standard_normal(col.shape, dtype=f32)
    col *= 255.0
    col += 0.5
    return np.clip(col, 0.0, 255.0).astype(np.uint8)


def render_plan(plan: TwinPlan, image_size: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Pixels of a plan: (N, image_size, image_size, 3) uint8, deterministic for its seed.

    The WLI-oracle lesions (split ``oracle``) take their pixel noise from their own
    stream, so the other images do not depend on whether the plan has them.
    """
    if image_size < 8:
        raise DataError(f"synthetic images need image_size >= 8, got {image_size}")
    rows = np.arange(len(plan)) if rows is None else np.asarray(rows, dtype=np.int64)
    supersample = 2 if image_size < 48 else 1
    s = image_size * supersample
    chunk = max(1, CHUNK_BUDGET // (K_SUPERFICIAL * s * s))
    out = np.empty((len(rows), image_size, image_size, 3), dtype=np.uint8)
    extra = plan.split[plan.image_lesion[rows]] == ORACLE_SPLIT
    for stream, part in ((1, np.flatnonzero(~extra)), (2, np.flatnonzero(extra))):
        for n, start in enumerate(range(0, len(part), chunk)):
            at = part[start : start + chunk]
            rng = np.random.default_rng([plan.seed, _name_key(plan.spec.name), stream, image_size, n])
            out[at] = _render_chunk(plan, rows[at], image_size, supersample, rng)
    return out


def get_spec(name: str) -> TwinSpec:
    if name not in TWINS:
        raise DataError(f"no synthetic twin named {name!r}; twins: {', '.join(sorted(TWINS))}")
    return TWINS[name]


def render_spec(
    spec: TwinSpec,
    *,
    image_size: int,
    scale: float,
    min_class_images: int,
    seed: int,
    eval_lesions: tuple[int, int] = (0, 0),
    oracle: int = 0,
) -> RawDataset:
    """Render a twin from an explicit :class:`TwinSpec` (e.g. with changed knobs); see
    :func:`plan_twin` for ``eval_lesions`` and ``oracle``."""
    plan = plan_twin(spec, scale=scale, min_class_images=min_class_images, seed=seed, eval_lesions=eval_lesions,
                     oracle=oracle)
    images = render_plan(plan, image_size)
    n = len(plan)
    table = ImageTable(
        images=images,
        labels=plan.label[plan.image_lesion],
        lesion=plan.lesion_id[plan.image_lesion],
        modality=plan.modality,
        source=np.array([f"synthetic://{spec.name}/{k}" for k in range(n)]),
        twin=plan.twin,
        split=plan.split[plan.image_lesion],
    )
    provenance = {
        "source": "synthetic",
        "generator": "datasets.synthetic",
        "generator_version": GENERATOR_VERSION,
        "twin": spec.name,
        "image_size": image_size,
        "scale": scale,
        "min_class_images": min_class_images,
        "eval_lesions": {"val": int(eval_lesions[0]), "test": int(eval_lesions[1])},
        "oracle": int(oracle),
        "seed": seed,
        "spec": dataclasses.asdict(spec),
    }
    counts = {m: int((plan.modality == m).sum()) for m in np.unique(plan.modality)}
    held = {s: len(np.unique(plan.lesion_id[plan.split == s])) for s in ("val", "test")}
    notes = [
        f"synthetic twin of {spec.mirrors}: {n} procedurally rendered images "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())}) of {len(plan.lesion_id)} synthetic lesions "
        f"({held['val']} validation, {held['test']} test), scale {scale:g}, seed {seed}, "
        f"generator v{GENERATOR_VERSION}; no real images."
    ]
    if oracle:
        extra = int(np.sum(plan.split == ORACLE_SPLIT))
        notes.append(f"WLI oracle: {extra} extra WLI training lesions ({oracle}x the WLI training lesions in all), "
                     "used only by the WLI-oracle reference run.")
    return RawDataset(
        table=table,
        classes=list(spec.classes),
        student_modality=spec.student_modality,
        teacher_modality=spec.teacher_modality,
        provenance=provenance,
        notes=notes,
    )


def render_twin(
    name: str,
    *,
    image_size: int,
    scale: float,
    min_class_images: int,
    seed: int,
    eval_lesions: tuple[int, int] = (0, 0),
    oracle: int = 0,
) -> RawDataset:
    """Render the synthetic twin ``name`` (a key of :data:`datasets.twins.TWINS`)."""
    return render_spec(get_spec(name), image_size=image_size, scale=scale, min_class_images=min_class_images,
                       seed=seed, eval_lesions=eval_lesions, oracle=oracle)
