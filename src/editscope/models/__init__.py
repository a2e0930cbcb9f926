"""Model adapters: the architecture registry, the wrapped model and loading."""

from editscope.models.loading import load
from editscope.models.registry import (
    ArchitectureSpec,
    UnsupportedModelError,
    register_architecture,
    spec_for,
    supported_architectures,
)
from editscope.models.vlm import VisionLanguageModel

__all__ = [
    "ArchitectureSpec",
    "UnsupportedModelError",
    "VisionLanguageModel",
    "load",
    "register_architecture",
    "spec_for",
    "supported_architectures",
]
