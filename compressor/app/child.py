"""The run's own process: `Child` runs one recipe through `api.run` in a process group of its own (forked by
compressor.warm), reads its events, and stops it, workers included; `_child` is that process's code."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from compressor import warm
from compressor.recipe import Recipe, dump_recipe


def _child() -> None:
    """A run's own process. `python -c` runs this function's source (so the child imports compressor, not
    Gradio): it reads {"recipe", "run_dir", "token"} as one JSON line on stdin, runs `api.run`, and writes
    the run's events as JSON lines on the stdout it was given (print() and library output go to stderr,
    the server's log): ["stage", stage, state], ["progress", stage, step, total, logs], ["log", level,
    message], then ["done", summary] or ["error", message]. The token arrives on stdin, never in the
    arguments or the environment. When the app goes away its end of stdin closes, and the run stops too."""
    import json
    import logging
    import os
    import signal
    import sys
    import threading
    import traceback

    events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(*event: object) -> None:
        with lock:
            events.write(json.dumps(event, default=str) + "\n")
            events.flush()

    job = json.loads(sys.stdin.readline())

    def orphaned() -> None:  # the app closed its end (or died): stop the whole run, workers included
        sys.stdin.read()
        os.killpg(os.getpgrp(), signal.SIGTERM)

    threading.Thread(target=orphaned, daemon=True).start()

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            send("log", record.levelno, record.getMessage())

    logger = logging.getLogger("compressor")
    logger.addHandler(Forward(logging.INFO))
    logger.setLevel(logging.INFO)
    from compressor import api
    from compressor.errors import CompressorError, page_words
    from compressor.recipe import recipe_from_text

    try:
        recipe = recipe_from_text(job["recipe"], "(run)")
        summary = api.run(
            recipe,
            job["run_dir"],
            job["token"],
            on_stage=lambda stage, state: send("stage", stage, state),
            on_progress=lambda stage, step, total, logs: send("progress", stage, step, total, logs),
        )
        send("done", summary)
    except CompressorError as err:
        send("error", page_words(err))  # the page shows it: its words, not the CLI's
    except Exception as err:  # the server log keeps the traceback; the page gets one clear line
        traceback.print_exc()
        send("error", f"{type(err).__name__}: {err} (the server log has the details)")


CHILD_SOURCE = inspect.getsource(_child) + "\n_child()\n"


STOP_GRACE_S = 10.0  # after SIGTERM, how long a run's processes get before SIGKILL


class Child:
    """One run in its own process group: its events arrive on `events`; `stop()` ends it, workers included.

    The process is forked by compressor.warm from a server that imported torch, transformers and TRL once (a run
    starts in well under a second, not after a 9 s import); its environment is this one's plus TMPDIR, and the
    token reaches it on stdin only. Its temporary files go to a folder of its own (TMPDIR), removed when it
    ends or is stopped."""

    def __init__(self, recipe: Recipe, run_dir: Path, token: str | None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="compressor-run-"))
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        self.proc = warm.Popen(  # forked from a process that has imported torch & co. already
            [sys.executable, "-c", CHILD_SOURCE],
            stdin=warm.PIPE,
            stdout=warm.PIPE,
            env=env,
            start_new_session=True,  # its own process group: stop() reaches the data loader's workers too
            text=True,
        )
        job = {"recipe": dump_recipe(recipe), "run_dir": str(run_dir.absolute()), "token": token}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()  # stdin stays open: the child stops itself when it closes
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(["exit"])

    def stop(self) -> None:
        """SIGTERM to the run's process group, SIGKILL after STOP_GRACE_S; then its temporary folder goes."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
