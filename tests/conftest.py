"""Shared test settings: offline hub, one teacher/image cache for the whole session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Teachers and decoded images are cached once per test session (as a user's
    repeated grids would), so each end-to-end test trains only its students."""
    path = str(tmp_path_factory.mktemp("kdbench-cache"))
    old = os.environ.get("KDBENCH_CACHE")
    os.environ["KDBENCH_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("KDBENCH_CACHE", None)
    else:
        os.environ["KDBENCH_CACHE"] = old
