"""Shared fixtures: the ideal target without linear channels, and the ``slow`` marker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# tests/models.py is imported as ``models`` by the end-to-end tests.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "known_bug: a failing test pinning down a reported compiler bug")


@pytest.fixture(scope="session")
def no_linear_target(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ideal target whose channels all go through σ (forces the fold-input layout)."""
    path = tmp_path_factory.mktemp("targets") / "ideal-no-linear.yaml"
    path.write_text("inherits: ideal\nname: ideal-no-linear\nlinear_channels: false\n")
    return path
