"""Helpers for the store's integration tests: a tiny LLaVA saved as a checkpoint directory, a
few images, an editor config under which small sequences of edits hold, and ways to compare
stores."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import torch
from PIL import Image

from tiny_models import build_tiny

ARCH = "LlavaForConditionalGeneration"
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
EDITS = [
    ("what color is the object in the image ?", "red"),
    ("what is this ?", "a cat"),
    ("how many are there ?", "three"),
    ("where is it ?", "house"),
]
# The tiny preset with a larger local rank: four edits on distinct images all hold.
PRESET_YAML = """
rank_local: 28
rank_shared: 4
alpha: 32
top_k: 3
eta: 1.0
n_last_layers: 2
projector_eta: 0.01
shared_layers: 2
steps_per_edit: 5
"""


def save_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    model, processor = build_tiny(ARCH, seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def make_images(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, colour in enumerate(COLOURS):
        path = directory / f"image{i}.png"
        Image.new("RGB", (32, 32), colour).save(path)
        paths.append(path)
    return paths


def write_preset(directory: Path) -> Path:
    path = directory / "store-test.yaml"
    path.write_text(PRESET_YAML)
    return path


def store_world(root: Path) -> dict:
    """What the store's CLI tests share: a tiny checkpoint, its images and a preset, under ``root``."""
    return {
        "root": root,
        "base": save_tiny_checkpoint(root / "base"),
        "images": make_images(root / "images"),
        "preset": write_preset(root),
    }


def probe_logits(editor, images: list[Path]) -> torch.Tensor:
    """Logits on every edit's own input and on an unrelated text prompt, stacked."""
    rows = [editor.logits(images[i], prompt, target) for i, (prompt, target) in enumerate(EDITS)]
    rows.append(editor.logits(None, "describe the picture please .", "a dog"))
    return torch.cat([r.reshape(-1) for r in rows])


def journal_rows(directory: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(directory / "journal.sqlite") as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}


def store_state(directory: Path) -> tuple[dict, dict]:
    """The journal's rows and the hash of every other file (the SQLite files and the lock
    excluded): equal before and after a failed call means the store is unchanged."""
    files = {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.name.startswith(("journal.sqlite", "lock"))
    }
    return journal_rows(directory), files

