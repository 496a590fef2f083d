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

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_hub", "tests.gpu_marker"]

_REPO = Path(__file__).resolve().parent.parent


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
