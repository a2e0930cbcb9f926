"""ScopeEdit and M-ORE under their earlier module name: the editors live in
``editscope.editors.scopeedit`` (the paper's loop in ``core``, each option beyond the paper a
plug-in module); this module re-exports what importers used."""

from __future__ import annotations

from editscope.editors.scopeedit.core import MORE, PROJECTOR, RecursiveEditor, ScopeEdit
from editscope.editors.scopeedit.state import EDIT_COUNT_KEY
from editscope.editors.scopeedit.writes import WRITES, compact_write, expand_write, fact_key

__all__ = ["EDIT_COUNT_KEY", "MORE", "PROJECTOR", "RecursiveEditor", "ScopeEdit", "WRITES", "compact_write",
           "expand_write", "fact_key"]
