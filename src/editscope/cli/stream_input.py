"""JSONL edit streams (``editscope edit --stream``): each line decoded and checked field by field,
so that an error names its line and field; and the scope examples of ``--also``/``--never``
(``IMG[:PROMPT]``) and of the stream's ``"also"``/``"never"`` fields."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from editscope.cli.errors import CommandError
from editscope.types import SCOPES, EditRequest

STREAM_KEYS = {"image", "prompt", "target", "scope", "tags", "rephrases", "also", "never"}
_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _check_text(value: str, field: str, bad_bytes: bool) -> None:
    """Refuse text that cannot be stored as UTF-8: an invalid byte in the stream (decoded with
    ``surrogateescape``, so it shows up as U+DC80..U+DCFF) or a lone surrogate from a JSON
    ``\\uD800`` escape. Both are named with the field."""
    for char in value:
        if "\ud800" <= char <= "\udfff":
            if bad_bytes and "\udc80" <= char <= "\udcff":
                raise ValueError(f"field {field!r} is not valid UTF-8 (invalid byte 0x{ord(char) - 0xDC00:02x})")
            raise ValueError(f"field {field!r} contains a lone surrogate (U+{ord(char):04X}); text must be valid Unicode")


def _string_field(item: dict, key: str, bad_bytes: bool, *, required: bool, where: str = "") -> Optional[str]:
    """``item[key]`` as a non-empty string; errors name the field as ``where + key``."""
    name = where + key
    if key not in item or (not required and item[key] is None):
        if required:
            raise ValueError(f"field {name!r} is missing")
        return None
    value = item[key]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r} must be a string, got {_json_type(value)} ({json.dumps(value)[:60]})")
    _check_text(value, name, bad_bytes)
    if not value.strip():
        raise ValueError(f"field {name!r} is empty")
    return value


def _list_field(item: dict, key: str, bad_bytes: bool) -> Optional[list[str]]:
    if key not in item:
        return None
    value = item[key]
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be an array of strings, got {_json_type(value)} ({json.dumps(value)[:60]})")
    for index, text in enumerate(value):
        name = f"{key}[{index}]"
        if not isinstance(text, str):
            raise ValueError(f"field {name!r} must be a string, got {_json_type(text)} ({json.dumps(text)[:60]})")
        _check_text(text, name, bad_bytes)
        if not text.strip():
            raise ValueError(f"field {name!r} is empty")
    return list(value)


def example_option(value: str, option: str) -> tuple[Path, Optional[str]]:
    """``--also``/``--never`` ``IMG[:PROMPT]`` as ``(image, prompt)`` (``None``: the edit's
    prompt). A value that is an existing path is a path, ':' and all; else it is split at the
    first ':' whose left part is an existing file, else at the first ':' (the image is then
    reported missing when the edit is journaled)."""
    if not value.strip():
        raise CommandError(f"{option} needs an image path (IMG or IMG:PROMPT), got an empty value")
    if Path(value).exists() or ":" not in value:
        return Path(value), None
    cuts = [i for i, char in enumerate(value) if char == ":"]
    cut = next((i for i in cuts if Path(value[:i]).is_file()), cuts[0])
    image, prompt = value[:cut], value[cut + 1:]
    if not image:
        raise CommandError(f"{option} {value!r}: the image path before ':' is empty")
    if not prompt.strip():
        raise CommandError(f"{option} {value!r}: the prompt after ':' is empty (omit ':' to use the edit's prompt)")
    return Path(image), prompt


def _example_field(item: dict, key: str, base: Path, bad_bytes: bool) -> list[tuple[Path, Optional[str]]]:
    """A stream line's ``"also"``/``"never"``: image paths (relative to ``base``) or
    ``{"image": path, "prompt": ...}`` objects, as ``(image, prompt or None)``."""
    value = item.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"field {key!r} must be an array of image paths or {{\"image\", \"prompt\"}} objects, "
                         f"got {_json_type(value)} ({json.dumps(value)[:60]})")
    examples = []
    for index, entry in enumerate(value):
        name = f"{key}[{index}]"
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"field {name!r} must be an image path or an object, got {_json_type(entry)}")
        extra = sorted(set(entry) - {"image", "prompt"})
        if extra:
            raise ValueError(f"field {name!r} has unknown key(s) {extra}; known keys are ['image', 'prompt']")
        image = _string_field(entry, "image", bad_bytes, required=True, where=f"{name}.")
        prompt = _string_field(entry, "prompt", bad_bytes, required=False, where=f"{name}.")
        path = Path(image) if Path(image).is_absolute() else base / image  # type: ignore[arg-type]
        examples.append((path, prompt))
    return examples


def _decode_line(raw: bytes | str, number: int) -> tuple[str, bool]:
    """One stream line as text, and whether it held bytes that are not valid UTF-8 (kept as
    ``surrogateescape`` characters so that the field holding them can be named)."""
    if isinstance(raw, str):
        return raw, False
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError as error:
        text = raw.decode("utf-8", errors="surrogateescape")
        return text, f"not valid UTF-8 (invalid byte 0x{raw[error.start]:02x} at byte {error.start + 1})"


@dataclass(frozen=True)
class StreamLine:
    """One non-blank line of a stream: its edit (request, tags, rephrases), or ``error``, what
    is wrong with it (naming the field), when it is not a valid edit."""

    number: int
    request: Optional[EditRequest] = None
    tags: list[str] = field(default_factory=list)
    rephrases: list[str] = field(default_factory=list)
    error: Optional[str] = None


def stream_lines(
    lines: Iterable[bytes | str],
    base: Path,
    *,
    scope: Optional[str] = None,
    tags: Sequence[str] = (),
    rephrases: Sequence[str] = (),
) -> Iterator[StreamLine]:
    """Parse JSONL edits: ``{"image", "prompt", "target", "scope", "tags", "rephrases",
    "also", "never"}``; relative image paths (the examples' too) are relative to ``base``; a
    line with no ``"scope"`` and no ``scope`` default states none (the store's rules decide). ``scope``, ``tags`` and ``rephrases`` are
    per-line defaults (from the command line): a line's own scope or rephrases win, its tags
    are added to ``tags``. Every field is checked by type; a bad line is yielded with its
    ``error`` (naming the field), and the lines after it are still read."""
    for number, raw in enumerate(lines, start=1):
        try:
            parsed = _parse_line(raw, number, base, scope)
        except (ValueError, TypeError) as error:
            yield StreamLine(number, error=str(error))
            continue
        if parsed is None:
            continue
        request, line_tags, line_rephrases = parsed
        merged_tags = list(dict.fromkeys([*tags, *line_tags]))
        yield StreamLine(number, request, merged_tags, list(rephrases if line_rephrases is None else line_rephrases))


def stream_requests(
    lines: Iterable[bytes | str],
    base: Path,
    *,
    scope: Optional[str] = None,
    tags: Sequence[str] = (),
    rephrases: Sequence[str] = (),
) -> Iterator[tuple[int, EditRequest, list[str], list[str]]]:
    """``stream_lines`` as ``(number, request, tags, rephrases)``, stopping at the first bad
    line with a ``CommandError`` naming the line and field."""
    for line in stream_lines(lines, base, scope=scope, tags=tags, rephrases=rephrases):
        if line.error is not None:
            raise CommandError(f"stream line {line.number}: {line.error}")
        yield line.number, line.request, line.tags, line.rephrases


def _parse_line(raw: bytes | str, number: int, base: Path, scope: Optional[str]
                ) -> Optional[tuple[EditRequest, list[str], Optional[list[str]]]]:
    """One line's request, tags and rephrases (``None`` for a blank line); a ``ValueError``
    names what is wrong."""
    line, bad_bytes = _decode_line(raw, number)
    if not line.strip():
        return None
    try:
        item = json.loads(line)
    except ValueError as error:
        raise ValueError(bad_bytes or f"not valid JSON ({error})") from None
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(item)}")
    for key in item:
        _check_text(key, key, bool(bad_bytes))
    unknown = sorted(set(item) - STREAM_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; known keys are {sorted(STREAM_KEYS)}")
    prompt = _string_field(item, "prompt", bool(bad_bytes), required=True)
    target = _string_field(item, "target", bool(bad_bytes), required=True)
    image: Optional[str | Path] = _string_field(item, "image", bool(bad_bytes), required=False)
    if image is not None:
        image = Path(image) if Path(image).is_absolute() else base / image
    line_scope = _string_field(item, "scope", bool(bad_bytes), required=False)
    if line_scope is not None and line_scope not in SCOPES:
        raise ValueError(f"field 'scope' must be one of {', '.join(SCOPES)}, got {line_scope!r}")
    line_tags = _list_field(item, "tags", bool(bad_bytes)) or []
    line_rephrases = _list_field(item, "rephrases", bool(bad_bytes))
    also = _example_field(item, "also", base, bool(bad_bytes))
    never = _example_field(item, "never", base, bool(bad_bytes))
    request = EditRequest(prompt=prompt, target=target, image=image, scope=line_scope or scope,  # type: ignore[arg-type]
                          also=also, never=never)
    return request, line_tags, line_rephrases
