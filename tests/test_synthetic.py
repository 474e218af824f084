"""The synthetic WLI/NBI generator: determinism, twin property, lesion-level splits,
counts, and that NBI carries the class texture more strongly than WLI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from datasets.base import DataError
from datasets.catalog import DataRequest, load_dataset
from datasets.splits import check_no_lesion_leak, make_splits
from datasets.synthetic import EVAL_FLOOR_FACTOR, GENERATOR_VERSION, plan_twin, render_plan, render_twin
from datasets.twins import TWINS


def _render(name: str = "synth", seed: int = 0, size: int = 16, scale: float = 0.02, floor: int = 3):
    return render_twin(name, image_size=size, scale=scale, min_class_images=floor, seed=seed)


def test_same_seed_gives_identical_images_and_table():
    a, b = _render(seed=3), _render(seed=3)
    assert a.table.images.tobytes() == b.table.images.tobytes()
    for col in ("labels", "lesion", "modality", "source", "twin", "split"):
        assert np.array_equal(getattr(a.table, col), getattr(b.table, col)), col


def test_other_seed_gives_other_images():
    a, b = _render(seed=0), _render(seed=1)
    n = min(len(a.table), len(b.table))
    assert not np.array_equal(a.table.images[:n], b.table.images[:n])
    # Same seed, another twin: different lesions too.
    c = _render("piccolo", seed=0)
    assert not np.array_equal(a.table.images[:10], c.table.images[:10])


def test_paired_images_share_their_latent_lesion_and_unpaired_do_not():
    plan = plan_twin("piccolo", scale=0.03, min_class_images=4, seed=0)
    twin, les, mod = plan.twin, plan.image_lesion, plan.modality
    paired = np.flatnonzero(twin >= 0)
    assert len(paired) > 0 and len(paired) % 2 == 0
    assert np.array_equal(twin[twin[paired]], paired)  # one-to-one
    assert np.array_equal(les[paired], les[twin[paired]])  # same latent lesion ...
    assert np.array_equal(plan.texture[les[paired]], plan.texture[les[twin[paired]]])
    assert set(zip(mod[paired], mod[twin[paired]], strict=True)) == {("wli", "nbi"), ("nbi", "wli")}
    # ... seen through independent views: twins are not pixel-aligned.
    assert np.all(plan.view["angle"][paired] != plan.view["angle"][twin[paired]])
    assert np.all(plan.view["centre"][paired] != plan.view["centre"][twin[paired]])

    unpaired = np.flatnonzero(twin < 0)
    assert set(mod[unpaired]) == {"wli", "nbi"}
    for k in np.unique(les[unpaired]):
        rows = np.flatnonzero(les == k)
        assert len(set(mod[rows])) == 1, "an unpaired lesion must be rendered in one modality only"
        assert np.all(twin[rows] < 0)
    # Unpaired WLI and NBI lesions are distinct latents.
    assert not set(les[unpaired][mod[unpaired] == "wli"]) & set(les[unpaired][mod[unpaired] == "nbi"])


def test_table_exposes_the_plan():
    plan = plan_twin("polypset", scale=0.02, min_class_images=3, seed=5)
    raw = render_twin("polypset", image_size=12, scale=0.02, min_class_images=3, seed=5)
    t = raw.table
    assert np.array_equal(t.lesion, plan.lesion_id[plan.image_lesion])
    assert np.array_equal(t.twin, plan.twin)
    assert np.array_equal(t.labels, plan.label[plan.image_lesion])
    assert np.array_equal(t.images, render_plan(plan, 12))
    paired = np.flatnonzero(t.twin >= 0)
    assert np.array_equal(t.lesion[paired], t.lesion[t.twin[paired]])
    assert list(t.source[:2]) == ["synthetic://polypset/0", "synthetic://polypset/1"]
    assert len(set(t.source)) == len(t)


def test_views_per_lesion_within_spec():
    plan = plan_twin("piccolo", scale=0.05, min_class_images=4, seed=0)
    images_per_lesion = np.bincount(plan.image_lesion)
    paired = plan.group == "paired"
    views = np.where(paired, images_per_lesion // 2, images_per_lesion)
    lo, hi = TWINS["piccolo"].views
    assert views.min() >= 1 and views.max() <= hi
    assert (views >= lo).mean() > 0.9  # only a class's last lesion may be cut short
    assert len(set(views.tolist())) > 1


@pytest.mark.parametrize("name", ["piccolo", "ih_gc"])
def test_split_is_lesion_level_and_serves_every_regime(name):
    raw = render_twin(name, image_size=16, scale=0.03, min_class_images=4, seed=0, oracle=2)
    t = raw.table
    for lesion in np.unique(t.lesion):
        assert len(set(t.split[t.lesion == lesion])) == 1
    splits = make_splits(t, raw.classes, "wli", "nbi", seed=0)
    check_no_lesion_leak(t, splits)
    for role, idx in splits.__dict__.items():
        assert len(idx) > 0, role
    assert set(t.modality[splits.test_student]) == {"wli"}
    assert set(t.modality[splits.test_teacher]) == {"nbi"}
    # Teacher and student are scored on the same held-out lesions.
    assert set(t.lesion[splits.test_student]) == set(t.lesion[splits.test_teacher])
    assert np.array_equal(t.twin[splits.paired_student], splits.paired_teacher)


def test_catalog_serves_the_twin_with_all_regimes():
    bundle = load_dataset(
        DataRequest(name="polypset:synthetic", image_size=12, scale=0.02, min_class_images=3), log=lambda _: None
    )
    assert bundle.dataset_id == "polypset-synthetic" and bundle.synthetic
    assert bundle.regimes() == ("paired", "unpaired", "all", "same")
    check_no_lesion_leak(bundle.table, bundle.splits)
    default = load_dataset(DataRequest(name="synth", image_size=12, scale=0.02, min_class_images=3))
    assert default.dataset_id == "synth" and default.num_classes == 3


def _expected(base: float, scale: float, floor: int, split: str) -> int:
    least = floor * (EVAL_FLOOR_FACTOR if split != "train" else 1)
    return max(least, round(base * scale)) if base > 0 else 0


@pytest.mark.parametrize("name,scale,floor", [("piccolo", 0.05, 5), ("ih_polyp", 0.02, 4), ("synth", 0.1, 2)])
def test_cross_modal_counts_follow_spec_times_scale_with_floor(name, scale, floor):
    spec = TWINS[name]
    plan = plan_twin(name, scale=scale, min_class_images=floor, seed=0)
    lab, split, group = plan.label[plan.image_lesion], plan.split[plan.image_lesion], plan.group[plan.image_lesion]
    held = {"test": spec.test_fraction, "val": spec.val_fraction}
    held["train"] = 1 - spec.test_fraction - spec.val_fraction
    for c, frac in enumerate(spec.class_fractions):
        for s, f in held.items():
            got = np.sum((group == "paired") & (split == s) & (lab == c) & (plan.modality == "wli"))
            assert got == _expected(spec.paired * f * frac, scale, floor, s), (c, s)
            nbi = np.sum((group == "paired") & (split == s) & (lab == c) & (plan.modality == "nbi"))
            assert nbi == got
        for g, size in (("wli", spec.unpaired_student), ("nbi", spec.unpaired_teacher)):
            got = np.sum((group == g) & (lab == c))
            assert got == _expected(size * frac, scale, floor, "train"), (c, g)
            assert np.all(split[(group == g) & (lab == c)] == "train")


def test_single_modality_twin_keeps_published_imbalance():
    spec = TWINS["ham10000"]
    assert spec.class_counts == (6705, 1113, 1099, 514, 327, 142, 115) and sum(spec.class_counts) == 10015
    assert sum(TWINS["isic2019"].class_counts) == 25331
    assert TWINS["aptos"].class_counts == (1805, 370, 999, 193, 295)
    raw = render_twin("ham10000", image_size=8, scale=0.05, min_class_images=3, seed=0)
    t = raw.table
    assert raw.student_modality == raw.teacher_modality == "derm"
    assert set(t.modality) == {"derm"} and np.all(t.twin == -1)
    frac_train = 1 - spec.val_fraction - spec.test_fraction
    for c, n in enumerate(spec.class_counts):
        assert np.sum((t.labels == c) & (t.split == "train")) == max(3, round(n * frac_train * 0.05))
    counts = np.bincount(t.labels)
    assert counts[0] == counts.max() and counts[0] > 5 * counts[-1]
    splits = make_splits(t, raw.classes, "derm", "derm", seed=0)
    check_no_lesion_leak(t, splits)


def _band_energies(images: np.ndarray) -> np.ndarray:
    """Log energy of three difference-of-Gaussians bands (fine to coarse) in the central crop."""
    from scipy.ndimage import gaussian_filter

    x = images.astype(np.float64).mean(axis=-1)
    blurred = [x] + [gaussian_filter(x, (0, s, s)) for s in (0.7, 1.5, 3.0)]
    c = x.shape[1] // 4
    return np.stack(
        [np.log(((a - b)[:, c:-c, c:-c] ** 2).mean(axis=(1, 2))) for a, b in itertools.pairwise(blurred)], axis=1
    )


def _class_texture_separation(images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean finest-band energy, and the class separability of the band energies
    (Fisher criterion trace(S_w^-1 S_b))."""
    f = _band_energies(images)
    mu = f.mean(axis=0)
    classes = np.unique(labels)
    shift = {k: f[labels == k].mean(axis=0) - mu for k in classes}
    s_b = sum((labels == k).mean() * np.outer(shift[k], shift[k]) for k in classes)
    s_w = sum((labels == k).mean() * np.cov(f[labels == k].T) for k in classes)
    return float(np.exp(f[:, 0]).mean()), float(np.trace(np.linalg.solve(s_w, s_b)))


