"""Published endoscopy layouts (CPC-Paired, PICCOLO, PolypsSet) on tiny synthetic-pixel fixture trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.base import DataError
from datasets.catalog import DataRequest, load_dataset
from datasets.splits import check_no_lesion_leak

WL_RGB = (185, 95, 80)  # red-pink white light
NBI_RGB = (90, 125, 115)  # teal-brown NBI


def save(path: Path, seed: int, tint=None, size=(14, 10), ext_format=None) -> Path:
    """Noise image, optionally centred on a tint so the colour heuristic has something to see."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if tint is None:
        arr = rng.integers(0, 256, (size[1], size[0], 3))
    else:
        arr = np.asarray(tint) + rng.integers(-20, 21, (size[1], size[0], 3))
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, format=ext_format)
    return path


def load(root: Path, name: str, **kw):
    return load_dataset(DataRequest(name=name, data_root=str(root), image_size=16, **kw), log=lambda m: None)


# ----------------------------------------------------------------------------- CPC-Paired


def make_cpc(root: Path, wl_folder="White_light", classes=("adenomas", "hyperplastic_lesions")) -> None:
    seed = 0
    for mod in (wl_folder, "NBI"):
        for cls in classes:
            lesions = ["01", "02", "03", "04"] if cls in ("adenomas", "abnormal") else ["011", "021", "031"]
            for les in lesions:
                for k in (1, 2):
                    seed += 1
                    save(root / mod / cls / f"{les}-{k}.png", seed)


def test_cpc_paired_labels_pairs_and_lesions(tmp_path):
    make_cpc(tmp_path / "cpc_paired" / "dataset")  # the release's folder one level down
    b = load(tmp_path, "cpc_paired")
    t = b.table
    assert b.dataset_id == "cpc_paired" and b.classes == ["hyperplastic", "adenoma"]
    assert len(t) == 28
    for i in range(len(t)):
        src = Path(t.source[i])
        assert t.labels[i] == (1 if src.parent.name == "adenomas" else 0)  # 1 = adenoma (neoplastic)
        assert t.lesion[i] == src.stem.split("-")[0]
        assert t.modality[i] == ("wli" if src.parent.parent.name == "White_light" else "nbi")
        j = t.twin[i]
        assert Path(t.source[j]).name == src.name and t.modality[j] != t.modality[i] and t.twin[j] == i
    assert (t.split == "").all()  # no official split: drawn by lesion
    check_no_lesion_leak(t, b.splits)
    assert len(b.splits.paired_student) > 0 and len(b.splits.unpaired_student) == 0
    assert "paired" in b.regimes()
    assert any("1 = adenoma" in n for n in b.notes)


def test_cpc_paired_polypsalign_spelling_keeps_the_same_convention(tmp_path):
    make_cpc(tmp_path / "cpc_paired", wl_folder="white_light", classes=("abnormal", "normal"))
    b = load(tmp_path, "cpc_paired")
    t = b.table
    assert all(t.labels[i] == (1 if "/abnormal/" in t.source[i] else 0) for i in range(len(t)))


def test_cpc_paired_unexpected_class_folder(tmp_path):
    make_cpc(tmp_path / "cpc_paired")
    save(tmp_path / "cpc_paired" / "NBI" / "serrated" / "05-1.png", 99)
    with pytest.raises(DataError, match=r"serrated: unexpected class folder\. Expected one of .*adenomas"):
        load(tmp_path, "cpc_paired")


# ----------------------------------------------------------------------------- PICCOLO

PICCOLO_CSV_HEADER = (
    "CODE - LESION;CODE - VIDEO;NUMBER OF POLYPS OF INTEREST;CURRENT POLYP ID;POLYP SIZE (mm);"
    "PARIS CLASSIFICATION;NICE;PRELIMINAR DIAGNOSIS;LITERAL DIAGNOSIS (Pathologist);"
    "HISTOLOGICAL STRATIFICATION;Set"
)


def piccolo_row(code: int, diagnosis: str, note: str = "") -> str:
    return f"{code};VP{code};1;1/1;5;0-IIa;{note};{diagnosis};{diagnosis};no dysplasia;Train"


