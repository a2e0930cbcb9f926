"""load_image: every PIL mode decoded to what it shows, and a clear error for oversized files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from editscope.images import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV, load_image
from editscope.store.images import ImageStore, ImageStoreError


def _rgb(path_or_image) -> np.ndarray:
    image = load_image(path_or_image)
    assert image.mode == "RGB"
    return np.asarray(image)


# --- modes ------------------------------------------------------------------------------------


def test_16_bit_gradient_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    values = np.arange(0, 65536, 257, dtype=np.uint16)[:256].reshape(16, 16)  # 0, 257, ... 65535
    path = tmp_path / "gradient16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as opened:
        assert opened.mode in {"I;16", "I"}
    decoded = _rgb(path)
    assert decoded.shape == (16, 16, 3)
    assert len(np.unique(decoded)) > 200  # not a solid white image
    expected = np.rint(values / 257.0).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], expected)


def test_16_bit_values_match_high_byte_scaling(tmp_path: Path) -> None:
    values = np.array([[0, 255, 256, 4096], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    path = tmp_path / "values16.png"
    Image.fromarray(values).save(path)
    decoded = _rgb(path)[..., 0].astype(int)
    assert np.all(np.abs(decoded - (values.astype(int) >> 8)) <= 1)
    assert decoded[0, 0] == 0 and decoded[1, 3] == 255


def test_mode_i_and_16_bit_pil_images(tmp_path: Path) -> None:
    values = np.array([[0, 1000, 30000, 65535]], dtype=np.int32)
    image_i = Image.fromarray(values)  # mode "I"
    assert image_i.mode == "I"
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(_rgb(image_i)[..., 1], expected)
    image_16 = Image.fromarray(values.astype(np.uint16))
    assert image_16.mode == "I;16"
    np.testing.assert_array_equal(_rgb(image_16)[..., 2], expected)
    assert image_i.mode == "I" and image_16.mode == "I;16"  # inputs untouched


def test_float_mode_from_unit_range_and_from_0_255() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    np.testing.assert_array_equal(_rgb(unit)[0, :, 0], [0, 128, 255])
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))
    np.testing.assert_array_equal(_rgb(wide)[0, :, 0], [0, 100, 255])


def test_grayscale_with_alpha_is_composited_over_white(tmp_path: Path) -> None:
    gray = np.array([[0, 0, 100]], dtype=np.uint8)
    alpha = np.array([[255, 0, 255]], dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(np.stack([gray, alpha], axis=-1), mode="LA").save(path)
    with Image.open(path) as opened:
        assert opened.mode == "LA"
    decoded = _rgb(path)
    np.testing.assert_array_equal(decoded[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(decoded[0, 1], [255, 255, 255])  # fully transparent
    np.testing.assert_array_equal(decoded[0, 2], [100, 100, 100])


def test_premultiplied_grayscale_with_alpha_is_composited_over_white() -> None:
    """PIL's "La" (alpha premultiplied) converts to nothing but "LA"; it was a ValueError."""
    la = Image.fromarray(np.stack([np.array([[0, 0, 100]], np.uint8), np.array([[255, 0, 255]], np.uint8)], -1),
                         mode="LA")
    decoded = np.asarray(load_image(la.convert("La")))
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 255, 100])
    assert decoded.shape == (1, 3, 3)


def test_rgba_half_transparent_is_blended_over_white() -> None:
    rgba = Image.fromarray(np.array([[[200, 0, 0, 255], [0, 0, 0, 128]]], dtype=np.uint8))
    decoded = _rgb(rgba)
    np.testing.assert_array_equal(decoded[0, 0], [200, 0, 0])
    assert np.all(np.abs(decoded[0, 1].astype(int) - 127) <= 1)


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 0, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "p.png"
    image.save(path, transparency=1)
    with Image.open(path) as opened:
        assert opened.mode == "P" and "transparency" in opened.info
    decoded = _rgb(path)
    np.testing.assert_array_equal(decoded[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(decoded[0, 1], [255, 255, 255])  # the transparent entry


def test_palette_without_transparency_cmyk_and_bilevel(tmp_path: Path) -> None:
    palette = Image.new("P", (1, 1))
    palette.putpalette([1, 2, 3] + [0] * 765)
    np.testing.assert_array_equal(_rgb(palette)[0, 0], [1, 2, 3])
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=100)
    red = _rgb(path)[0, 0].astype(int)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    path = tmp_path / "one.png"
    bilevel.save(path)
    np.testing.assert_array_equal(_rgb(path)[0], [[0, 0, 0], [255, 255, 255]])


def test_rgb_file_unchanged_and_pil_input_not_modified(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    np.testing.assert_array_equal(_rgb(path), pixels)
    rgba = Image.fromarray(np.dstack([pixels, np.full((5, 7), 255, np.uint8)]))
    np.testing.assert_array_equal(_rgb(rgba), pixels)
    assert rgba.mode == "RGBA"


# --- size limit -------------------------------------------------------------------------------


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width x height`` but whose data is one tiny row."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), then width, height
    assert data[ihdr + 4 : ihdr + 8] == b"IHDR"
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 8 + 13]))
    data[ihdr + 8 + 13 : ihdr + 8 + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    path = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError) as caught:
        load_image(path)
    assert not isinstance(caught.value, Image.DecompressionBombError)
    message = str(caught.value)
    assert str(path) in message and "900,000,000 pixels" in message
    assert f"{DEFAULT_MAX_IMAGE_PIXELS:,}" in message and MAX_IMAGE_PIXELS_ENV in message
    assert Image.MAX_IMAGE_PIXELS == before


def test_default_limit_applies_below_pils_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    path = _png_claiming(tmp_path / "large.png", 8000, 8000)  # 64 MP: under PIL's error limit
    with pytest.raises(ValueError, match=r"8000x8000 = 64,000,000 pixels"):
        load_image(path)


def test_limit_from_keyword_and_environment(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(path)
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    assert load_image(path).size == (10, 10)
    with pytest.raises(ValueError, match=r"100 pixels, over the limit of 99"):
        load_image(path, max_pixels=99)
    assert load_image(path, max_pixels=100).size == (10, 10)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "50")
    with pytest.raises(ValueError, match="over the limit of 50"):
        load_image(path)
    assert load_image(path, max_pixels=0).size == (10, 10)  # keyword wins; 0 = no limit
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "none")
    assert load_image(path).size == (10, 10)
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENV, "lots")
    with pytest.raises(ValueError, match=MAX_IMAGE_PIXELS_ENV):
        load_image(path)


def test_limit_above_pils_own_lifts_it_only_for_the_call(tmp_path: Path) -> None:
    path = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="cannot read image") as caught:  # the data is truncated
        load_image(path, max_pixels=10**9)
    assert not isinstance(caught.value, Image.DecompressionBombError)
    assert Image.MAX_IMAGE_PIXELS == before


def test_missing_and_corrupt_files_still_value_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        load_image(bad)


def test_store_refuses_an_oversized_image_clearly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENV, raising=False)
    path = _png_claiming(tmp_path / "bomb.png", 30000, 30000)
    store = ImageStore(tmp_path / "images")
    with pytest.raises(ImageStoreError, match=r"bomb\.png is too large: 900,000,000 pixels"):
        store.put(path)
    assert not (tmp_path / "images").exists()
