"""The `gpu` marker's promise (pyproject.toml): tests marked `gpu` are deselected where no CUDA device is present.

A pytest plugin (listed in conftest's `pytest_plugins`). torch is imported only when a `gpu` test was collected;
the deselected tests are reported as deselected (pytest's own count) and named in one summary line."""

from __future__ import annotations

import pytest

_DESELECTED = pytest.StashKey[list]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=marked)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    config.stash[_DESELECTED] = marked


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    marked = config.stash.get(_DESELECTED, [])
    if marked:
        terminalreporter.write_line(
            f"gpu: {len(marked)} test(s) marked gpu deselected, no CUDA device here (torch.cuda.is_available() "
            f"is False): {', '.join(item.nodeid for item in marked)}"
        )
