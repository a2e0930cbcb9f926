"""Where an editor's reference set comes from (the reference prior, ``reference_weight``).

``load_reference(source, model, size)``:

- ``"world"`` (or ``None`` for a model trained on a world, such as the built-in one): a sample
  of the world's training distribution (:func:`editscope.world.reference.reference_probes`);
- a JSON file: a list of ``{"prompt": ..., "answer": ..., "image": ...}`` objects (``image``
  optional, relative to the file's folder), e.g. ordinary questions the deployed model answers
  correctly. The first ``size`` are used.
"""

from __future__ import annotations

import json
from pathlib import Path

from editscope.types import Probe

WORLD = "world"


class ReferenceSetError(ValueError):
    """A reference set cannot be built; the message names the source, record and field."""


def _world_dir(model: str | Path) -> Path:
    from editscope.world import builtin_path
    from editscope.world.world import WORLD_FILE

    directory = builtin_path() if str(model) == "builtin" else Path(model)
    if not (directory / WORLD_FILE).is_file():
        raise ReferenceSetError(
            f"the model {str(model)!r} was not trained on a world (no {WORLD_FILE}): an editor that takes a "
            "reference set (ScopeMemory's reference_size > 0, ScopeEdit with a prior section, prior.weight) needs a "
            "reference file for it (a JSON list of prompt/answer/image objects: `editscope init --reference "
            "FILE`, `bench --reference FILE`), or a preset without one"
        )
    return directory


def has_world(model: str | Path) -> bool:
    """Whether ``model`` (``"builtin"`` or a directory) was trained on a world."""
    try:
        _world_dir(model)
    except ReferenceSetError:
        return False
    return True


def load_reference(source: str | Path | None, model: str | Path, size: int) -> list[Probe]:
    """The reference probes for ``model`` (see the module docstring)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ReferenceSetError(f"the reference size must be a positive integer, got {size!r}")
    if source is None or str(source) == WORLD:
        from editscope.world import load_world
        from editscope.world.reference import reference_probes

        return reference_probes(load_world(_world_dir(model)), size)
    return _from_file(Path(source), size)


def _from_file(path: Path, size: int) -> list[Probe]:
    if not path.is_file():
        raise ReferenceSetError(f"reference file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReferenceSetError(f"reference file {path} is not readable JSON: {error}") from error
    if not isinstance(data, list) or not data:
        raise ReferenceSetError(f"reference file {path} must hold a non-empty list of prompt/answer objects")
    probes = []
    for i, record in enumerate(data[:size]):
        if not isinstance(record, dict):
            raise ReferenceSetError(f"{path}: record {i} is a {type(record).__name__}, not an object")
        for key in ("prompt", "answer"):
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ReferenceSetError(f"{path}: record {i}, field {key!r}: missing or empty")
        image = record.get("image")
        if image is not None:
            if not isinstance(image, str) or not image.strip():
                raise ReferenceSetError(f"{path}: record {i}, field 'image': not a path")
            resolved = path.parent / image
            if not resolved.is_file():
                raise ReferenceSetError(f"{path}: record {i}, field 'image': image not found: {resolved}")
            image = resolved
        probes.append(Probe(record["prompt"], record["answer"], image))
    return probes
