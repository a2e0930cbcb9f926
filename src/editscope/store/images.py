"""Content-addressed image store: each image is kept once, under the SHA-256 of its bytes.

A path is stored as its file bytes, unchanged; a ``PIL.Image`` is stored as PNG. Reading checks
that the bytes still hash to their name, so a damaged or missing file is a clear error.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from editscope.images import open_image_file
from editscope.store.atomic import write_atomically
from editscope.types import ImageInput


class ImageStoreError(ValueError):
    """An image cannot be read, stored or found."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_bytes(image: ImageInput) -> bytes:
    """The bytes to store for ``image``: a file's own bytes, or a PIL image encoded as PNG.
    The result is checked to decode as an image, and a file over the pixel limit of
    :func:`editscope.images.max_image_pixels` is refused."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if not isinstance(image, (str, Path)):
        raise TypeError(f"image must be a path or a PIL.Image, got {type(image).__name__}")
    path = Path(image)
    try:
        if not path.is_file():
            raise ImageStoreError(f"image file not found: {path}")
        data = path.read_bytes()
    except OSError as error:  # e.g. a name too long, or a file that cannot be read
        raise ImageStoreError(f"cannot read image {path}: {error}") from error
    try:
        with open_image_file(path, io.BytesIO(data)) as opened:
            opened.verify()
    except ValueError as error:  # over the pixel limit; the message names the file
        raise ImageStoreError(str(error)) from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageStoreError(f"cannot read image {path}: {error}") from error
    return data


class ImageStore:
    """Images under ``root/<first two hex digits>/<sha256>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def contains(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def hash_of(self, image: ImageInput) -> str:
        """The SHA-256 that ``image`` would be stored under (nothing is written)."""
        return sha256_bytes(image_bytes(image))

    def put(self, image: ImageInput) -> str:
        """Store ``image`` (if not already there) and return its SHA-256. The write is atomic:
        a killed process leaves either no file or the whole file."""
        data = image_bytes(image)
        digest = sha256_bytes(data)
        target = self.path_for(digest)
        if target.is_file():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data)
        return digest

    def get(self, sha256: str) -> Path:
        """The stored file for ``sha256``, after checking that its bytes match the hash."""
        path = self.path_for(sha256)
        if not path.is_file():
            raise ImageStoreError(f"image {sha256} is missing from the image store ({path})")
        actual = sha256_bytes(path.read_bytes())
        if actual != sha256:
            raise ImageStoreError(
                f"image {sha256} in the image store is damaged: its bytes hash to {actual} ({path})"
            )
        return path