def test_nbi_carries_more_class_texture_than_wli():
    raw = render_twin("synth", image_size=32, scale=0.08, min_class_images=8, seed=0)
    t = raw.table
    nbi, wli = t.modality == "nbi", t.modality == "wli"
    nbi_energy, nbi_sep = _class_texture_separation(t.images[nbi], t.labels[nbi])
    wli_energy, wli_sep = _class_texture_separation(t.images[wli], t.labels[wli])
    assert nbi_energy > 2 * wli_energy
    assert nbi_sep > 3 * wli_sep


def test_wli_leak_knob_controls_texture_in_wli():
    import dataclasses

    from datasets.synthetic import render_spec

    def wli_energy(leak: float) -> float:
        spec = dataclasses.replace(TWINS["synth"], wli_leak=leak, noise=0.0)
        raw = render_spec(spec, image_size=32, scale=0.02, min_class_images=4, seed=0)
        wli = raw.table.modality == "wli"
        return _class_texture_separation(raw.table.images[wli], raw.table.labels[wli])[0]

    assert wli_energy(0.0) < wli_energy(0.3) < wli_energy(1.0)


def test_provenance_and_notes_say_synthetic():
    raw = _render("ih_gc", seed=4)
    p = raw.provenance
    assert p["generator_version"] == GENERATOR_VERSION and p["seed"] == 4 and p["twin"] == "ih_gc"
    assert p["scale"] == 0.02 and p["image_size"] == 16 and p["min_class_images"] == 3
    assert p["spec"]["wli_leak"] == TWINS["ih_gc"].wli_leak
    assert any("synthetic" in note for note in raw.notes)
    assert raw.classes == list(TWINS["ih_gc"].classes)