def make_piccolo(root: Path, nested: bool = False) -> dict[str, str]:
    """Lesions 1-6 over three splits; lesion 7 has no diagnosis; returns file name -> true modality."""
    lesions = {"train": [1, 2, 3, 7], "validation": [4], "test": [5, 6]}
    diagnosis = {1: "Hyperplasia", 2: "Adenoma", 3: "Adenocarcinoma", 4: "Adenoma", 5: "Hyperplasia", 6: "Adenoma"}
    truth = {}
    seed = 0
    for split, codes in lesions.items():
        polyps = root / split / (f"{split}/polyps" if nested and split == "train" else "polyps")
        for code in codes:
            for f in range(3):
                seed += 1
                name = f"{code:03d}_VP{code}_frame{f:04d}.png"
                mod = "nbi" if f == 2 else "wli"
                save(polyps / name, seed, tint=NBI_RGB if mod == "nbi" else WL_RGB)
                truth[name] = mod
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
    rows = [PICCOLO_CSV_HEADER] + [piccolo_row(c, d) for c, d in diagnosis.items()]
    rows.append(piccolo_row(7, ""))
    # Non-UTF-8 byte (Latin-1 'ñ') as in the release.
    text = "\n".join(rows).replace("0-IIa", "0-IIa peque\xf1o", 1) + "\n"
    (root / "clinical metadata_release0.1.csv").write_bytes(text.encode("latin-1"))
    return truth


def test_piccolo_labels_split_lesions_and_colour_modality(tmp_path, capsys):
    truth = make_piccolo(tmp_path / "piccolo" / "piccolo dataset-release0.1", nested=True)
    b = load(tmp_path, "piccolo")
    t = b.table
    err = capsys.readouterr().err
    assert b.classes == ["Hyperplasia", "Adenoma", "Adenocarcinoma"]
    assert len(t) == 18  # lesion 7 (no diagnosis) dropped
    expect_label = {"1": 0, "2": 1, "3": 2, "4": 1, "5": 0, "6": 1}
    expect_split = {"1": "train", "2": "train", "3": "train", "4": "val", "5": "test", "6": "test"}
    for i in range(len(t)):
        name = Path(t.source[i]).name
        assert t.lesion[i] == str(int(name[:3]))
        assert t.labels[i] == expect_label[t.lesion[i]]
        assert t.split[i] == expect_split[t.lesion[i]]
        assert t.modality[i] == truth[name]
    assert (t.twin == -1).all()
    assert "colour heuristic called 6 of 18 frames NBI" in err
    assert any("dropped 1 metadata row(s) without a Hyperplasia/Adenoma/Adenocarcinoma diagnosis" in n for n in b.notes)
    assert any("dropped 3 frame(s) of lesion(s) 7" in n for n in b.notes)
    # Official split kept; no paired data on PICCOLO: it serves unpaired (and same).
    assert len(b.splits.paired_student) == 0 and "unpaired" in b.regimes() and "paired" not in b.regimes()
    assert set(t.lesion[b.splits.test_student].tolist()) == {"5", "6"}
    check_no_lesion_leak(t, b.splits)


