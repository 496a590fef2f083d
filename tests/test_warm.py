"""compressor.warm: children forked from a warm server behave like `subprocess.Popen` of the same Python.

Each test starts real children (no mock); the first one of the session pays the server's start (its imports)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compressor import warm

PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


def test_a_child_gets_its_argv_stdin_env_cwd_and_exit_code(tmp_path):
    code = (
        "import os, sys\n"
        "print(sys.argv, os.getcwd(), os.environ.get('ONLY_HERE'), 'NOT_GIVEN' in os.environ)\n"
        "print(sys.stdin.readline().strip().upper())\n"
        "sys.exit(3)"
    )
    env = _env(ONLY_HERE="yes")
    env.pop("NOT_GIVEN", None)
    os.environ["NOT_GIVEN"] = "1"  # in this process only: the child's environment is exactly `env`
    try:
        proc = warm.Popen(
            [PY, "-c", code, "a", "b"], stdin=warm.PIPE, stdout=warm.PIPE, env=env, cwd=tmp_path, text=True
        )
    finally:
        del os.environ["NOT_GIVEN"]
    proc.stdin.write("hello\n")
    proc.stdin.flush()
    out = proc.stdout.read().splitlines()
    assert proc.wait(60) == 3
    assert out == [f"['-c', 'a', 'b'] {tmp_path} yes False", "HELLO"]


def test_module_and_script_runs_see_argv_as_the_interpreter_sets_it(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(
        "import sys, atexit\natexit.register(lambda: print('atexit ran'))\nprint(sys.argv[1:])\n"
    )
    done = warm.run([PY, str(script), "x", "--y"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "['x', '--y']\natexit ran\n")
    done = warm.run(
        [PY, "-m", "compressor", "validate", str(tmp_path / "nope.yaml")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "nope.yaml" in done.stderr  # the CLI's own error and exit code


def test_an_uncaught_exception_exits_1_with_its_traceback_and_a_signal_is_negative():
    done = warm.run([PY, "-c", "raise KeyError('boom')"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "KeyError: 'boom'" in done.stderr
    proc = warm.Popen([PY, "-c", "import time; time.sleep(60)"], start_new_session=True)
    assert os.getsid(proc.pid) == proc.pid  # its own session exists when Popen returns: killpg reaches it
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == -signal.SIGTERM
    proc = warm.Popen([PY, "-c", "import time; time.sleep(60)"])
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.2)
    proc.kill()
    assert proc.wait(30) == -signal.SIGKILL


def test_a_token_in_env_reaches_the_child_but_never_its_process_environment():
    token = "hf_warm_secret_Qx81"
    proc = warm.Popen(
        [PY, "-c", "import os, sys; print(os.environ['HF_TOKEN']); sys.stdout.flush(); sys.stdin.read()"],
        stdin=warm.PIPE,
        stdout=warm.PIPE,
        env=_env(HF_TOKEN=token),
        text=True,
    )
    assert proc.stdout.readline().strip() == token  # the positive control: the child has it in os.environ
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    proc.stdin.close()
    assert proc.wait(30) == 0
    assert token.encode() not in environ and token.encode() not in cmdline
    assert b"HF_ENDPOINT=" in environ  # what was read is the server's environment, import-time variables only


def test_the_import_time_environment_picks_the_server():
    def server_pid(env):
        done = warm.run([PY, "-c", "import os; print(os.getppid())"], capture_output=True, text=True, env=env)
        return int(done.stdout)

    same = server_pid(_env())
    assert server_pid(_env(UNRELATED="x")) == same  # applied in the child, not at import
    other = server_pid(_env(HF_HUB_OFFLINE="1"))  # read by huggingface_hub at import: another server
    assert other != same
    assert not warm.supported(["bash", "-c", "true"]) and not warm.supported([PY, "-V"])
    with pytest.raises(ValueError, match="runs .* -c\\|-m"):
        warm.Popen(["bash", "-c", "true"])


def test_the_server_ends_with_the_process_that_started_it():
    code = (
        "import sys; from compressor import warm\n"
        "done = warm.run([sys.executable, '-c', 'import os; print(os.getppid())'], capture_output=True, text=True)\n"
        "print(done.stdout.strip())"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    server = Path(f"/proc/{int(out.stdout)}")  # the child's parent: the warm server of that process
    deadline = time.monotonic() + 30
    while server.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not server.exists(), "the warm server outlived the process that started it"


def test_two_threads_waiting_on_one_child_both_get_its_exit_code():
    """The embedded Hub's job follower and its canceller wait on the same child at once (as subprocess allows)."""
    import threading

    proc = warm.Popen([PY, "-c", "import sys; sys.stdin.read(); sys.exit(5)"], stdin=warm.PIPE)
    codes: list[int] = []
    waiters = [threading.Thread(target=lambda: codes.append(proc.wait(60))) for _ in range(3)]
    for w in waiters:
        w.start()
    time.sleep(0.2)
    proc.stdin.close()
    for w in waiters:
        w.join(60)
    assert codes == [5, 5, 5] and proc.poll() == 5
