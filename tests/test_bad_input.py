"""Every bad input on the data side gives a clear message that names the path and the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.base import DataError
from datasets.catalog import DataRequest, load_dataset
from datasets.images import check_duplicate_content


def save(path: Path, seed: int, size=(12, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def make_tree(root: Path, lesions: int = 3, classes=("adenoma", "hyperplastic"), mods=("wli", "nbi")) -> Path:
    seed = 0
    for mod in mods:
        for c in classes:
            for les in range(lesions):
                seed += 1
                save(root / mod / c / f"{c[:3]}{les}-0.png", seed)
    return root


def load(root: Path, **kw):
    return load_dataset(DataRequest(name=f"folder:{root}", image_size=16, **kw), log=lambda m: None)


def message(root: Path, **kw) -> str:
    with pytest.raises(DataError) as err:
        load(root, **kw)
    return str(err.value)


# ----------------------------------------------------------------------------- roots and layouts


def test_missing_root(tmp_path):
    msg = message(tmp_path / "nowhere")
    assert msg.startswith(f"data root {tmp_path / 'nowhere'} does not exist.")
    assert "<root>/{wli,nbi}/<class>/<image>" in msg and "--data-root" in msg


def test_root_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    assert "is a file, not a folder" in message(tmp_path / "f")


def test_unknown_layout_empty_root(tmp_path):
    (tmp_path / "d").mkdir()
    msg = message(tmp_path / "d")
    assert f"{tmp_path / 'd'}: unknown layout (no modality folders (wli/, nbi/) and no class folders" in msg
    assert "Found: nothing (the folder is empty)" in msg


def test_unknown_layout_images_loose_in_root(tmp_path):
    save(tmp_path / "d" / "a.png", 1)
    msg = message(tmp_path / "d")
    assert "images must sit in one folder per class, not directly in the root" in msg and "Found: a.png" in msg


def test_unknown_layout_class_before_modality(tmp_path):
    save(tmp_path / "d" / "adenoma" / "nbi" / "a.png", 1)
    (tmp_path / "d" / "adenoma" / "nbi" / "a.png").unlink()
    msg = message(tmp_path / "d")
    assert "holds modality folders (nbi)" in msg and "not <root>/<class>/wli/" in msg


def test_modality_folders_without_class_folders(tmp_path):
    (tmp_path / "d" / "wli").mkdir(parents=True)
    (tmp_path / "d" / "nbi").mkdir()
    assert "unknown layout (the modality folders hold no class folders)" in message(tmp_path / "d")


def test_one_modality_folder_only(tmp_path):
    root = make_tree(tmp_path / "d", mods=("White_light",))
    msg = message(root)
    assert f"{root} has a WLI folder (White_light/) but no NBI folder." in msg
    assert "for single-modality data put the class folders directly under" in msg


def test_two_folders_for_one_modality(tmp_path):
    root = make_tree(tmp_path / "d", mods=("WL", "wli", "nbi"))
    assert "has two WLI folders, WL/ and wli/. Merge them" in message(root)


# ----------------------------------------------------------------------------- image files


def _add_bad_files(root: Path) -> list[Path]:
    folder = root / "wli" / "adenoma"
    empty = folder / "ade7-0.png"
    empty.write_bytes(b"")
    data = (folder / "ade0-0.png").read_bytes()
    truncated = folder / "ade8-0.png"
    truncated.write_bytes(data[: len(data) // 2])
    text = folder / "readme.txt"
    text.write_text("notes about this folder")
    return [empty, truncated, text]


def test_bad_files_are_skipped_with_a_warning_each_and_a_count(tmp_path, capsys):
    root = make_tree(tmp_path / "d")
    bad = _add_bad_files(root)
    b = load(root)
    assert len(b.table) == 12
    err = capsys.readouterr().err
    assert f"skipped {bad[0]}: empty file (0 bytes)" in err
    assert f"skipped {bad[1]}: truncated or corrupt image data" in err
    assert f"skipped {bad[2]}: not an image (Pillow cannot identify the file format)" in err
    count = "skipped 3 of 15 image file(s) that cannot be decoded (--on-bad-image error stops instead)"
    assert count in err and count in b.notes


def test_bad_files_stop_loading_in_error_mode(tmp_path):
    root = make_tree(tmp_path / "d")
    bad = _add_bad_files(root)
    msg = message(root, on_bad_image="error")
    assert msg.startswith("3 of 15 image file(s) cannot be decoded:")
    assert all(str(p) in msg for p in bad) and "--on-bad-image skip" in msg


def test_grayscale_rgba_16bit_and_very_large_images_are_converted(tmp_path):
    root = make_tree(tmp_path / "d")
    folder = root / "nbi" / "hyperplastic"
    Image.new("L", (9, 7), 40).save(folder / "g1-0.png")
    Image.new("RGBA", (9, 7), (200, 10, 10, 0)).save(folder / "g2-0.png")
    Image.fromarray(np.full((7, 9), 257 * 200, np.uint16)).save(folder / "g3-0.png")
    grad = np.tile(np.linspace(0, 255, 3000, dtype=np.uint8), (2000, 1))
    Image.fromarray(np.stack([grad] * 3, -1)).save(folder / "g4-0.jpg")
    b = load(root)
    t = b.table
    img = {Path(s).stem: t.images[i] for i, s in enumerate(t.source)}
    assert len(t) == 16
    assert (img["g1-0"] == 40).all() and (img["g2-0"] == 0).all() and (img["g3-0"] == 200).all()
    assert img["g4-0"].shape == (16, 16, 3) and img["g4-0"][8, 0, 0] < 30 < 225 < img["g4-0"][8, 15, 0]


def test_class_without_any_decodable_image_in_one_modality(tmp_path):
    root = make_tree(tmp_path / "d")
    for f in (root / "nbi" / "hyperplastic").iterdir():
        f.write_bytes(b"")
    msg = message(root)
    assert "no decodable nbi image of class 'hyperplastic'" in msg and "Add readable nbi images" in msg


# ----------------------------------------------------------------------------- classes and lesions


def test_class_in_one_modality_only(tmp_path):
    root = make_tree(tmp_path / "d")
    save(root / "wli" / "serrated" / "ser0-0.png", 77)
    msg = message(root)
    assert f"class 'serrated' is in wli only ({root / 'wli' / 'serrated'})" in msg
    assert "Add nbi images of 'serrated'" in msg and f"or remove {root / 'wli' / 'serrated'}" in msg


def test_class_with_too_few_lesions_to_split(tmp_path):
    root = make_tree(tmp_path / "d")
    for mod in ("wli", "nbi"):
        for f in (root / mod / "hyperplastic").glob("hyp2-*"):
            f.unlink()
    msg = message(root)
    folders = f"{root / 'nbi' / 'hyperplastic'}, {root / 'wli' / 'hyperplastic'}"
    assert f"class 'hyperplastic' has 2 lesion(s) (hyp0, hyp1) in {folders}; at least 3 are needed" in msg
    assert "add lesions of this class, fix the file names, or remove its folders" in msg


def test_file_names_that_make_one_lesion_of_a_class(tmp_path):
    root = make_tree(tmp_path / "d")
    for mod in ("wli", "nbi"):
        for k, f in enumerate(sorted((root / mod / "adenoma").iterdir())):
            f.rename(f.with_name(f"img-{k:03d}.png"))  # the prefix rule groups them all as lesion 'img'
    msg = message(root)
    assert "class 'adenoma' has 1 lesion(s) (img)" in msg and "file-name prefix before '-'" in msg


# ----------------------------------------------------------------------------- pairs.csv


def test_pairs_csv_naming_a_missing_file(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "pairs.csv").write_text("wli,nbi\nadenoma/ade0-0.png,adenoma/ade9-0.png\n")
    msg = message(root)
    assert f"{root / 'pairs.csv'}: line 2: nbi file 'adenoma/ade9-0.png' not found" in msg
    assert str(root / "nbi" / "adenoma" / "ade9-0.png") in msg and "fix the path or remove the line" in msg


def test_pairs_csv_one_image_in_two_pairs(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "pairs.csv").write_text(
        "wli,nbi\nadenoma/ade0-0.png,adenoma/ade0-0.png\nadenoma/ade1-0.png,adenoma/ade0-0.png\n"
    )
    msg = message(root)
    assert f"{root / 'nbi' / 'adenoma' / 'ade0-0.png'} is in two pairs (lines 2 and 3)" in msg
    assert "Remove one of the two lines" in msg


def test_pairs_csv_other_mistakes(tmp_path):
    root = make_tree(tmp_path / "d")
    pairs = root / "pairs.csv"
    pairs.write_text("white,narrow\na,b\n")
    assert "the header must name the columns wli and nbi" in message(root)
    pairs.write_text("wli,nbi\nadenoma/ade0-0.png,hyperplastic/hyp0-0.png,\n")
    assert "which are in different class folders" in message(root)
    pairs.write_text("wli,nbi\nadenoma/ade0-0.png,adenoma/ade1-0.png\n")
    assert "pairs files of lesions 'ade0' and 'ade1'" in message(root)
    assert "Add a lesion_id column" in message(root)


# ----------------------------------------------------------------------------- content across splits


def test_same_image_content_in_two_splits(tmp_path):
    root = make_tree(tmp_path / "d", lesions=6)
    original = root / "wli" / "adenoma" / "ade0-0.png"
    copy = root / "wli" / "adenoma" / "copy5-0.png"
    shutil.copy(original, copy)
    for seed in range(30):
        try:
            b = load(root, data_seed=seed)
            lesion_split = {
                str(b.table.lesion[i]): role
                for role, idx in (
                    ("train", b.splits.unpaired_student),
                    ("train", b.splits.paired_student),
                    ("val", b.splits.val_student),
                    ("test", b.splits.test_student),
                )
                for i in idx
            }
            if lesion_split["ade0"] == lesion_split["copy5"]:
                check_duplicate_content(b.table, b.splits)  # same split: allowed
                continue
            check_duplicate_content(b.table, b.splits)
        except DataError as err:
            msg = str(err)
            break
    else:
        pytest.fail("no seed put the two copies in different splits, or the duplicate went unnoticed")
    assert "the same image content is in the" in msg
    assert str(original) in msg and str(copy) in msg and "delete one of the two files" in msg
