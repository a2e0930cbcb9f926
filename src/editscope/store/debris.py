"""What a killed writer leaves behind, and removing it.

Every file of a store is written through a temporary file and a rename
(``editscope.store.atomic``), a snapshot file is recorded in the journal only after it is
whole, and an export is built in a staging folder beside its target. A process killed part-way
therefore leaves only debris, never a half-written file in use:

- ``.tmp-*`` files in the store directory, ``snapshots/`` and the image folders;
- ``*.safetensors`` files in ``snapshots/`` that no journal row records;
- ``.OUT.tmp-*`` staging folders beside an export's target ``OUT`` (found through the
  journal's ``export_start`` events).

Only the writer removes debris (it holds the writer lock, so no write is in flight): on open,
and in ``check --repair``. Recorded files, journal rows and images are never removed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from editscope.store.journal import Journal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Debris:
    path: Path
    what: str  # why it is debris, for reports


def find_debris(directory: Path, journal: Journal) -> list[Debris]:
    """The crash debris of the store in ``directory`` (see the module docstring)."""
    found: list[Debris] = []
    snapshots, images = directory / "snapshots", directory / "images"
    folders = [directory, snapshots, *(sorted(p for p in images.iterdir() if p.is_dir()) if images.is_dir() else [])]
    for folder in folders:
        if folder.is_dir():
            found += [Debris(p, "temporary file of an interrupted write") for p in sorted(folder.glob(".tmp-*"))]
    recorded = {s.file for s in journal.snapshots()}
    if snapshots.is_dir():
        found += [Debris(p, "snapshot file no journal row records (an interrupted snapshot)")
                  for p in sorted(snapshots.glob("*.safetensors")) if p.name not in recorded]
    outs = {Path(e.payload["out"]) for e in journal.events("export_start") if e.payload.get("out")}
    for out in sorted(outs):
        if out.parent.is_dir():
            found += [Debris(p, f"staging folder of an interrupted export to {out}")
                      for p in sorted(out.parent.glob(f".{out.name}.tmp-*")) if p.is_dir()]
    return found


def remove_debris(debris: list[Debris]) -> None:
    for item in debris:
        if item.path.is_dir():
            shutil.rmtree(item.path)
        else:
            item.path.unlink(missing_ok=True)
        log.warning("removed crash debris %s (%s)", item.path, item.what)
