"""Checking what clients send, before anything is journaled: each problem is an ``InputError``
naming the field (``422``), or the request (``400``: a body that is not JSON).

Edits arrive as JSON (``{"prompt", "target", "image": <base64>, "scope"?, "tags"?,
"rephrases"?, "also"?, "never"?}``; ``also``/``never``: lists of ``{"image": <base64>,
"prompt"?}``, scope examples) or as multipart form data (an ``image`` file and the same fields;
``tags`` and ``rephrases`` repeated or comma/newline separated; ``also``/``never`` repeated
files, which take the edit's prompt). No ``scope``: not stated (the store's rules decide). Queries as JSON (``{"prompt", "image"?}``)
or multipart. An image must decode completely (with the store's pixel
limit) before it is accepted."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from PIL import Image, UnidentifiedImageError

from editscope.images import open_image_file, to_rgb
from editscope.types import SCOPES


class InputError(ValueError):
    """A request the service refuses; ``field`` names the offending part (``None``: the body)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


MAX_EXAMPLES = 32  # per kind (also, never) and edit


@dataclass(frozen=True)
class ExampleInput:
    """A scope example as uploaded: the image file's bytes and its prompt (``None``: the edit's)."""

    image: bytes
    prompt: str | None = None

    def content(self) -> dict[str, Any]:
        return {"image": hashlib.sha256(self.image).hexdigest(), "prompt": self.prompt}


@dataclass(frozen=True)
class EditInput:
    prompt: str
    target: str
    image: bytes
    scope: str | None = None  # None: not stated
    tags: tuple[str, ...] = ()
    rephrases: tuple[str, ...] = ()
    also: tuple[ExampleInput, ...] = ()
    never: tuple[ExampleInput, ...] = ()

    def fingerprint(self) -> str:
        """SHA-256 of the request's content (the scope examples' images and prompts included):
        a retry with the same idempotency key must match."""
        text = json.dumps({"prompt": self.prompt, "target": self.target, "scope": self.scope,
                           "tags": list(self.tags), "rephrases": list(self.rephrases),
                           "image": hashlib.sha256(self.image).hexdigest(),
                           "also": [e.content() for e in self.also],
                           "never": [e.content() for e in self.never]}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class QueryInput:
    prompt: str
    image: Image.Image | None


def decode_image(data: bytes, field: str = "image") -> Image.Image:
    """``data`` fully decoded as an 8-bit RGB image (the store's pixel limit applies), or an
    ``InputError`` naming ``field``."""
    if not data:
        raise InputError(f"{field} is empty", field)
    try:
        with open_image_file(Path(f"<{field}>"), io.BytesIO(data)) as opened:
            opened.load()  # the whole image: a truncated or damaged file fails here
            return to_rgb(opened).copy()
    except UnidentifiedImageError:
        raise InputError(f"{field} is not an image file (no known image format)", field) from None
    except Exception as error:  # PIL raises many kinds (OSError, SyntaxError, ValueError, ...)
        raise InputError(f"{field} cannot be decoded as an image: {error}", field) from None


def text_field(value: Any, field: str, max_chars: int, *, required: bool = True) -> str | None:
    """A non-empty string of at most ``max_chars`` characters, valid Unicode, or an error."""
    if value is None:
        if required:
            raise InputError(f"{field} is missing", field)
        return None
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string, got {type(value).__name__}", field)
    if not value.strip():
        raise InputError(f"{field} is empty", field)
    if len(value) > max_chars:
        raise InputError(f"{field} is {len(value)} characters long; the limit is {max_chars}", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{field} is not valid Unicode text (a lone surrogate)", field) from None
    return value


def text_list(value: Any, field: str, max_chars: int, max_items: int = 64) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"{field} must be a list of strings, got {type(value).__name__}", field)
    if len(value) > max_items:
        raise InputError(f"{field} has {len(value)} entries; the limit is {max_items}", field)
    return tuple(text_field(v, f"{field}[{i}]", max_chars) for i, v in enumerate(value))  # type: ignore[misc]


def scope_field(value: Any) -> str | None:
    if value is None:
        return None
    if value not in SCOPES:
        raise InputError(f"scope must be one of {', '.join(SCOPES)}, got {value!r}", "scope")
    return str(value)


def base64_image(value: Any, field: str = "image") -> bytes:
    if not isinstance(value, str):
        raise InputError(f"{field} must be a base64 string, got {type(value).__name__}", field)
    text = value.split(",", 1)[1] if value.startswith("data:") else value  # a data: URL is fine too
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{field} is not valid base64", field) from None


def json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"the body is not valid JSON: {error}", None, 400) from None
    if not isinstance(data, dict):
        raise InputError(f"the body must be a JSON object, got {type(data).__name__}", None, 400)
    return data


