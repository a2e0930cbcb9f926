"""ScopeMemory, the routed editor: one gated slot per fact."""

from editscope.editors.scopememory.config import ScopeMemoryConfig, load_memory_preset, memory_preset_names
from editscope.editors.scopememory.editor import ScopeMemory
from editscope.editors.scopememory.examples import ScopeConflict

__all__ = ["ScopeConflict", "ScopeMemory", "ScopeMemoryConfig", "load_memory_preset", "memory_preset_names"]
