"""Generic views of one image: the edit image seen slightly otherwise (a crop, a shift, a small
rotation, other light and colour), as a camera would see the same subject again.

Nothing here knows the world or any dataset: the views are the standard photometric and
geometric jitters, drawn from a seeded generator so that an edit's views are reproducible.
"""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageEnhance, ImageStat

from editscope.images import load_image
from editscope.types import ImageInput


def image_views(image: ImageInput, count: int, seed: int = 0, *, crop: float = 0.8, rotate: float = 10.0,
                jitter: float = 0.2) -> list[Image.Image]:
    """``count`` views of ``image``: each keeps a random box of at least ``crop`` of each side
    (resized back), turns by at most ``rotate`` degrees (the corners filled with the image's mean
    colour) and scales brightness, contrast and saturation by factors within ``1 ± jitter``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    base = load_image(image).convert("RGB")
    width, height = base.size
    fill = tuple(int(round(c)) for c in ImageStat.Stat(base).mean)
    rng = random.Random(seed)
    views = []
    for _ in range(count):
        scale = rng.uniform(crop, 1.0)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = rng.randint(0, width - w), rng.randint(0, height - h)
        view = base.crop((left, top, left + w, top + h)).resize((width, height), Image.BILINEAR)
        view = view.rotate(rng.uniform(-rotate, rotate), resample=Image.BILINEAR, fillcolor=fill)
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            view = enhance(view).enhance(rng.uniform(1 - jitter, 1 + jitter))
        views.append(view)
    return views


def view_seed(fact: torch.Tensor, seed: int) -> int:
    """The seed of a fact's views: its first 8 bytes (a hash) mixed with the config's ``seed``."""
    return int.from_bytes(bytes(fact[:8].tolist()), "little") ^ seed
