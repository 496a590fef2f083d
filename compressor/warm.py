"""Warm processes: a `python -c CODE` or `python -m MODULE` child forked from a server that imported torch,
transformers, TRL, PEFT and datasets once, instead of a fresh interpreter that spends ~9 s (2 cores) importing them.

`warm.Popen(argv, ...)` stands in for `subprocess.Popen` where argv is `[sys.executable, "-c", code, *args]` or
`[sys.executable, "-m", module, *args]`: the child is a real process of its own (a pid, signals, an exit code
like subprocess's, negative for a signal), with the stdin/stdout/stderr it is given, the environment it is given
(exactly: `os.environ` inside it is `env`), its working directory and, with `start_new_session=True`, its own
session and process group, made before `Popen` returns (so `os.killpg(p.pid, ...)` always reaches it). What it
runs sees `sys.argv` as the interpreter would set it, and ends like an interpreter: `SystemExit`'s code, 1 and a
traceback on stderr for an uncaught exception, atexit handlers run, streams flushed.

The server is itself a plain `python -c` process, started on first use and kept for the life of this one. It is
started with only the variables that the preloaded libraries read when imported (`IMPORT_TIME_ENV`: paths,
Python's, the Hub's and the caches', torch's and the thread pools'), never a token, so a child's
`/proc/PID/environ` holds nothing that its `env` did not give it; when those variables change, the next child
comes from another server (MAX_SERVERS are kept; the least recently used retires once its children have ended).
The server never touches CUDA, starts a thread or draws a progress bar (tqdm's cross-process lock would be
shared by every child), so forking it is safe; each child sets its torch thread count from its own `OMP_NUM_THREADS`.

Users: the app's run children (compressor.app.child.Child), the embedded Hub's Jobs (compressor.hubserver.jobs),
eval's peak-memory measurement (evaluate.speed) and llama.cpp's converter (export.convert).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

PRELOAD = ("torch", "transformers", "trl", "peft", "datasets", "compressor.api")
# read by the preloaded libraries when they are imported, so the server must start with them as the child wants
IMPORT_TIME_ENV = re.compile(
    r"(HOME|LANG|LC_\w+|LD_LIBRARY_PATH|PYTHON\w*|XDG_\w+|HF_\w+|HUGGINGFACE_\w+|TRANSFORMERS_\w+|"
    r"TORCH\w*|PYTORCH_\w+|OMP_\w+|MKL_\w+|OPENBLAS_\w+|CUDA_\w+|NCCL_\w+|TOKENIZERS_\w+)"
)
SECRET_ENV = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    """The part of `env` that a server must have been started with to fork a child for `env`."""
    return {k: v for k, v in env.items() if IMPORT_TIME_ENV.fullmatch(k) and k not in SECRET_ENV}


def supported(argv: list[str]) -> bool:
    """Whether `argv` is a Python invocation a warm server can run: `python -c CODE`, `python -m MODULE` or
    `python SCRIPT.py` of this Python."""
    if not argv or argv[0] != sys.executable:
        return False
    return (len(argv) >= 3 and argv[1] in ("-c", "-m")) or (len(argv) >= 2 and str(argv[1]).endswith(".py"))


# ---------------------------------------------------------------------------- the messages


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    data = struct.pack("!I", len(data)) + data
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


def _recv(sock: socket.socket, with_fds: bool = False) -> tuple[dict | None, list[int]]:
    """One message (None at the end of the stream) and the descriptors that came with it."""
    fds: list[int] = []
    if with_fds:
        head, fds, _, _ = socket.recv_fds(sock, 4, 8)
    else:
        head = sock.recv(4)
    while head and len(head) < 4:
        more = sock.recv(4 - len(head))
        if not more:
            break
        head += more
    if len(head) < 4:
        return None, fds
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


# ---------------------------------------------------------------------------- the server (a `python -c` process)


def _serve(control_fd: int) -> None:
    """The server's loop: import PRELOAD, then fork one child per request and report each child's exit.

    A request is {"argv", "env", "cwd", "session"} with three descriptors (stdin, stdout, stderr); the answer is
    {"pid"} (or {"error"}), and later {"exit": pid, "code"}. The server ends when its client closes the socket, or
    after {"retire"} once its last child has ended."""
    import importlib
    import select

    sock = socket.socket(fileno=control_fd)
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    _send(sock, {"ready": os.getpid()})
    children: set[int] = set()
    retiring = False
    while not (retiring and not children):
        readable, _, _ = select.select([sock], [], [], 0.2)
        if readable:
            request, fds = _recv(sock, with_fds=True)
            if request is None:
                return  # the client is gone; each child ends by itself when its own stdin closes
            if request.get("retire"):
                retiring = True
            else:
                try:
                    pid = _fork(sock, request, fds)
                except OSError as err:
                    _send(sock, {"error": f"{type(err).__name__}: {err}"})
                else:
                    children.add(pid)
                    _send(sock, {"pid": pid})
                finally:
                    for fd in fds:
                        os.close(fd)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children.discard(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            _send(sock, {"exit": pid, "code": code})


def _fork(sock: socket.socket, request: dict, fds: list[int]) -> int:
    """Fork one child; return once it has its own session (when asked), so its process group exists."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_w)
        os.read(ready_r, 1)  # the child has set itself up (or died trying: then the read ends at EOF)
        os.close(ready_r)
        return pid
    code = 1
    try:
        os.close(ready_r)
        sock.close()
        if request["session"]:
            os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.write(ready_w, b"1")
        os.close(ready_w)
        code = _child_main(request)
    except BaseException:  # the child must never return into the server's loop
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _child_main(request: dict) -> int:
    """Become the interpreter the argv names: environment, directory, argv, streams; run it; flush; exit code."""
    import atexit
    import runpy
    import tempfile

    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # TMPDIR is the child's own
    os.chdir(request["cwd"])
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the process's own streams, for its whole life)
    sys.stdout = open(1, "w", closefd=False, buffering=1 if unbuffered else -1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))
    argv = [str(a) for a in request["argv"][1:]]
    code = 0
    try:
        if argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path[0] = ""
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = argv
            sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as done:
        if done.code is None:
            code = 0
        elif isinstance(done.code, int):
            code = done.code
        else:
            print(done.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


_SERVER_SOURCE = "import sys; from compressor.warm import _serve; _serve(int(sys.argv[1]))"


# ---------------------------------------------------------------------------- the client (in the app, the Hub)


class _Server:
    """One running server and what it has said: the exit code of each child it forked."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SOURCE, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # it prints nothing; a pipe read to its end by the caller must not wait on it
            env=env,
            start_new_session=True,  # a Ctrl-C in the app's terminal is the app's to handle, not the server's
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()  # one request at a time
        self.cond = threading.Condition()
        self.replies: list[dict] = []
        self.codes: dict[int, int] = {}
        self.alive = True
        threading.Thread(target=self._read, daemon=True, name="warm-server").start()

    def _read(self) -> None:
        while True:
            try:
                message, _ = _recv(self.sock)
            except OSError:
                message = None
            with self.cond:
                if message is None:
                    self.alive = False
                elif "exit" in message:
                    self.codes[message["exit"]] = message["code"]
                elif "ready" not in message:
                    self.replies.append(message)
                self.cond.notify_all()
            if message is None:
                return

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, session: bool, fds: list[int]) -> int:
        with self.lock:
            _send(self.sock, {"argv": argv, "env": env, "cwd": cwd, "session": session}, fds)
            with self.cond:
                self.cond.wait_for(lambda: self.replies or not self.alive)
                if not self.replies:
                    raise OSError("the warm process server ended before it could start a child")
                reply = self.replies.pop(0)
        if "error" in reply:
            raise OSError(f"the warm process server could not start a child: {reply['error']}")
        return reply["pid"]

    def retire(self) -> None:
        with self.lock, contextlib.suppress(OSError):
            _send(self.sock, {"retire": True})


# e.g. the app's run children, the embedded Hub's Jobs and the GGUF converter, whose environments differ
MAX_SERVERS = 3
_servers_lock = threading.Lock()
_servers: dict[str, _Server] = {}  # by their environment, least recently used first


def _server_for(env: Mapping[str, str]) -> _Server:
    wanted = import_time_env(env)
    key = json.dumps(wanted, sort_keys=True)
    with _servers_lock:
        server = _servers.pop(key, None)
        if server is not None and not server.alive:
            server = None
        if server is None:
            while len(_servers) >= MAX_SERVERS:
                _servers.pop(next(iter(_servers))).retire()
            server = _Server(wanted)
        _servers[key] = server
        return server


class Popen:
    """A child forked from the warm server, used like `subprocess.Popen` (see the module docstring)."""

    def __init__(
        self,
        argv: list[str],
        *,
        stdin=None,
        stdout=None,
        stderr=None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        start_new_session: bool = False,
        text: bool = False,
    ) -> None:
        if not supported(argv):
            raise ValueError(f"warm.Popen runs `{sys.executable} -c|-m ...` only, not {argv[:2]}")
        env = dict(os.environ if env is None else env)
        self.args = argv
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        theirs: list[int] = []
        close: list[int] = []
        try:
            for which, spec in enumerate((stdin, stdout, stderr)):
                if spec == PIPE:
                    r, w = os.pipe()
                    mine, child = (w, r) if which == 0 else (r, w)
                    close.append(child)
                    mode = ("w" if which == 0 else "r") + ("" if text else "b")
                    line_buffered = text and which == 0  # what the app writes reaches the child at once
                    stream = open(mine, mode, buffering=1 if line_buffered else -1)  # noqa: SIM115
                    setattr(self, ("stdin", "stdout", "stderr")[which], stream)
                    theirs.append(child)
                elif spec == DEVNULL:
                    fd = os.open(os.devnull, os.O_RDWR)
                    close.append(fd)
                    theirs.append(fd)
                elif spec == STDOUT and which == 2:
                    theirs.append(theirs[1])
                elif spec is None:
                    theirs.append(which)
                else:
                    theirs.append(spec if isinstance(spec, int) else spec.fileno())
            self._server = _server_for(env)
            self.pid = self._server.spawn(argv, env, str(cwd or os.getcwd()), start_new_session, theirs)
        finally:
            for fd in close:
                os.close(fd)

    def _collect(self) -> bool:
        """Take this child's exit code from what the server said (the caller holds the server's condition); true
        once it is known. Several threads may wait on one child (a follower and a canceller): each sees it."""
        if self.returncode is None and self.pid in self._server.codes:
            self.returncode = self._server.codes.pop(self.pid)
        return self.returncode is not None

    def poll(self) -> int | None:
        with self._server.cond:
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._server.cond:
            done = self._server.cond.wait_for(lambda: self._collect() or not self._server.alive, timeout)
            if not done:
                raise subprocess.TimeoutExpired(self.args, timeout)
            if self.returncode is None:
                raise OSError(f"the warm process server ended before child {self.pid} did")
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        import signal

        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple:
        """Read stdout and stderr to their ends (in threads, so neither pipe fills) and wait; on timeout the
        child is killed and subprocess.TimeoutExpired raised, as `subprocess.run` does."""
        got: dict[str, Any] = {}
        readers = [
            threading.Thread(target=lambda n=name, s=stream: got.__setitem__(n, s.read()), daemon=True)
            for name, stream in (("out", self.stdout), ("err", self.stderr))
            if stream is not None
        ]
        for r in readers:
            r.start()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.wait()
            raise
        for r in readers:
            r.join()
        return got.get("out"), got.get("err")


def run(
    argv: list[str], *, capture_output: bool = False, timeout: float | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """`subprocess.run` for what `supported` accepts, forked warm; anything else runs as `subprocess.run`."""
    if not supported(argv):
        return subprocess.run(argv, capture_output=capture_output, timeout=timeout, **kwargs)
    if capture_output:
        kwargs.update(stdout=PIPE, stderr=PIPE)
    proc = Popen(argv, **kwargs)
    out, err = proc.communicate(timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)
