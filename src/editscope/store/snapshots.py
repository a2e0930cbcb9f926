"""Editor-state snapshots as safetensors files, written atomically and checked on read.

A snapshot file is identified by its SHA-256 (recorded in the journal); reading a file whose
bytes no longer match, or that safetensors cannot parse, raises ``SnapshotCorrupt`` naming the
snapshot and the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from editscope.store.atomic import write_atomically

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


class SnapshotError(RuntimeError):
    """A snapshot cannot be written or read."""


class SnapshotCorrupt(SnapshotError):
    """A snapshot file is missing, damaged or unreadable."""


def check_snapshot_name(name: str) -> str:
    """Snapshot names start with a letter or underscore (so they never read as edit ids) and
    use letters, digits, ``_``, ``.`` and ``-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SnapshotError(
            f"invalid snapshot name {name!r}: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or '_'"
        )
    return name


def _encode(state: dict[str, torch.Tensor], lineage: Sequence[int]) -> bytes:
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    return save_safetensors(tensors, metadata={"lineage": json.dumps([int(i) for i in lineage])})


class SnapshotFiles:
    """Snapshot files under one directory; file names are unique, never reused."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def write(self, name: str, state: dict[str, torch.Tensor], lineage: Sequence[int]) -> tuple[str, str]:
        """Write ``state`` and return ``(file name, sha256)``. The file appears whole or not
        at all; it counts as a snapshot only once the journal records it."""
        check_snapshot_name(name)
        data = _encode(state, lineage)
        digest = hashlib.sha256(data).hexdigest()
        self.root.mkdir(parents=True, exist_ok=True)
        file_name = f"{name}-{uuid.uuid4().hex[:12]}.safetensors"
        write_atomically(self.root / file_name, data)
        return file_name, digest

    def rewrite(self, file_name: str, state: dict[str, torch.Tensor], lineage: Sequence[int], sha256: str) -> str:
        """Write ``state`` over the recorded snapshot file ``file_name`` if it encodes to the
        recorded ``sha256`` (a rebuilt snapshot, bit-exact); returns the digest it encodes to
        (written only when equal)."""
        data = _encode(state, lineage)
        digest = hashlib.sha256(data).hexdigest()
        if digest == sha256:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomically(self.root / file_name, data)
        return digest

    def read(self, name: str, file_name: str, sha256: str) -> dict[str, torch.Tensor]:
        """Read and verify snapshot ``name``; raises ``SnapshotCorrupt`` when the file is
        missing, its SHA-256 differs from the recorded one, or it does not parse."""
        path = self.root / file_name
        if not path.is_file():
            raise SnapshotCorrupt(f"snapshot {name!r} is missing: {path} does not exist")
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise SnapshotCorrupt(
                f"snapshot {name!r} is corrupt: {path} has SHA-256 {actual}, "
                f"the journal recorded {sha256}"
            )
        try:
            return load_safetensors(data)
        except (SafetensorError, ValueError) as error:
            raise SnapshotCorrupt(f"snapshot {name!r} is corrupt: cannot parse {path}: {error}") from error
