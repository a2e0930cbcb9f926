"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest
from tiny_models import build_tiny

from editscope.models import VisionLanguageModel


@pytest.fixture()
def vlm() -> VisionLanguageModel:
    """A fresh tiny random LLaVA (``build_tiny``) wrapped for editing."""
    model, processor = build_tiny("LlavaForConditionalGeneration")
    return VisionLanguageModel(model, processor)
