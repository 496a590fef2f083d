"""Pytest fixtures for tiny models (loaded by `tests/conftest.py` through `pytest_plugins`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """A function `family, seed=0 -> Path` giving a saved tiny model folder, built once per session.

    The folders are shared by every test of the session: treat them as read-only (copy one to change it).
    """
    from compressor.tiny import save_family

    root = tmp_path_factory.mktemp("tiny-models")
    cache: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        key = (family, seed)
        if key not in cache:
            cache[key] = save_family(family, root / f"{family}-seed{seed}", seed=seed)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The shared tiny byte-level tokenizer (same vocabulary as every tiny model)."""
    from compressor.tiny import build_tokenizer

    return build_tokenizer()
