"""Draw a subject with PIL, with optional random augmentation.

A render is a pure function of the subject and an :class:`Augmentation`; the augmentation is
drawn from a :class:`random.Random`, so renders are reproducible from a seed. Fixed "seen"
renders (used in training) and "held-out" renders (never used in training) are addressed by
``(kind, index)`` through :func:`fixed_render`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from editscope.world.world import BACKGROUNDS, COLOURS, Subject

IMAGE_SIZE = 64
_SUPERSAMPLE = 2
RENDER_KINDS: tuple[str, ...] = ("seen", "heldout")


@dataclass(frozen=True)
class Augmentation:
    """Geometric and photometric jitter: ``scale`` of the shape, ``dx``/``dy`` shift as a
    fraction of the image size, ``angle`` in degrees, ``brightness`` factor, ``noise`` standard
    deviation (0-255 scale) and ``noise_seed`` for the noise pattern."""

    scale: float = 1.0
    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0
    brightness: float = 1.0
    noise: float = 0.0
    noise_seed: int = 0

    @classmethod
    def sample(cls, rng: random.Random) -> "Augmentation":
        return cls(
            scale=rng.uniform(0.8, 1.1),
            dx=rng.uniform(-0.1, 0.1),
            dy=rng.uniform(-0.1, 0.1),
            angle=rng.uniform(-12.0, 12.0),
            brightness=rng.uniform(0.85, 1.15),
            noise=rng.uniform(0.0, 8.0),
            noise_seed=rng.randrange(2**31),
        )


def _outline(shape: str) -> list[tuple[float, float]]:
    """Unit outline of ``shape`` (points within the unit disc, y pointing down)."""
    if shape == "circle":
        return [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    if shape == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if shape == "diamond":
        return [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]
    if shape == "triangle":
        return [(0.0, -1.0), (0.95, 0.75), (-0.95, 0.75)]
    if shape == "hexagon":
        return [(math.cos(t), math.sin(t)) for t in np.linspace(0, 2 * math.pi, 6, endpoint=False)]
    if shape == "star":
        points = []
        for k in range(10):
            radius = 1.0 if k % 2 == 0 else 0.42
            t = -math.pi / 2 + k * math.pi / 5
            points.append((radius * math.cos(t), radius * math.sin(t)))
        return points
    if shape == "cross":
        a, b = 0.3, 0.9
        return [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a),
                (-b, a), (-b, -a), (-a, -a)]
    if shape == "heart":
        points = []
        for t in np.linspace(0, 2 * math.pi, 48, endpoint=False):
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            points.append((x / 17.0, -y / 17.0 + 0.1))
        return points
    raise ValueError(f"unknown shape {shape!r}")


def _pattern_colour(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    if luminance < 110:
        return tuple(int((c + 255) / 2) for c in fill)  # type: ignore[return-value]
    return tuple(int(c * 0.4) for c in fill)  # type: ignore[return-value]


def _pattern_layer(pattern: str, fill: tuple[int, int, int], size: int, cx: float, cy: float,
                   radius: float) -> Image.Image:
    layer = Image.new("RGB", (size, size), fill)
    draw = ImageDraw.Draw(layer)
    mark = _pattern_colour(fill)
    step = max(radius / 2.2, 4.0)
    span = int(size / step) + 4
    if pattern == "striped":
        width = max(int(step / 2.5), 2)
        for k in range(-span, span):
            x0 = cx + k * step
            draw.line([(x0 - size, cy + size), (x0 + size, cy - size)], fill=mark, width=width)
    elif pattern == "dotted":
        dot = step / 4.0
        for i in range(-span, span):
            for j in range(-span, span):
                x, y = cx + i * step, cy + j * step
                draw.ellipse([x - dot, y - dot, x + dot, y + dot], fill=mark)
    elif pattern == "checkered":
        for i in range(-span, span):
            for j in range(-span, span):
                if (i + j) % 2 == 0:
                    x, y = cx + i * step / 1.2, cy + j * step / 1.2
                    draw.rectangle([x, y, x + step / 1.2, y + step / 1.2], fill=mark)
    elif pattern == "ringed":
        width = max(int(step / 3), 2)
        for k in range(1, 6):
            r = k * step * 0.75
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=mark, width=width)
    elif pattern != "plain":
        raise ValueError(f"unknown pattern {pattern!r}")
    return layer


def render(subject: Subject, augmentation: Augmentation | None = None, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw ``subject`` as an RGB image of ``size`` x ``size`` pixels."""
    aug = augmentation or Augmentation()
    big = size * _SUPERSAMPLE
    cx, cy = big * (0.5 + aug.dx), big * (0.5 + aug.dy)
    radius = big * 0.32 * aug.scale
    theta = math.radians(aug.angle)
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    polygon = [(cx + radius * (x * cos_t - y * sin_t), cy + radius * (x * sin_t + y * cos_t))
               for x, y in _outline(subject.look["shape"])]
    canvas = Image.new("RGB", (big, big), BACKGROUNDS[subject.look["background"]])
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    layer = _pattern_layer(subject.look["pattern"], COLOURS[subject.look["colour"]], big, cx, cy, radius)
    canvas.paste(layer, (0, 0), mask)
    image = canvas.resize((size, size), Image.Resampling.BILINEAR)
    if aug.brightness != 1.0 or aug.noise > 0:
        pixels = np.asarray(image, dtype=np.float32) * aug.brightness
        if aug.noise > 0:
            noise_rng = np.random.default_rng(aug.noise_seed)
            pixels = pixels + noise_rng.normal(0.0, aug.noise, pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8), "RGB")
    return image


def fixed_render(subject: Subject, kind: str, index: int, world_seed: int, size: int = IMAGE_SIZE) -> Image.Image:
    """The ``index``-th fixed render of ``kind`` (``"seen"`` or ``"heldout"``) of ``subject``.

    ``("seen", 0)`` is the canonical, unaugmented drawing. Seen renders are part of the training
    data; held-out renders are never drawn during training (their random streams are disjoint).
    """
    if kind not in RENDER_KINDS:
        raise ValueError(f"render kind must be one of {RENDER_KINDS}, got {kind!r}")
    if kind == "seen" and index == 0:
        return render(subject, None, size)
    rng = random.Random(f"render/{world_seed}/{kind}/{subject.index}/{index}")
    return render(subject, Augmentation.sample(rng), size)