def test_every_twin_renders_and_has_every_class():
    for name, spec in TWINS.items():
        raw = render_twin(name, image_size=8, scale=0.01, min_class_images=2, seed=0)
        assert set(np.unique(raw.table.labels)) == set(range(len(spec.classes))), name
        assert raw.table.images.shape[1:] == (8, 8, 3)
        plan = plan_twin(name, scale=0.01, min_class_images=2, seed=0)
        assert len(set(plan.lesion_id)) == len(plan.lesion_id), name


def test_bad_arguments_are_named():
    with pytest.raises(DataError, match=r"no synthetic twin named 'nope'.*piccolo"):
        _render("nope")
    with pytest.raises(DataError, match="scale"):
        _render(scale=0.0)
    with pytest.raises(DataError, match="image_size"):
        _render(size=4)


def test_eval_lesions_size_held_out_sets_in_lesions_by_class_share():
    spec = TWINS["piccolo"]
    plan = plan_twin("piccolo", scale=0.02, min_class_images=3, seed=0, eval_lesions=(20, 60))
    for split, n in (("val", 20), ("test", 60)):
        rows = plan.split == split
        per_class = np.bincount(plan.label[rows], minlength=3)
        assert per_class.tolist() == [max(2, round(n * f)) for f in spec.class_fractions], split
        views = np.bincount(plan.image_lesion, minlength=len(plan.label))[rows] // 2  # pairs per lesion
        lo, hi = spec.eval_views
        assert views.min() >= lo and views.max() <= hi and len(set(views.tolist())) > 1
    # Training roles keep the paper's sizes: as many training images per class and modality.
    base = plan_twin("piccolo", scale=0.02, min_class_images=3, seed=0)

    def train_images(p):
        rows = p.split[p.image_lesion] == "train"
        return sorted(zip(p.modality[rows], p.label[p.image_lesion][rows], strict=True))

    assert train_images(plan) == train_images(base)


