"""Reading images given as a path or a PIL image, always as RGB."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from editscope.types import ImageInput


def load_image(image: ImageInput) -> Image.Image:
    """Return ``image`` as an RGB ``PIL.Image``.

    ``image`` is a path (``str`` or ``Path``) or a ``PIL.Image``. Other modes (L, RGBA, P, ...)
    are converted to RGB (a PIL image passed in is never modified). A missing file, or one PIL
    cannot decode, raises ``ValueError`` naming the path.
    """
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, (str, Path)):
        raise TypeError(f"image must be a path or a PIL.Image, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with Image.open(path) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
