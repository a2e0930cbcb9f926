"""ScopeMemory, the routed editor: one gated slot per fact."""

from editscope.editors.scopememory.config import ScopeMemoryConfig, load_memory_preset, memory_preset_names
from editscope.editors.scopememory.editor import ScopeMemory

__all__ = ["ScopeMemory", "ScopeMemoryConfig", "load_memory_preset", "memory_preset_names"]
