"""The `gpu` marker's promise (pyproject.toml): tests marked `gpu` are deselected where no CUDA device is present.

A pytest plugin (listed in conftest's `pytest_plugins`). torch is imported only when a `gpu` test was collected;
the deselected tests are reported through pytest's `pytest_deselected` and named in one summary line (under
pytest-xdist the workers collect, and send their lists to the controller, which prints the line)."""

from __future__ import annotations

import pytest

_DESELECTED = pytest.StashKey[set]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=marked)
    items[:] = [item for item in items if item.get_closest_marker("gpu") is None]
    names = {item.nodeid for item in marked}
    config.stash[_DESELECTED] = names
    if hasattr(config, "workeroutput"):  # an xdist worker: the controller reports
        config.workeroutput["gpu_deselected"] = sorted(names)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist's controller: gather what each worker deselected."""
    names = getattr(node, "workeroutput", {}).get("gpu_deselected", [])
    if names:
        node.config.stash[_DESELECTED] = node.config.stash.get(_DESELECTED, set()) | set(names)


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    names = config.stash.get(_DESELECTED, set())
    if names and not hasattr(config, "workeroutput"):
        terminalreporter.write_line(
            f"gpu: {len(names)} test(s) marked gpu deselected, no CUDA device here (torch.cuda.is_available() is "
            f"False): {', '.join(sorted(names))}"
        )
