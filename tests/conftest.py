"""Shared test fixtures.

Tests never touch the network: the Hugging Face Hub is forced offline and pointed at a temporary
cache. Tests that need the real data in ``../shared`` skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFFUSR_SHARED", REPO.parent / "shared"))


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path_factory, monkeypatch):
    """Every test runs with the Hub offline and an empty private cache."""
    cache = tmp_path_factory.getbasetemp() / "hf-home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("DIFFFUSR_CACHE", str(cache / "difffusr"))


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder; skips the test when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} not present")
    return SHARED


@pytest.fixture(scope="session")
def compat(shared: Path) -> Path:
    path = shared / "compat"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def shared_data(shared: Path) -> Path:
    path = shared / "data"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session")
def example_safe(tmp_path_factory) -> Path:
    """A synthetic 192 × 192 (10 m) L2A SAFE from ``difffusr_cli.example``, built once per session.

    Shared by many tests: treat it as read-only (copy it before corrupting anything).
    """
    from difffusr_cli.example import make_example_safe

    return make_example_safe(tmp_path_factory.mktemp("example-safe"), size=192, seed=0)
