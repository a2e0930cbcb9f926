"""Fixtures shared by the unit tests of the store."""

from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture
def images(tmp_path):
    """Three 4x4 PNGs (red, green, blue) under ``tmp_path``."""
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (4, 4), colour).save(path)
        paths.append(path)
    return paths
