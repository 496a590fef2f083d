"""Session-wide test set-up.

The Hugging Face client reads HF_ENDPOINT when it is imported, so the environment is fixed here, before
any test module imports huggingface_hub or transformers: every Hub call goes to the embedded server on
127.0.0.1 (started by the `hub_server` fixture) and every cache lives in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SESSION_DIR = tempfile.mkdtemp(prefix="compressor-tests-")
_HUB_PORT = _free_port()
os.environ["COMPRESSOR_TEST_HUB_PORT"] = str(_HUB_PORT)
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{_HUB_PORT}"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HOME"] = os.path.join(_SESSION_DIR, "hf-home")
os.environ.pop("HF_TOKEN", None)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _free_cores(sample_s: float = 0.5) -> float:
    """The cores not busy right now: this process's usable cores times the idle share of the CPU over a short
    sample of /proc/stat (another heavy process on a 2-core machine leaves about one)."""
    cores = len(os.sched_getaffinity(0))

    def times() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle0, all0 = times()
        time.sleep(sample_s)
        idle1, all1 = times()
    except (OSError, ValueError, IndexError):
        return float(cores)
    return cores * (idle1 - idle0) / max(1, all1 - all0)


def _threads() -> int:
    """Torch threads for this test process: the free cores shared among the xdist workers, at least one.
    Spinning OpenMP threads on a core that another process holds slow a run down severalfold, so a busy machine
    gets fewer threads, not more. COMPRESSOR_TEST_THREADS overrides."""
    if os.environ.get("COMPRESSOR_TEST_THREADS"):
        return int(os.environ["COMPRESSOR_TEST_THREADS"])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, int(_free_cores() + 0.25) // workers)


# every subprocess a test starts (CLI runs, Jobs, the app's run children) inherits the same count
os.environ["OMP_NUM_THREADS"] = str(_threads())

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_hub", "tests.gpu_marker"]


def pytest_report_header(config):
    return f"torch threads per test process: {os.environ['OMP_NUM_THREADS']} (the cores free at the start)"


_REPO = Path(__file__).resolve().parent.parent

# Under pytest-xdist (`make test` runs two workers) each worker works in a folder of its own, so that the stray-file
# check below sees only its own tests' leftovers in the working directory, never the other worker's.
# The same for temporary files: each worker (and every process it starts) gets a TMPDIR of its own, so a check that
# a run left no temporary folder behind (tests/test_app_api.py) never counts the other worker's runs.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.chdir(tempfile.mkdtemp(prefix=f"cwd-{os.environ['PYTEST_XDIST_WORKER']}-", dir=_SESSION_DIR))
    os.environ["TMPDIR"] = tempfile.mkdtemp(
        prefix=f"tmp-{os.environ['PYTEST_XDIST_WORKER']}-", dir=_SESSION_DIR
    )
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_collection_modifyitems(config, items):
    """Modules with end-to-end tests (marked `slow`), then those with browser tests, first: xdist hands out whole
    files in this order, so the long ones start at once and the short ones fill the gaps, instead of one long file
    running alone at the end. A module's tests stay together and in pytest's order (its fixtures are made once)."""

    def module(item) -> str:
        return item.nodeid.split("::")[0]

    slow = {module(i) for i in items if i.get_closest_marker("slow")}
    browser = {module(i) for i in items if i.get_closest_marker("browser")}
    items.sort(key=lambda item: (module(item) not in slow, module(item) not in browser))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_stray_files():
    """Fail a test that leaves files in the repository or the working directory (tests write to tmp_path)."""
    places = {_REPO, Path.cwd()}
    before = {p: set(p.iterdir()) for p in places}
    yield
    for place, entries in before.items():
        stray = sorted(str(p.name) for p in set(place.iterdir()) - entries if p.name not in {".pytest_cache"})
        if stray:
            pytest.fail(f"test left stray files in {place}: {', '.join(stray)}")
