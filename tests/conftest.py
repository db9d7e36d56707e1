"""Shared pytest fixtures for the whole test suite (keep this file small)."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The root of the vmwidgets repository (where pyproject.toml lives)."""
    return REPO_ROOT
