"""editscope: online, scope-aware knowledge editing of multimodal LLMs.

Typical use::

    import editscope
    from editscope.editors.registry import build_editor
    vlm = editscope.load("builtin")                     # or a local llava-hf checkpoint path
    config = editscope.load_preset("builtin")           # holds a reference prior (prior.weight)
    reference = editscope.load_reference("world", "builtin", config.prior.size)
    editor = build_editor("scopeedit", vlm, config, reference=reference)  # folds the prior
    editor.edit(editscope.EditRequest(image="cat.png", prompt="What is this?", target="a lynx"))
    editor.answer("cat.png", "What is this?")
"""

from editscope.config import ScopeEditConfig, load_preset, preset_names
from editscope.editors.base import Editor, EditRejected
from editscope.editors.scopeedit import MORE, ScopeEdit
from editscope.editors.reference import load_reference
from editscope.models import (
    ArchitectureSpec,
    UnsupportedModelError,
    VisionLanguageModel,
    load,
    register_architecture,
    supported_architectures,
)
from editscope.types import EditRequest, EditResult, GateValues, Probe, ScopeExample, Score

__version__ = "0.1.0"

__all__ = [
    "MORE",
    "ArchitectureSpec",
    "EditRejected",
    "EditRequest",
    "ScopeExample",
    "EditResult",
    "Editor",
    "GateValues",
    "Probe",
    "Score",
    "ScopeEdit",
    "ScopeEditConfig",
    "UnsupportedModelError",
    "VisionLanguageModel",
    "load",
    "load_preset",
    "load_reference",
    "preset_names",
    "register_architecture",
    "supported_architectures",
]
