"""Image decoding: modes, resizing, large images, bad files, the decoded-image cache, content hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import images as images_mod
from datasets.base import DataError, ImageTable, LoadOptions, Splits
from datasets.images import (
    check_duplicate_content,
    content_hashes,
    decode_image,
    load_images,
    nbi_by_colour,
    open_reduced,
)


def uniform(path: Path, mode: str, value, size=(10, 6)) -> Path:
    Image.new(mode, size, value).save(path)
    return path


def noise(path: Path, seed: int, size=(12, 10)) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def test_modes_are_converted_to_rgb8(tmp_path):
    cases = {
        "gray.png": (uniform(tmp_path / "gray.png", "L", 77), [77, 77, 77]),
        "bw.png": (uniform(tmp_path / "bw.png", "1", 1), [255, 255, 255]),
        "cmyk.jpg": (uniform(tmp_path / "cmyk.jpg", "CMYK", (0, 0, 0, 0)), [255, 255, 255]),
        "rgba_opaque.png": (uniform(tmp_path / "rgba_opaque.png", "RGBA", (10, 200, 30, 255)), [10, 200, 30]),
        # Alpha is composited on black: a fully transparent pixel is black, half alpha halves it.
        "rgba_clear.png": (uniform(tmp_path / "rgba_clear.png", "RGBA", (250, 250, 250, 0)), [0, 0, 0]),
        "rgba_half.png": (uniform(tmp_path / "rgba_half.png", "RGBA", (200, 100, 50, 128)), [100, 50, 25]),
        "la.png": (uniform(tmp_path / "la.png", "LA", (200, 0)), [0, 0, 0]),
    }
    # 16-bit grayscale maps 0..65535 linearly to 0..255 (not clipped at 255).
    Image.fromarray(np.full((6, 10), 257 * 100, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    cases["g16.png"] = (tmp_path / "g16.png", [100, 100, 100])
    pal = Image.new("P", (10, 6), 3)
    pal.putpalette([0, 0, 0, 9, 9, 9, 18, 18, 18, 40, 80, 120] + [0] * 756)
    pal.save(tmp_path / "pal.png")
    cases["pal.png"] = (tmp_path / "pal.png", [40, 80, 120])
    for name, (path, rgb) in cases.items():
        arr = decode_image(path, 8)
        assert arr.shape == (8, 8, 3) and arr.dtype == np.uint8, name
        tol = 2 if name.endswith(".jpg") else 1
        assert np.abs(arr.astype(int) - rgb).max() <= tol, (name, arr[0, 0])


def test_resize_squashes_the_whole_frame(tmp_path):
    # 40 wide x 20 high: a green left quarter, red middle, blue right quarter.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = (0, 255, 0)
    arr[:, 10:30] = (255, 0, 0)
    arr[:, 30:] = (0, 0, 255)
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = decode_image(tmp_path / "wide.png", 8)
    # Squash keeps both outer quarters (a centre crop would lose them); the aspect ratio is not kept.
    assert out[4, 0].tolist() == [0, 255, 0]
    assert out[4, 7].tolist() == [0, 0, 255]
    assert out[4, 4].tolist() == [255, 0, 0]


def test_large_images_are_reduced_while_decoding(tmp_path):
    grad = np.linspace(0, 255, 4000, dtype=np.uint8)
    big = np.stack([np.tile(grad, (3000, 1))] * 3, axis=-1)
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=80)
    Image.fromarray(big[:2000, :3000]).save(tmp_path / "big.png")
    jpg = open_reduced(tmp_path / "big.jpg", 16)
    png = open_reduced(tmp_path / "big.png", 16)
    # Never below twice the target side (antialiased final resize), far below the original.
    assert min(jpg.size) >= 32 and max(jpg.size) <= 200, jpg.size
    assert min(png.size) >= 32 and max(png.size) <= 200, png.size
    out = decode_image(tmp_path / "big.jpg", 16)
    assert out.shape == (16, 16, 3)
    assert out[8, 0, 0] < 30 and out[8, 15, 0] > 225  # left dark, right bright: the whole frame


def _bad_files(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    good = [noise(tmp_path / f"ok{i}.png", i) for i in range(3)]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    data = (tmp_path / "ok0.png").read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    missing = tmp_path / "gone.png"
    return good, [empty, truncated, text, missing]


def test_bad_files_are_skipped_with_a_warning_each_and_a_count(tmp_path):
    good, bad = _bad_files(tmp_path)
    paths = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3]]
    arr, kept, warnings = load_images(paths, LoadOptions(image_size=8))
    assert kept.tolist() == [True, False, True, False, False, True, False]
    assert arr.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(arr[1], decode_image(good[1], 8))
    assert warnings[:-1] == [
        f"skipped {bad[0]}: empty file (0 bytes)",
        f"skipped {bad[1]}: truncated or corrupt image data (image file is truncated)",
        f"skipped {bad[2]}: not an image (Pillow cannot identify the file format)",
        f"skipped {bad[3]}: file not found",
    ]
    assert warnings[-1] == ("skipped 4 of 7 image file(s) that cannot be decoded (--on-bad-image error stops instead)")


def test_bad_files_stop_loading_in_error_mode(tmp_path):
    good, bad = _bad_files(tmp_path)
    with pytest.raises(DataError) as err:
        load_images([*good, *bad], LoadOptions(image_size=8, on_bad_image="error"))
    msg = str(err.value)
    assert msg.startswith("4 of 7 image file(s) cannot be decoded:")
    for p in bad:
        assert str(p) in msg
    assert "--on-bad-image skip" in msg
    with pytest.raises(DataError, match="--on-bad-image 'ignore' is not one of skip, error"):
        load_images(good, LoadOptions(image_size=8, on_bad_image="ignore"))


def test_thread_pool_gives_the_sequential_result(tmp_path):
    paths = [noise(tmp_path / f"n{i}.png", i) for i in range(12)]
    a, _, _ = load_images(paths, LoadOptions(image_size=8), workers=1)
    b, _, _ = load_images(paths, LoadOptions(image_size=8), workers=2)
    np.testing.assert_array_equal(a, b)


def test_cache_is_memory_mapped_and_never_decodes_again(tmp_path, monkeypatch):
    (tmp_path / "img").mkdir()
    good, bad = _bad_files(tmp_path / "img")
    paths = [*good, bad[0]]
    opts = LoadOptions(image_size=8, cache_dir=tmp_path / "cache")
    first, kept1, w1 = load_images(paths, opts)
    assert isinstance(first, np.memmap) and not first.flags.writeable
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp"))
    assert kept1.tolist() == [True, True, True, False]  # the bad row is dropped from the cache file
    for k, p in enumerate(good):
        np.testing.assert_array_equal(first[k], decode_image(p, 8))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file although the cache holds it")

    monkeypatch.setattr(images_mod, "decode_image", no_decoding)
    second, kept2, w2 = load_images(paths, opts)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(first, second)
    assert kept1.tolist() == kept2.tolist() and w1 == w2  # the bad-file warnings come from the cache too
    # Error mode still stops on a cache hit that recorded bad files.
    with pytest.raises(DataError, match=r"empty\.png"):
        load_images(paths, LoadOptions(image_size=8, cache_dir=tmp_path / "cache", on_bad_image="error"))


def test_cache_key_changes_with_files_size_and_decoder(tmp_path, monkeypatch):
    paths = [noise(tmp_path / f"n{i}.png", i) for i in range(2)]
    key = images_mod.cache_key(paths, 8)
    assert images_mod.cache_key(paths, 16) != key
    assert images_mod.cache_key(paths[::-1], 8) != key
    noise(paths[0], 99, size=(13, 10))  # rewritten file: new size and mtime
    assert images_mod.cache_key(paths, 8) != key
    key2 = images_mod.cache_key(paths, 8)
    monkeypatch.setattr(images_mod, "DECODER_VERSION", "test")
    assert images_mod.cache_key(paths, 8) != key2


@pytest.mark.parametrize("damage", ["truncate", "flip", "meta"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, capsys, damage):
    paths = [noise(tmp_path / f"n{i}.png", i) for i in range(4)]
    opts = LoadOptions(image_size=8, cache_dir=tmp_path / "cache")
    ref, _, _ = load_images(paths, opts)
    ref = np.array(ref)
    npy = next((tmp_path / "cache").glob("*.npy"))
    meta = npy.with_suffix(".json")
    data = bytearray(npy.read_bytes())
    if damage == "truncate":
        npy.write_bytes(bytes(data[:-100]))
    elif damage == "flip":
        data[-5] ^= 0xFF  # same size, different pixels: only the hash sees it
        npy.write_bytes(bytes(data))
    else:
        meta.write_text(json.dumps({"key": "x"})[:5])
    out, _, warnings = load_images(paths, opts)
    np.testing.assert_array_equal(out, ref)
    assert any(w.startswith(f"decoded-image cache {npy} is corrupt") and "rebuilt" in w for w in warnings)
    assert "is corrupt" in capsys.readouterr().err
    # Rebuilt: the next call is a clean hit.
    _, _, again = load_images(paths, opts)
    assert not any("corrupt" in w for w in again)


def _table(images: np.ndarray) -> ImageTable:
    n = len(images)
    return ImageTable(
        images=images,
        labels=np.zeros(n, np.int64),
        lesion=np.array([f"L{i}" for i in range(n)]),
        modality=np.array(["wli"] * n),
        source=np.array([f"/data/f{i}.png" for i in range(n)]),
        twin=np.full(n, -1, np.int64),
        split=np.array([""] * n),
    )


def _splits(train, val, test) -> Splits:
    e = np.zeros(0, np.int64)
    a = lambda x: np.asarray(x, np.int64)  # noqa: E731
    return Splits(e, e, a(train), e, a(val), e, a(test), e)


def test_content_hashes_and_duplicates_across_splits():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    imgs[3] = imgs[0]
    h = content_hashes(imgs)
    assert h[0] == h[3] and len(set(h.tolist())) == 4
    table = _table(imgs)
    check_duplicate_content(table, _splits([0, 3, 1], [2], [4]))  # duplicates inside train are allowed
    with pytest.raises(DataError) as err:
        check_duplicate_content(table, _splits([0, 1], [2], [3, 4]))
    msg = str(err.value)
    assert "same image content is in the train and test splits" in msg
    assert "/data/f0.png" in msg and "/data/f3.png" in msg and "same lesion id" in msg


def test_colour_heuristic_separates_white_light_from_nbi():
    wl = np.zeros((2, 8, 8, 3), np.uint8)
    wl[:] = (190, 100, 85)  # red-pink mucosa
    nbi = np.zeros((2, 8, 8, 3), np.uint8)
    nbi[:] = (95, 120, 110)  # teal-brown NBI palette
    nbi[:, :2] = 0  # black border is ignored
    wl[:, 0, 0] = 255  # so are specular highlights
    assert nbi_by_colour(np.concatenate([wl, nbi])).tolist() == [False, False, True, True]
