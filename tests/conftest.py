"""Shared pytest set-up: ``tests/`` on ``sys.path`` (for ``tiny_models``) and tier markers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))


def pytest_configure(config: pytest.Config) -> None:
    """Tiny models run fastest on one intra-op thread (and a 2-core CI machine stays responsive)."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under ``tests/integration`` carries the ``integration`` marker."""
    integration_dir = TESTS_DIR / "integration"
    for item in items:
        if integration_dir in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
