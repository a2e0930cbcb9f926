"""ScopeEdit and M-ORE: the paper's editor loop (``core``) and the options beyond the paper as
plug-ins, one module each (``stopping``, ``reedit``, ``rehearsal``, ``prior``), each with its
own frozen sub-config, its own state and the hooks of ``plugin``.

The editors are imported lazily here, so that ``editscope.config`` can import the sub-configs
of the plug-in modules without importing the editor loop (which imports the config)."""

from __future__ import annotations

from typing import Any

_EXPORTS = {"MORE", "ScopeEdit", "RecursiveEditor"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        from editscope.editors.scopeedit import core

        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
