"""The content-addressed image store."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from editscope.store.images import ImageStore, ImageStoreError


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    return path


def test_a_file_is_stored_once_under_the_hash_of_its_bytes(tmp_path, png):
    store = ImageStore(tmp_path / "images")
    digest = store.put(png)
    assert digest == hashlib.sha256(png.read_bytes()).hexdigest()
    copy = tmp_path / "copy.png"
    copy.write_bytes(png.read_bytes())
    assert store.put(copy) == digest
    files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert files == [store.path_for(digest)]
    assert store.get(digest).read_bytes() == png.read_bytes()


def test_a_pil_image_is_stored_as_png(tmp_path):
    store = ImageStore(tmp_path / "images")
    image = Image.new("RGB", (3, 2), (0, 10, 20))
    digest = store.put(image)
    with Image.open(store.get(digest)) as stored:
        assert stored.format == "PNG"
        assert stored.convert("RGB").tobytes() == image.tobytes()
    assert store.hash_of(image) == digest


def test_missing_or_unreadable_input_is_an_error_and_writes_nothing(tmp_path):
    store = ImageStore(tmp_path / "images")
    with pytest.raises(ImageStoreError, match="image file not found"):
        store.put(tmp_path / "nope.png")
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageStoreError, match="cannot read image"):
        store.put(text)
    assert not (tmp_path / "images").exists()


def test_missing_or_damaged_stored_image_is_an_error(tmp_path, png):
    store = ImageStore(tmp_path / "images")
    digest = store.put(png)
    with pytest.raises(ImageStoreError, match="missing from the image store"):
        store.get("00" * 32)
    store.path_for(digest).write_bytes(b"garbage")
    with pytest.raises(ImageStoreError, match="damaged"):
        store.get(digest)
