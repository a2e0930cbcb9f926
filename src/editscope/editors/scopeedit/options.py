"""What every configuration section of ScopeEdit shares: fields that carry their own help text
(``field(metadata={"help": ...})``, as ``editscope.editors.scopememory.config`` does, so the
configuration reference is generated, never kept by hand) and the checks that name the field."""

from __future__ import annotations

from dataclasses import field, fields
from typing import Any, Sequence


def option(default: Any, help: str) -> Any:
    """A dataclass field with its default and its help text."""
    return field(default=default, metadata={"help": help})


def check_int(where: str, value: Any, minimum: int) -> None:
    """``value`` is an int (not a bool) of at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise ValueError(f"ScopeEditConfig.{where} must be {kind}, got {value!r}")


def check_number(where: str, value: Any, positive: bool = False, non_negative: bool = False) -> None:
    """``value`` is a real number (not a bool, not NaN); ``positive``: > 0; ``non_negative``: >= 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
        raise ValueError(f"ScopeEditConfig.{where} must be a number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"ScopeEditConfig.{where} must be a positive number, got {value!r}")
    if non_negative and value < 0:
        raise ValueError(f"ScopeEditConfig.{where} must be >= 0, got {value!r}")


def check_choice(where: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"ScopeEditConfig.{where} must be one of {tuple(choices)}, got {value!r}")


def reference_table(section: str, cls: type) -> str:
    """A Markdown table of a section's fields: key, default and help text."""
    rows = [f"### `{section}`", "", (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "), "",
            "| key | default | meaning |", "|---|---|---|"]
    for f in fields(cls):
        rows.append(f"| `{f.name}` | `{f.default!r}` | {f.metadata.get('help', '')} |")
    return "\n".join(rows)
