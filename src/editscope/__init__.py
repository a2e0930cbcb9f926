"""editscope: online, scope-aware knowledge editing of multimodal LLMs."""

__version__ = "0.1.0"
