"""Saving and loading an editor's state: ``editor_state.safetensors`` (tensors) and
``editor_config.json`` (which editor, its configuration and the model class)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from editscope.atomic import write_atomically

STATE_FILE = "editor_state.safetensors"
CONFIG_FILE = "editor_config.json"


def save_editor(editor: Any, directory: str | Path) -> Path:
    """Write the editor's state and configuration into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in editor.state_dict().items()}
    info = dict(editor.config_dict())
    info["model_class"] = type(editor.vlm.model).__name__
    # each file whole or not at all (a temporary file, an fsync and a rename)
    write_atomically(directory / STATE_FILE, save(state, metadata={"editor": str(info.get("editor", ""))}))
    write_atomically(directory / CONFIG_FILE, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return directory


def read_editor_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved editor in {directory}: {CONFIG_FILE} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def _with_defaults(saved: Any, config: Any) -> Any:
    """A saved config dict with the fields added since it was written set to their defaults,
    so that state saved before a new option existed still loads where the option is unused. A
    config class with ``normalise`` (ScopeEditConfig: sections, or the flat form of earlier
    versions) reads the saved dict as it would be written now."""
    normalise = getattr(type(config), "normalise", None)
    if isinstance(saved, dict) and normalise is not None:
        try:
            return normalise(saved)
        except (TypeError, ValueError):
            return saved  # not this editor's configuration: the comparison says so
    if not isinstance(saved, dict) or not dataclasses.is_dataclass(config):
        return saved
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    return {**{k: v for k, v in defaults.items() if k not in saved}, **saved}


def load_editor_state(editor: Any, directory: str | Path) -> None:
    """Load a saved state into ``editor``; the editor type, configuration and model class must
    match what was saved. Nothing is changed if any check fails."""
    directory = Path(directory)
    info = read_editor_config(directory)
    mine = editor.config_dict()
    if info.get("editor") != mine.get("editor"):
        raise ValueError(f"{directory} holds a {info.get('editor')!r} editor, not {mine.get('editor')!r}")
    if _with_defaults(info.get("config"), editor.config) != mine.get("config"):
        raise ValueError(f"{directory} was saved with another configuration than this editor's")
    model_class = type(editor.vlm.model).__name__
    if info.get("model_class") != model_class:
        raise ValueError(f"{directory} was saved for a {info.get('model_class')}, not a {model_class}")
    path = directory / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no saved editor state: {path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"cannot read editor state {path}: {err}") from err
    editor.load_state_dict(state)
