"""A store's scoping rules: which scope an edit gets when its request does not state one.

The rules live in ``scope_rules.yaml`` in the store directory (absent: no rules)::

    default: instance        # for edits no tag rule covers (absent: "auto")
    tags:
      product: instance      # an edit tagged "product" is kept to its own image
      safety: broad          # an edit tagged "safety" reaches every similar image

A stated scope always wins. Otherwise the rule of the edit's tags decides; two of its tags with
different rules are a ``ScopeRuleConflict`` (the edit must state its scope); else the default;
else ``"auto"``. The journal keeps the resolved scope and which rule decided it, so replay never
depends on the file as it is later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from editscope.store.atomic import write_atomically
from editscope.store.layout import StoreError
from editscope.types import SCOPES

RULES_FILE = "scope_rules.yaml"

# What decided an edit's scope, as journaled.
STATED = "stated"
DEFAULT = "default"
NONE = "none"


class ScopeRuleConflict(StoreError, ValueError):
    """Two tags of an edit have different scope rules and the edit states no scope (nothing is
    journaled)."""


@dataclass(frozen=True)
class ScopeRules:
    """``default``: the scope of edits no tag rule covers (``None``: ``"auto"``); ``tags``: a
    scope per tag."""

    default: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, stated: str | None, tags: Iterable[str]) -> tuple[str, str]:
        """The scope of an edit that states ``stated`` (``None``: not stated) and has ``tags``,
        and what decided it: ``"stated"``, ``"tag T"`` (``"tags T, U"`` when several agree),
        ``"default"`` or ``"none"``."""
        if stated is not None:
            return stated, STATED
        ruled = {tag: self.tags[tag] for tag in sorted(set(tags)) if tag in self.tags}
        scopes = sorted(set(ruled.values()))
        if len(scopes) > 1:
            named = ", ".join(f"{tag}: {scope}" for tag, scope in ruled.items())
            raise ScopeRuleConflict(
                f"the edit's tags have conflicting scope rules ({named}); state its scope explicitly "
                f"(--scope {'|'.join(SCOPES)}, or \"scope\" in the request)")
        if scopes:
            names = list(ruled)
            return scopes[0], ("tag " if len(names) == 1 else "tags ") + ", ".join(names)
        if self.default is not None:
            return self.default, DEFAULT
        return "auto", NONE

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.default is not None:
            data["default"] = self.default
        if self.tags:
            data["tags"] = dict(sorted(self.tags.items()))
        return data


def rules_path(directory: str | Path) -> Path:
    return Path(directory) / RULES_FILE


def parse_rules(data: Any, where: str) -> ScopeRules:
    """``data`` (the file's YAML) as rules; a ``StoreError`` names ``where`` and the problem."""
    if data is None:
        return ScopeRules()
    if not isinstance(data, Mapping):
        raise StoreError(f"scope rules {where}: expected a mapping with 'default' and/or 'tags', "
                         f"got {type(data).__name__}")
    unknown = sorted(str(k) for k in set(data) - {"default", "tags"})
    if unknown:
        raise StoreError(f"scope rules {where}: unknown key(s) {unknown}; expected 'default' and 'tags'")
    default = data.get("default")
    if default is not None and default not in SCOPES:
        raise StoreError(f"scope rules {where}: 'default' must be one of {', '.join(SCOPES)}, got {default!r}")
    tags = data.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise StoreError(f"scope rules {where}: 'tags' must be a mapping of tag to scope, got {type(tags).__name__}")
    for tag, scope in tags.items():
        if not isinstance(tag, str) or not tag.strip():
            raise StoreError(f"scope rules {where}: tag {tag!r} must be a non-empty string")
        if scope not in SCOPES:
            raise StoreError(f"scope rules {where}: tag {tag!r} has scope {scope!r}; expected one of {', '.join(SCOPES)}")
    return ScopeRules(default, dict(tags))


def load_rules(directory: str | Path) -> ScopeRules:
    """The rules of the store in ``directory`` (no file: no rules); a file that cannot be read
    or is not valid rules is a ``StoreError`` naming it and the problem."""
    path = rules_path(directory)
    if not path.exists():
        return ScopeRules()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise StoreError(f"scope rules {path} cannot be read: {error}") from error
    except yaml.YAMLError as error:
        raise StoreError(f"scope rules {path} is not valid YAML: {' '.join(str(error).split())}") from error
    return parse_rules(data, str(path))


def save_rules(directory: str | Path, rules: ScopeRules) -> Path:
    """Write ``rules`` to the store's rules file (atomically) and return its path."""
    path = rules_path(directory)
    text = "# editscope scoping rules: see docs/scoping.md\n" + yaml.safe_dump(rules.to_dict(), sort_keys=True)
    write_atomically(path, text.encode("utf-8"))
    return path


def updated(rules: ScopeRules, *, default: str | None = None, set_tags: Mapping[str, str] | None = None,
            remove_tags: Iterable[str] = (), clear_default: bool = False) -> ScopeRules:
    """``rules`` with a new default (``clear_default``: none), tag rules set and removed; each
    value checked as the file's are."""
    tags = {**rules.tags, **(set_tags or {})}
    for tag in remove_tags:
        if tag not in tags:
            raise StoreError(f"no scope rule for tag {tag!r} to remove (rules for: {', '.join(sorted(tags)) or 'none'})")
        del tags[tag]
    new_default = None if clear_default else (default if default is not None else rules.default)
    return parse_rules(ScopeRules(new_default, tags).to_dict(), "update")
