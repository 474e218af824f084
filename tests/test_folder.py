"""The generic folder layout, end to end through the catalogue."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.base import DataError
from datasets.catalog import DataRequest, load_dataset
from datasets.images import check_duplicate_content
from datasets.splits import check_no_lesion_leak

CLASSES = ("adenoma", "hyperplastic")


def save(path: Path, seed: int, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def make_tree(root: Path, mods=("White_light", "NBI"), lesions=4, views=2, classes=CLASSES) -> Path:
    """``<root>/<mod>/<class>/<c><lesion>-<view>.png``; every file has a same-named twin."""
    seed = 0
    for mod in mods:
        for c in classes:
            for les in range(lesions):
                for v in range(views):
                    seed += 1
                    save(root / mod / c / f"{c[:3]}{les}-{v}.png", seed)
    return root


def load(root: Path, **kw):
    return load_dataset(DataRequest(name=f"folder:{root}", image_size=16, **kw), log=lambda m: None)


def test_generic_layout_labels_modalities_lesions_and_pairs(tmp_path):
    root = make_tree(tmp_path / "d", mods=("White_light", "nbi"))
    b = load(root)
    t = b.table
    assert b.dataset_id == "folder-d" and not b.synthetic
    assert b.classes == ["adenoma", "hyperplastic"]
    assert (b.student_modality, b.teacher_modality) == ("wli", "nbi")
    assert len(t) == 32 and t.images.shape == (32, 16, 16, 3)
    assert sorted(set(t.modality.tolist())) == ["nbi", "wli"]
    for i in range(len(t)):
        name = Path(t.source[i]).name
        assert t.lesion[i] == name.split("-")[0]
        assert t.labels[i] == (0 if "/adenoma/" in t.source[i] else 1)
        j = t.twin[i]
        # Twins: other modality, same <class>/<file>, and the relation is symmetric.
        assert j >= 0 and t.twin[j] == i and t.modality[j] != t.modality[i]
        assert Path(t.source[j]).name == name and Path(t.source[j]).parent.name == Path(t.source[i]).parent.name
    # Every image is twinned, so D_unp is empty: `all` would repeat `paired` and is not offered.
    assert b.regimes() == ("paired", "same")
    check_no_lesion_leak(t, b.splits)
    check_duplicate_content(t, b.splits)
    assert b.provenance["layout"] == "folder" and b.provenance["n_pairs"] == 16
    # Test images are WLI for the student, NBI for the teacher.
    assert set(t.modality[b.splits.test_student].tolist()) == {"wli"}
    assert set(t.modality[b.splits.test_teacher].tolist()) == {"nbi"}


@pytest.mark.parametrize("names", [("WL", "NBI"), ("wli", "Narrow-Band"), ("white-light", "nbi"), ("WLE", "NBI")])
def test_modality_folder_aliases(tmp_path, names):
    b = load(make_tree(tmp_path / "d", mods=names, lesions=3, views=1))
    assert sorted(set(b.table.modality.tolist())) == ["nbi", "wli"]


def test_unpaired_files_and_case_insensitive_class_folders(tmp_path):
    root = make_tree(tmp_path / "d", mods=("wli", "nbi"), lesions=3, views=1)
    (root / "nbi" / "hyperplastic").rename(root / "nbi" / "Hyperplastic")
    save(root / "wli" / "adenoma" / "ade9-0.png", 500)  # no NBI partner
    save(root / "nbi" / "Hyperplastic" / "hyp9-5.png", 501)  # no WLI partner
    b = load(root)
    t = b.table
    assert b.classes == ["adenoma", "hyperplastic"]
    lonely = [i for i in range(len(t)) if Path(t.source[i]).stem in ("ade9-0", "hyp9-5")]
    assert all(t.twin[i] == -1 for i in lonely)
    assert (t.twin >= 0).sum() == 12
    assert t.labels[next(i for i in lonely if "hyp9" in t.source[i])] == 1


def test_pairs_csv_sets_pairs_and_lesions(tmp_path):
    root = make_tree(tmp_path / "d", mods=("wli", "nbi"), lesions=3, views=2)
    # Cross pairs (different file names), paths relative to the modality folder or to the root.
    (root / "pairs.csv").write_text(
        "wli,nbi,lesion_id\n"
        "adenoma/ade0-0.png,adenoma/ade0-1.png,A0\n"
        "wli/hyperplastic/hyp1-1.png,nbi/hyperplastic/hyp1-0.png,H1\n"
    )
    b = load(root)
    t = b.table
    src = [Path(s).relative_to(root).as_posix() for s in t.source]
    idx = {s: i for i, s in enumerate(src)}
    assert (t.twin >= 0).sum() == 4  # only the listed pairs; same-name matching is off
    assert t.twin[idx["wli/adenoma/ade0-0.png"]] == idx["nbi/adenoma/ade0-1.png"]
    assert t.twin[idx["nbi/hyperplastic/hyp1-0.png"]] == idx["wli/hyperplastic/hyp1-1.png"]
    assert t.lesion[idx["wli/adenoma/ade0-0.png"]] == "A0" == t.lesion[idx["nbi/adenoma/ade0-1.png"]]
    assert t.lesion[idx["wli/adenoma/ade1-0.png"]] == "ade1"
    assert any("2 WLI/NBI pair(s) from" in n for n in b.notes)


def test_single_modality_root_serves_same_only(tmp_path):
    root = make_tree(tmp_path / "d", mods=(".",), lesions=4, views=1, classes=("benign", "malignant", "other"))
    b = load(root)
    assert b.classes == ["benign", "malignant", "other"]
    assert (b.student_modality, b.teacher_modality) == ("img", "img")
    assert set(b.table.modality.tolist()) == {"img"} and (b.table.twin == -1).all()
    assert b.regimes() == ("same",)


def test_classes_txt_sets_label_order_and_subfolders_are_lesions(tmp_path):
    root = tmp_path / "d"
    for k, (mod, c, les) in enumerate((m, c, le) for m in ("wli", "nbi") for c in CLASSES for le in range(3)):
        save(root / mod / c / f"p{c[0]}{les}" / "frame1.png", 1000 + k)
    (root / "classes.txt").write_text("hyperplastic\nadenoma\n")
    b = load(root)
    assert b.classes == ["hyperplastic", "adenoma"]
    t = b.table
    for i in range(len(t)):
        assert t.lesion[i] == Path(t.source[i]).parent.name
        assert t.labels[i] == (1 if "/adenoma/" in t.source[i] else 0)
    (root / "classes.txt").write_text("hyperplastic\nadenomas\n")
    with pytest.raises(DataError, match=r"must list every class folder once.*'adenomas'.*'adenoma'"):
        load(root)


def test_cache_dir_gives_a_memory_mapped_table(tmp_path):
    root = make_tree(tmp_path / "d", mods=("wli", "nbi"), lesions=3, views=1)
    a = load(root, cache_dir=str(tmp_path / "cache"))
    b = load(root, cache_dir=str(tmp_path / "cache"))
    assert isinstance(b.table.images, np.memmap)
    np.testing.assert_array_equal(a.table.images, b.table.images)
    assert a.provenance["files_sha256"] == b.provenance["files_sha256"]