def test_piccolo_modality_list_overrides_the_heuristic(tmp_path, capsys):
    root = tmp_path / "piccolo"
    truth = make_piccolo(root)
    # Invert the colour evidence: the list says frame 0 is NBI, whatever its colour.
    lines = ["file,modality"]
    for split in ("train", "validation", "test"):
        for f in sorted((root / split / "polyps").iterdir()):
            mod = "NBI" if f.name.endswith("frame0000.png") else "White_light"
            rel = f.relative_to(root).as_posix() if split == "train" else f.name  # relative path or bare name
            lines.append(f"{rel},{mod}")
    (tmp_path / "mods.csv").write_text("\n".join(lines) + "\n")
    b = load(tmp_path, "piccolo", modality_list=str(tmp_path / "mods.csv"))
    t = b.table
    for i in range(len(t)):
        name = Path(t.source[i]).name
        assert t.modality[i] == ("nbi" if name.endswith("frame0000.png") else "wli")
    # The list won where the colours say otherwise (frame 2 looks NBI, frame 0 looks white light).
    assert sum(truth[Path(src).name] != mod for src, mod in zip(t.source, t.modality, strict=True)) == 12
    assert "modalities from" in capsys.readouterr().err

    (tmp_path / "mods.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"mods\.csv gives no modality for 1 of 18 image\(s\), e\.g\. test/polyps/"):
        load(tmp_path, "piccolo", modality_list=str(tmp_path / "mods.csv"))


def test_piccolo_missing_metadata_csv(tmp_path):
    make_piccolo(tmp_path / "piccolo")
    (tmp_path / "piccolo" / "clinical metadata_release0.1.csv").unlink()
    with pytest.raises(DataError, match=r"no 'clinical metadata_release0\.1\.csv' found .* copy it from the release"):
        load(tmp_path, "piccolo")


# ----------------------------------------------------------------------------- PolypsSet

VOC = "<annotation><filename>{n}</filename><size><width>14</width></size>{objects}</annotation>"
OBJ = "<object><name>{c}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"


def make_polypsset(root: Path) -> dict[str, tuple[int, str, str]]:
    """train2019 flat, val/test by sequence; returns relative image path -> (label, lesion, modality)."""
    truth = {}
    seed = 0

    def frame(split: str, rel: str, cls: str | None, mod: str) -> None:
        nonlocal seed
        seed += 1
        save(root / split / "Image" / rel, seed, tint=NBI_RGB if mod == "nbi" else WL_RGB, ext_format="JPEG")
        objects = OBJ.format(c=cls) if cls else ""
        xml = (root / split / "Annotation" / rel).with_suffix(".xml")
        xml.parent.mkdir(parents=True, exist_ok=True)
        xml.write_text(VOC.format(n=rel, objects=objects))
        if cls:
            seq = f"{split}/{Path(rel).parent.as_posix()}" if "/" in rel else f"{split}/{Path(rel).stem}"
            truth[f"{split}/Image/{rel}"] = (1 if cls == "adenomatous" else 0, seq, mod)

    for n in range(1, 9):
        frame("train2019", f"{n}.jpg", "adenomatous" if n % 2 else "hyperplastic", "nbi" if n % 4 == 0 else "wli")
    frame("train2019", "9.jpg", None, "wli")  # negative frame: no <object>
    for split, seqs in (
        ("val2019", {"1": "hyperplastic", "2": "adenomatous"}),
        ("test2019", {"1": "adenomatous", "3": "hyperplastic"}),
    ):
        for seq, cls in seqs.items():
            for k in range(1, 4):
                frame(split, f"{seq}/{k}.jpg", cls, "nbi" if k == 3 else "wli")
    return truth


def test_polypsset_labels_sequences_and_splits(tmp_path, capsys):
    truth = make_polypsset(tmp_path / "polypset" / "PolypsSet")
    b = load(tmp_path, "polypset")
    t = b.table
    assert b.classes == ["hyperplastic", "adenoma"]
    assert len(t) == len(truth) == 20
    base = tmp_path / "polypset" / "PolypsSet"
    for i in range(len(t)):
        label, lesion, mod = truth[Path(t.source[i]).relative_to(base).as_posix()]
        assert (t.labels[i], t.lesion[i], t.modality[i]) == (label, lesion, mod)
        assert t.split[i] == {"train2019": "train", "val2019": "val", "test2019": "test"}[lesion.split("/")[0]]
    # Sequence numbers are video ids, not classes: val2019/1 and test2019/1 are different lesions.
    assert t.labels[t.lesion == "val2019/1"].tolist() == [0, 0, 0]
    assert t.labels[t.lesion == "test2019/1"].tolist() == [1, 1, 1]
    assert any("dropped 1 frame(s) with no polyp object (negative frame)" in n for n in b.notes)
    assert "colour heuristic called 6 of 20 frames NBI" in capsys.readouterr().err
    check_no_lesion_leak(t, b.splits)
    assert "paired" not in b.regimes() and "unpaired" in b.regimes()
    # The release's spelling is another name of the dataset: its folder is found under either name, and
    # its runs are filed under the catalogue name.
    (tmp_path / "polypset").rename(tmp_path / "PolypsSet")
    said: list[str] = []
    alias = load_dataset(DataRequest(name="polypsset", data_root=str(tmp_path), image_size=16), log=said.append)
    assert alias.dataset_id == "polypset" and not alias.synthetic and len(alias.table) == 20
    assert said == ["[kdbench] 'polypsset' is another spelling of 'polypset': read as 'polypset'"]
    assert load(tmp_path, "polypset").dataset_id == "polypset"


def test_polypsset_unparsable_xml(tmp_path, capsys):
    make_polypsset(tmp_path / "polypset")
    bad = tmp_path / "polypset" / "val2019" / "Annotation" / "1" / "2.xml"
    bad.write_text("<annotation><object><name>adenomatous")
    b = load(tmp_path, "polypset")
    assert len(b.table) == 19
    assert f"skipped frame of unparsable annotation {bad}" in capsys.readouterr().err
    with pytest.raises(DataError, match=r"(?s)1 annotation XML file\(s\) cannot be parsed.*--on-bad-image skip"):
        load(tmp_path, "polypset", on_bad_image="error")
