"""Published single-modality layouts (HAM10000, ISIC 2019, APTOS 2019) on tiny fixture trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.base import DataError, LoadOptions
from datasets.catalog import DataRequest, load_dataset
from datasets.layouts import aptos, ham10000, isic2019
from datasets.splits import check_no_lesion_leak

OPTIONS = LoadOptions(image_size=8)


def write_image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


# ------------------------------------------------------------------------------ HAM10000
HAM_DX = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def ham_tree(root: Path, lesions_per_class: int = 4) -> dict[str, tuple[str, str]]:
    """Two images for the first lesion of every class (one in each part folder), one for the others.

    Returns image_id -> (lesion_id, dx).
    """
    rows = {}
    k = 0
    for dx in HAM_DX:
        for le in range(lesions_per_class):
            lesion = f"HAM_{dx}_{le}"
            for shot in range(2 if le == 0 else 1):
                image_id = f"ISIC_{k:07d}"
                part = 1 + (shot % 2)
                write_image(root / f"HAM10000_images_part_{part}" / f"{image_id}.jpg", k)
                rows[image_id] = (lesion, dx)
                k += 1
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    lines += [f"{le},{im},{dx},histo,50.0,male,back" for im, (le, dx) in rows.items()]
    lines.append("HAM_x,ISIC_9999999,nv,histo,40.0,female,back")  # named but missing on disk
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return rows


def test_ham10000_labels_classes_and_lesions(tmp_path: Path) -> None:
    rows = ham_tree(tmp_path)
    raw = ham10000.load(tmp_path, OPTIONS)
    assert raw.classes == ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]
    assert raw.student_modality == raw.teacher_modality == "derm"
    table = raw.table
    assert len(table) == len(rows)
    assert table.images.shape == (len(rows), 8, 8, 3)
    for src, label, lesion in zip(table.source, table.labels, table.lesion, strict=True):
        want_lesion, dx = rows[Path(src).stem]
        assert raw.classes[label] == dx
        assert lesion == want_lesion
    assert set(table.modality) == {"derm"} and (table.twin == -1).all() and not any(table.split)
    assert any("not found" in n for n in raw.notes)  # the CSV row without an image file


def test_ham10000_splits_by_lesion_through_the_catalogue(tmp_path: Path) -> None:
    ham_tree(tmp_path / "ham10000")
    bundle = load_dataset(DataRequest(name="ham10000", data_root=str(tmp_path), image_size=16), log=lambda m: None)
    assert not bundle.synthetic and bundle.dataset_id == "ham10000"
    assert bundle.regimes() == ("same",)
    check_no_lesion_leak(bundle.table, bundle.splits)
    s = bundle.splits
    assert len(s.test_student) and len(s.val_student) and len(s.unpaired_student)
    # Both images of a twice-photographed lesion land in the same split.
    role = {}
    for name, arr in (("train", s.unpaired_student), ("val", s.val_student), ("test", s.test_student)):
        for i in arr:
            role.setdefault(str(bundle.table.lesion[i]), set()).add(name)
    assert all(len(v) == 1 for v in role.values())
    assert sum(len(v) for v in (s.unpaired_student, s.val_student, s.test_student)) == len(bundle.table)


def test_ham10000_reads_the_isic2018_task3_release(tmp_path: Path) -> None:
    rows = ham_tree(tmp_path)
    (tmp_path / "HAM10000_metadata.csv").unlink()
    cols = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    truth = ["image," + ",".join(cols)]
    truth += [im + "," + ",".join("1.0" if c.lower() == dx else "0.0" for c in cols) for im, (_, dx) in rows.items()]
    folder = tmp_path / "ISIC2018_Task3_Training_GroundTruth"
    folder.mkdir()
    (folder / "ISIC2018_Task3_Training_GroundTruth.csv").write_text("\n".join(truth) + "\n")
    groups = ["image,lesion_id,diagnosis_confirm_type", *[f"{im},{le},histo" for im, (le, _) in rows.items()]]
    (tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text("\n".join(groups) + "\n")
    raw = ham10000.load(tmp_path, OPTIONS)
    assert len(raw.table) == len(rows)
    for src, label, lesion in zip(raw.table.source, raw.table.labels, raw.table.lesion, strict=True):
        assert (str(lesion), raw.classes[label]) == rows[Path(src).stem]


def test_ham10000_missing_csv_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "HAM10000_images_part_1" / "ISIC_0000001.jpg", 0)
    with pytest.raises(DataError, match=r"HAM10000_metadata\.csv"):
        ham10000.load(tmp_path, OPTIONS)


def test_ham10000_missing_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "HAM10000_metadata.csv").write_text("image_id,dx\nISIC_0000001,nv\n")
    with pytest.raises(DataError, match="lesion_id"):
        ham10000.load(tmp_path, OPTIONS)


# ------------------------------------------------------------------------------ ISIC 2019
ISIC_COLS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]


def isic_tree(root: Path, with_metadata: bool = True) -> dict[str, tuple[str, str]]:
    """Four images per class (UNK never positive); the first two of each class share a lesion_id.

    Returns image_id -> (expected lesion, class).
    """
    rows, meta = {}, []
    k = 0
    for cls in ISIC_COLS[:-1]:
        for j in range(4):
            image_id = f"ISIC_{k:07d}" + ("_downsampled" if k == 5 else "")
            write_image(root / "ISIC_2019_Training_Input" / "ISIC_2019_Training_Input" / f"{image_id}.jpg", k)
            lesion_id = f"IL_{cls}" if j < 2 else ""
            meta.append(f"{image_id},55.0,anterior torso,{lesion_id},male")
            rows[image_id] = ((lesion_id or image_id) if with_metadata else image_id, cls)
            k += 1
    lines = ["image," + ",".join(ISIC_COLS)]
    for image_id, (_, cls) in rows.items():
        lines.append(image_id + "," + ",".join("1.0" if c == cls else "0.0" for c in ISIC_COLS))
    lines.append("ISIC_0099999," + ",".join("0.0" for _ in ISIC_COLS))  # no positive class: dropped
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    if with_metadata:
        (root / "ISIC_2019_Training_Metadata.csv").write_text(
            "image,age_approx,anatom_site_general,lesion_id,sex\n" + "\n".join(meta) + "\n"
        )
    return rows


@pytest.mark.parametrize("with_metadata", [True, False])
def test_isic2019_one_hot_labels_and_lesions(tmp_path: Path, with_metadata: bool) -> None:
    rows = isic_tree(tmp_path, with_metadata)
    raw = isic2019.load(tmp_path, OPTIONS)
    assert raw.classes == ISIC_COLS[:-1]  # UNK is all zero: dropped
    assert raw.student_modality == raw.teacher_modality == "derm"
    assert len(raw.table) == len(rows)
    for src, label, lesion in zip(raw.table.source, raw.table.labels, raw.table.lesion, strict=True):
        want_lesion, cls = rows[Path(src).stem]
        assert raw.classes[label] == cls
        assert lesion == want_lesion
    assert any("without a positive class" in n for n in raw.notes)
    assert any("own lesion" in n for n in raw.notes)
    if not with_metadata:
        assert any("ISIC_2019_Training_Metadata.csv not found" in n for n in raw.notes)


def test_isic2019_keeps_unk_when_it_has_images(tmp_path: Path) -> None:
    isic_tree(tmp_path)
    truth = tmp_path / "ISIC_2019_Training_GroundTruth.csv"
    lines = truth.read_text().splitlines()
    for k in range(3):
        image_id = f"ISIC_00777{k:02d}"
        write_image(tmp_path / "ISIC_2019_Training_Input" / f"{image_id}.jpg", 100 + k)
        lines.append(image_id + "," + ",".join("1" if c == "UNK" else "0" for c in ISIC_COLS))
    truth.write_text("\n".join(lines) + "\n")
    raw = isic2019.load(tmp_path, OPTIONS)
    assert raw.classes == ISIC_COLS
    assert int((raw.table.labels == ISIC_COLS.index("UNK")).sum()) == 3


def test_isic2019_lesion_level_splits(tmp_path: Path) -> None:
    isic_tree(tmp_path / "isic2019")
    bundle = load_dataset(DataRequest(name="isic2019", data_root=str(tmp_path), image_size=16), log=lambda m: None)
    check_no_lesion_leak(bundle.table, bundle.splits)
    assert bundle.num_classes == 8 and bundle.regimes() == ("same",)


def test_isic2019_missing_ground_truth_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "ISIC_2019_Training_Input" / "ISIC_0000000.jpg", 0)
    with pytest.raises(DataError, match=r"ISIC_2019_Training_GroundTruth\.csv"):
        isic2019.load(tmp_path, OPTIONS)


# ------------------------------------------------------------------------------ APTOS 2019
def aptos_tree(root: Path, per_grade: int = 3) -> dict[str, int]:
    rows = {}
    for grade in range(5):
        for j in range(per_grade):
            id_code = f"{grade:x}{j:03d}abc{grade}{j}"
            write_image(root / "train_images" / f"{id_code}.png", grade * 10 + j)
            rows[id_code] = grade
    write_image(root / "test_images" / "ffff0000.png", 999)  # unlabelled test image: not read
    lines = ["id_code,diagnosis", *[f"{k},{v}" for k, v in rows.items()], "bad0001,7"]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    (root / "test.csv").write_text("id_code\nffff0000\n")
    return rows


def test_aptos_grades_and_lesion_ids(tmp_path: Path) -> None:
    rows = aptos_tree(tmp_path)
    raw = aptos.load(tmp_path, OPTIONS)
    assert raw.classes == ["0", "1", "2", "3", "4"]
    assert raw.student_modality == raw.teacher_modality == "fundus"
    assert len(raw.table) == len(rows)
    for src, label, lesion in zip(raw.table.source, raw.table.labels, raw.table.lesion, strict=True):
        stem = Path(src).stem
        assert int(label) == rows[stem] and lesion == stem
    assert any("outside 0-4" in n for n in raw.notes)


def test_aptos_lesion_level_splits(tmp_path: Path) -> None:
    aptos_tree(tmp_path / "aptos")
    bundle = load_dataset(DataRequest(name="aptos", data_root=str(tmp_path), image_size=16), log=lambda m: None)
    check_no_lesion_leak(bundle.table, bundle.splits)
    assert bundle.student_modality == "fundus" and not bundle.synthetic


def test_aptos_missing_csv_names_the_file(tmp_path: Path) -> None:
    write_image(tmp_path / "train_images" / "abc.png", 0)
    with pytest.raises(DataError, match=r"train\.csv"):
        aptos.load(tmp_path, OPTIONS)
