"""Which plug-in serves which section of ``ScopeEditConfig``, and installing them."""

from __future__ import annotations

from typing import Any

from editscope.editors.scopeedit.plugin import Hooks, Plugin
from editscope.editors.scopeedit.prior import Prior
from editscope.editors.scopeedit.reedit import Reedit
from editscope.editors.scopeedit.rehearsal import Rehearsal
from editscope.editors.scopeedit.stopping import Stopping

# section name -> plug-in, in the order their hooks run (the re-edit rule names the fact before
# rehearsal queues it)
PLUGINS: dict[str, type[Plugin]] = {
    "prior": Prior,
    "stopping": Stopping,
    "reedit": Reedit,
    "rehearsal": Rehearsal,
}


def install(editor: Any, config: Any, installed: Hooks | None = None) -> Hooks:
    """The hooks of every section of ``config`` that is set. A plug-in already ``installed``
    (the editor's configuration replaced) keeps its state and takes its new sub-config."""
    kept = installed.by_name() if installed is not None else {}
    plugins = []
    for name, cls in PLUGINS.items():
        section = getattr(config, name)
        if section is None:
            continue
        plugin = kept[name] if name in kept else cls(editor, section)
        plugin.config = section
        plugins.append(plugin)
    return Hooks(plugins)