@pytest.mark.parametrize("factor", [2, 5])
def test_oracle_adds_k_minus_1_times_the_wli_training_lesions_per_class(factor):
    plan = plan_twin("ih_gc", scale=0.05, min_class_images=3, seed=1, eval_lesions=(10, 20), oracle=factor)
    wli_train = (plan.split == "train") & np.isin(plan.group, ["paired", "wli"])
    extra = plan.split == "oracle"
    assert set(plan.group[extra]) == {"wli"}
    for c in range(2):
        assert np.sum(extra & (plan.label == c)) == (factor - 1) * np.sum(wli_train & (plan.label == c))
    images = np.isin(plan.image_lesion, np.flatnonzero(extra))
    assert set(plan.modality[images]) == {"wli"} and np.all(plan.twin[images] == -1)


def test_oracle_pool_holds_k_times_the_lesions_of_all_and_none_held_out():
    bundle = load_dataset(
        DataRequest(name="ih_gc:synthetic", image_size=8, scale=0.05, min_class_images=3, val_lesions=10,
                    test_lesions=20, oracle=5),
        log=lambda _: None,
    )
    t, s = bundle.table, bundle.splits
    check_no_lesion_leak(t, s)
    base, _ = bundle.regime_pools("all")
    oracle, _ = bundle.regime_pools("oracle")
    assert len(np.unique(t.lesion[oracle])) == 5 * len(np.unique(t.lesion[base]))
    assert set(t.modality[oracle]) == {"wli"} and set(base) < set(oracle)
    held = set(t.lesion[np.concatenate([s.val_student, s.val_teacher, s.test_student, s.test_teacher])])
    assert not held & set(t.lesion[oracle])
    # The oracle images train nothing else: no distillation regime's pool holds them.
    for regime in bundle.regimes():
        assert not set(s.oracle_student) & set(np.concatenate(bundle.regime_pools(regime))), regime
    assert "oracle" not in bundle.regimes()
    plain = load_dataset(DataRequest(name="ih_gc:synthetic", image_size=8, scale=0.05, min_class_images=3))
    with pytest.raises(DataError, match="no WLI-oracle images"):
        plain.regime_pools("oracle")


def test_oracle_lesions_leave_every_other_image_unchanged():
    kw = {"image_size": 12, "scale": 0.03, "min_class_images": 3, "seed": 2, "eval_lesions": (8, 16)}
    plain, with_oracle = render_twin("piccolo", **kw), render_twin("piccolo", oracle=3, **kw)
    n = len(plain.table)
    assert len(with_oracle.table) > n
    assert np.array_equal(plain.table.images, with_oracle.table.images[:n])
    assert np.array_equal(plain.table.lesion, with_oracle.table.lesion[:n])
    assert set(with_oracle.table.split[n:]) == {"oracle"}
    again = render_twin("piccolo", oracle=3, **kw)
    assert again.table.images.tobytes() == with_oracle.table.images.tobytes()


def test_oracle_needs_a_cross_modal_twin_and_a_factor_of_two_or_more():
    with pytest.raises(DataError, match="oracle"):
        plan_twin("piccolo", scale=0.02, min_class_images=3, seed=0, oracle=1)
    with pytest.raises(DataError, match="cross-modal"):
        plan_twin("ham10000", scale=0.02, min_class_images=3, seed=0, oracle=5)


@pytest.mark.parametrize("name", ["piccolo", "polypset", "ih_polyp", "ih_gc"])
def test_wli_of_each_endoscopy_twin_shows_the_texture_fainter_than_nbi(name):
    import dataclasses

    from datasets.synthetic import render_spec

    def energy(leak: float | None, modality: str) -> float:
        spec = TWINS[name] if leak is None else dataclasses.replace(TWINS[name], wli_leak=leak)
        raw = render_spec(spec, image_size=24, scale=0.02, min_class_images=3, seed=0, eval_lesions=(0, 60))
        t = raw.table
        rows = (t.split == "test") & (t.modality == modality)
        return _class_texture_separation(t.images[rows], t.labels[rows])[0]

    without, wli, nbi = energy(0.0, "wli"), energy(None, "wli"), energy(None, "nbi")
    assert wli > 1.2 * without, "the twin's WLI view shows no superficial texture"
    assert wli < 0.7 * nbi, "the twin's WLI view shows the texture as clearly as NBI"
