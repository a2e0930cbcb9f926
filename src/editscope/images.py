"""Reading images given as a path or a PIL image, always as 8-bit RGB.

Every PIL mode is decoded to what it shows: 16-bit grayscale (``I;16*``, and ``I``, read as
16-bit and clipped to ``[0, 65535]``) is scaled to 8 bits as ``x / 257``, float grayscale
(``F``) is scaled from ``[0, 1]`` (or clipped to ``[0, 255]``), and images with transparency
(``RGBA``, ``LA``, ``PA``, ``P`` with a transparency key, ...) are composited over white. Files
larger than a pixel limit are refused before they are decoded (see :func:`max_image_pixels`).
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from editscope.types import ImageInput

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""The largest image (width x height) read from a file, unless changed by
``EDITSCOPE_MAX_IMAGE_PIXELS`` or the ``max_pixels`` keyword."""

MAX_IMAGE_PIXELS_ENV = "EDITSCOPE_MAX_IMAGE_PIXELS"

BACKGROUND = (255, 255, 255)
"""What transparent pixels are composited over."""

_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_pil_limit_lock = threading.Lock()


def max_image_pixels(max_pixels: int | None = None) -> int | None:
    """The pixel limit in force: ``max_pixels`` when given, else ``EDITSCOPE_MAX_IMAGE_PIXELS``
    when set, else :data:`DEFAULT_MAX_IMAGE_PIXELS`. ``0`` or a negative value (or the variable
    set to ``0`` / ``none``) means no limit; ``None`` is returned then."""
    if max_pixels is None:
        raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_IMAGE_PIXELS
        if raw.lower() in {"none", "off", "unlimited"}:
            return None
        try:
            max_pixels = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(
                f"{MAX_IMAGE_PIXELS_ENV} must be a whole number of pixels (or 0 for no limit), "
                f"got {raw!r}"
            ) from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int):
        raise TypeError(f"max_pixels must be an int or None, got {type(max_pixels).__name__}")
    return max_pixels if max_pixels > 0 else None


def _too_large(path: Path, pixels: int, limit: int, size: tuple[int, int] | None) -> ValueError:
    shape = f"{size[0]}x{size[1]} = " if size else ""
    return ValueError(
        f"image {path} is too large: {shape}{pixels:,} pixels, over the limit of {limit:,} "
        f"(set {MAX_IMAGE_PIXELS_ENV}, or pass max_pixels, to change it)"
    )


def open_image_file(
    path: Path, source: str | Path | BinaryIO, max_pixels: int | None = None
) -> Image.Image:
    """``Image.open(source)`` (header only, nothing decoded) with the pixel limit of
    :func:`max_image_pixels` applied instead of PIL's own: an image over it raises
    ``ValueError`` naming ``path`` and its pixel count. PIL's global ``Image.MAX_IMAGE_PIXELS``
    is left as it is (it is lifted for the duration of the call only when the limit asked for is
    above PIL's). Unreadable data raises PIL's own errors."""
    limit = max_image_pixels(max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source)
        except Image.DecompressionBombError as error:
            found = re.search(r"\((\d+) pixels\)", str(error))
            pixels = int(found.group(1)) if found else None
            if limit is not None and (pixels is None or pixels > limit):
                raise _too_large(path, pixels or 0, limit, None) from error
            # Our limit allows more than PIL's: lift PIL's for this one open.
            if hasattr(source, "seek"):
                source.seek(0)
            with _pil_limit_lock:
                saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                try:
                    opened = Image.open(source)
                finally:
                    Image.MAX_IMAGE_PIXELS = saved
    width, height = opened.size
    pixels = max(1, width) * max(1, height)
    if limit is not None and pixels > limit:
        opened.close()
        raise _too_large(path, pixels, limit, (width, height))
    return opened


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, decoded by what its mode means (see the module docstring).
    The image passed in is never modified."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        values = np.asarray(image)
        if mode in _SIXTEEN_BIT_MODES or mode == "I":
            # 16-bit range (PNG's 16-bit grayscale; PIL saves "I" as 16-bit): x / 257.
            scaled = np.clip(values.astype(np.float64), 0, 65535) / 257.0
        else:
            floats = np.nan_to_num(values.astype(np.float64), nan=0.0)
            scaled = floats * 255.0 if floats.size and floats.max() <= 1.0 else floats
            scaled = np.clip(scaled, 0, 255)
        gray = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    elif mode == "P":
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        # premultiplied grayscale converts only to LA (which undoes the premultiplication)
        rgba = (image.convert("LA") if mode == "La" else image).convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in {"L", "1"} and "transparency" in image.info:
        return to_rgb(image.convert("RGBA"))
    return image.convert("RGB")


def load_image(image: ImageInput, *, max_pixels: int | None = None) -> Image.Image:
    """Return ``image`` as an 8-bit RGB ``PIL.Image``.

    ``image`` is a path (``str`` or ``Path``) or a ``PIL.Image``. Every mode is converted to
    RGB by what it shows (a PIL image passed in is never modified): 16-bit grayscale
    (``I;16``, ``I``) is scaled to 8 bits as ``x / 257``, ``F`` is scaled from ``[0, 1]`` (or
    clipped to ``[0, 255]``), and transparency (``RGBA``, ``LA``, ``P`` with transparency) is
    composited over white; ``CMYK``, ``1``, ``L``, ``P``, ``YCbCr``, ... are converted by PIL.

    A file over the pixel limit is refused before it is decoded. The limit is ``max_pixels``
    when given, else the environment variable ``EDITSCOPE_MAX_IMAGE_PIXELS``, else
    :data:`DEFAULT_MAX_IMAGE_PIXELS` (50 megapixels); ``0`` (or ``none`` in the variable) means
    no limit. PIL's global ``Image.MAX_IMAGE_PIXELS`` is not changed.

    A missing file, one PIL cannot decode, or one over the limit raises ``ValueError`` naming
    the path (and, for one too large, its pixel count).
    """
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if not isinstance(image, (str, Path)):
        raise TypeError(f"image must be a path or a PIL.Image, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise ValueError(f"image file not found: {path}")
    try:
        with open_image_file(path, path, max_pixels) as opened:
            opened.load()
            rgb = to_rgb(opened)
            return rgb.copy() if rgb is opened else rgb
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error