def _unknown(data: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise InputError(f"unknown field {prefix + extra[0]!r}; expected {', '.join(sorted(allowed))}",
                         prefix + extra[0])


EDIT_FIELDS = {"prompt", "target", "image", "scope", "tags", "rephrases", "also", "never"}
QUERY_FIELDS = {"prompt", "image"}


def edit_from_json(data: Mapping[str, Any], max_chars: int) -> EditInput:
    _unknown(data, EDIT_FIELDS)
    prompt = text_field(data.get("prompt"), "prompt", max_chars)
    target = text_field(data.get("target"), "target", max_chars)
    if data.get("image") is None:
        raise InputError("image is missing", "image")
    image = base64_image(data["image"])
    decode_image(image)
    return EditInput(prompt, target, image, scope_field(data.get("scope")),  # type: ignore[arg-type]
                     text_list(data.get("tags"), "tags", max_chars),
                     text_list(data.get("rephrases"), "rephrases", max_chars),
                     examples_from_json(data.get("also"), "also", max_chars),
                     examples_from_json(data.get("never"), "never", max_chars))


def examples_from_json(value: Any, field: str, max_chars: int) -> tuple[ExampleInput, ...]:
    """``also``/``never`` of a JSON edit: a list of ``{"image": <base64>, "prompt"?}``, every
    image decoded completely; an error names the entry (``never[1].image``)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InputError(f"{field} must be a list of {{\"image\", \"prompt\"}} objects, got {type(value).__name__}",
                         field)
    if len(value) > MAX_EXAMPLES:
        raise InputError(f"{field} has {len(value)} examples; the limit is {MAX_EXAMPLES}", field)
    examples = []
    for i, entry in enumerate(value):
        name = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise InputError(f"{name} must be an object {{\"image\": <base64>, \"prompt\"?}}, got "
                             f"{type(entry).__name__}", name)
        _unknown(entry, {"image", "prompt"}, prefix=f"{name}.")
        if entry.get("image") is None:
            raise InputError(f"{name}.image is missing", f"{name}.image")
        image = base64_image(entry["image"], f"{name}.image")
        decode_image(image, f"{name}.image")
        examples.append(ExampleInput(image, text_field(entry.get("prompt"), f"{name}.prompt", max_chars,
                                                       required=False)))
    return tuple(examples)


def split_form_list(values: list[str]) -> list[str]:
    """Repeated form fields, each also split on newlines (and, for tags, commas by the caller)."""
    return [part.strip() for value in values for part in value.splitlines() if part.strip()]


def edit_from_form(fields: Mapping[str, list[Any]], max_chars: int) -> EditInput:
    _unknown(fields, EDIT_FIELDS)
    texts = {k: _single_text(fields, k) for k in ("prompt", "target", "scope")}
    image = _form_file(fields, "image", required=True)
    decode_image(image)  # type: ignore[arg-type]
    tags = [t.strip() for t in split_form_list(_text_values(fields, "tags")) for t in t.split(",") if t.strip()]
    rephrases = split_form_list(_text_values(fields, "rephrases"))
    return EditInput(text_field(texts["prompt"], "prompt", max_chars),  # type: ignore[arg-type]
                     text_field(texts["target"], "target", max_chars),  # type: ignore[arg-type]
                     image, scope_field(texts["scope"] or None),  # type: ignore[arg-type]
                     text_list(tags, "tags", max_chars), text_list(rephrases, "rephrases", max_chars),
                     _form_examples(fields, "also"), _form_examples(fields, "never"))


def _form_examples(fields: Mapping[str, list[Any]], name: str) -> tuple[ExampleInput, ...]:
    """Repeated ``also``/``never`` files of a form (each takes the edit's prompt)."""
    values = [v for v in fields.get(name, []) if v not in ("", b"")]
    if len(values) > MAX_EXAMPLES:
        raise InputError(f"{name} has {len(values)} examples; the limit is {MAX_EXAMPLES}", name)
    for i, value in enumerate(values):
        if not isinstance(value, bytes):
            raise InputError(f"{name} must be image files (in a form they take the edit's prompt)", f"{name}[{i}]")
        decode_image(value, f"{name}[{i}]")
    return tuple(ExampleInput(v) for v in values)


def query_from_json(data: Mapping[str, Any], max_chars: int) -> QueryInput:
    _unknown(data, QUERY_FIELDS)
    prompt = text_field(data.get("prompt"), "prompt", max_chars)
    image = None if data.get("image") is None else decode_image(base64_image(data["image"]))
    return QueryInput(prompt, image)  # type: ignore[arg-type]


def query_from_form(fields: Mapping[str, list[Any]], max_chars: int) -> QueryInput:
    _unknown(fields, QUERY_FIELDS)
    prompt = text_field(_single_text(fields, "prompt"), "prompt", max_chars)
    data = _form_file(fields, "image", required=False)
    return QueryInput(prompt, decode_image(data) if data else None)  # type: ignore[arg-type]


def _single_text(fields: Mapping[str, list[Any]], name: str) -> str | None:
    values = _text_values(fields, name)
    if len(values) > 1:
        raise InputError(f"{name} is given {len(values)} times", name)
    return values[0] if values else None


def _text_values(fields: Mapping[str, list[Any]], name: str) -> list[str]:
    values = fields.get(name, [])
    for value in values:
        if not isinstance(value, str):
            raise InputError(f"{name} must be a text field, not a file", name)
    return list(values)


def _form_file(fields: Mapping[str, list[Any]], name: str, *, required: bool) -> bytes | None:
    """The bytes of form field ``name`` (already read by the caller: bytes), or ``None``."""
    values = fields.get(name, [])
    if not values or (len(values) == 1 and values[0] in ("", b"")):
        if required:
            raise InputError(f"{name} is missing", name)
        return None
    if len(values) > 1:
        raise InputError(f"{name} is given {len(values)} times", name)
    if not isinstance(values[0], bytes):
        raise InputError(f"{name} must be a file", name)
    return values[0]
