"""The server: a request handler made of every endpoint, `HubServer` (store, tokens, jobs, faults, LFS upload
tickets), `serve` to start one, and the `serve-hub` command line."""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

from .account import AccountEndpoints
from .common import log
from .faults import Fault, Faults
from .jobs import Jobs
from .jobs_api import JobEndpoints
from .reads import ReadEndpoints
from .store import Store
from .writes import WriteEndpoints

TICKET_SECONDS = 3600


class _Handler(AccountEndpoints, ReadEndpoints, WriteEndpoints, JobEndpoints):
    """Every endpoint, on `request.Request`'s dispatch."""


class HubServer(ThreadingHTTPServer):
    """A running Hub: `.url`, `.store`, `.tokens`; `.shutdown()` stops it and frees the port."""

    daemon_threads = True
    page_size = 1000  # entries per tree page, like the Hub; tests lower it to exercise pagination
    max_file_size = 50 * 1000**3  # the Hub's limit per file; tests lower it to make a commit fail

    def __init__(self, address: tuple[str, int], data: Path, tokens: dict | None = None):
        super().__init__(address, _Handler)
        self.store = Store(data)
        self.tokens = {token: _check_token_info(info) for token, info in (tokens or {}).items()}
        self.url = f"http://{self.server_address[0]}:{self.server_address[1]}"
        self._tickets: dict[str, tuple[str, int, float]] = {}
        self._thread: threading.Thread | None = None
        self.faults = Faults()  # failures on purpose, for the tests (see Fault)
        self.transcript: list[tuple[str, str, int, bytes]] | None = None  # a list: every answer is kept
        self.jobs = Jobs(Path(data), self.url)  # the Jobs API: each job runs here, in a subprocess

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server stops; Ctrl-C raises KeyboardInterrupt here."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def shutdown(self) -> None:
        self.jobs.stop_all()
        if self._thread is not None:
            super().shutdown()
            self._thread = None
        self.server_close()

    def issue_ticket(self, oid: str, size: int) -> str:
        ticket = secrets.token_urlsafe(24)
        with self.store.lock:
            self._tickets[ticket] = (oid, size, time.monotonic() + TICKET_SECONDS)
        return ticket

    def take_ticket(self, ticket: str, oid: str) -> int | None:
        with self.store.lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found[0] != oid or found[2] < time.monotonic():
            return None
        return found[1]


def _check_token_info(info: dict) -> dict:
    if not isinstance(info, dict) or not info.get("user") or info.get("role") not in ("read", "write"):
        raise ValueError(
            "each token maps to {'user': NAME, 'role': 'read' | 'write'} (optionally 'orgs': [...])"
        )
    return dict(info)


def parse_token(spec: str) -> tuple[str, dict]:
    """'TOKEN:USER:ROLE' (ROLE read or write) -> (token, {'user': USER, 'role': ROLE})."""
    token, _, rest = spec.partition(":")
    user, _, role = rest.partition(":")
    if not token or not user or role not in ("read", "write"):
        raise ValueError(
            "a token is given as TOKEN:USER:ROLE with ROLE 'read' or 'write', e.g. hf_demo:alice:write"
        )
    return token, {"user": user, "role": role}


def serve(port: int, data: Path, tokens: dict | None = None, host: str = "127.0.0.1") -> HubServer:
    """Start a Hub server on host:port (0: any free port) over the data folder, in a daemon thread."""
    return HubServer((host, port), Path(data), tokens).start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """serve-hub's options, on `python -m compressor serve-hub` and on `python -m compressor.hubserver`."""
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder holding the repos (created if missing)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind; only loopback by default")
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN:USER:ROLE",
        help="accept TOKEN as USER (read|write)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="KIND@N",
        help="fail on purpose (tests): 503@3 answers the 3rd request with a 503, drop@2,PUT drops the 2nd PUT "
        "mid-upload, slow@1x5:2 delays 5 requests by 2 s; see hubserver.Fault",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Serve until Ctrl-C (or SIGTERM)."""
    try:
        tokens = dict(parse_token(spec) for spec in args.token)
        faults = [Fault.parse(spec) for spec in args.fault]
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    if args.host not in ("127.0.0.1", "localhost"):
        log.warning("binding %s: the hub is reachable from other machines", args.host)
    try:
        server = serve(args.port, args.data, tokens, host=args.host)
    except OSError as exc:
        print(
            f"error: cannot serve on {args.host}:{args.port} ({exc.strerror}): pick another --port, or 0 for "
            "any free one",
            file=sys.stderr,
        )
        return 2
    for fault in faults:
        server.faults.add(fault)
    print(
        f"Hub on {server.url} (data: {args.data}); use HF_ENDPOINT={server.url} HF_HUB_DISABLE_XET=1",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`compressor serve-hub --port P --data DIR [--token TOKEN:USER:ROLE ...]`: serve until Ctrl-C."""
    description = "Serve a local, Hugging Face Hub-compatible endpoint for offline pulls and pushes."
    parser = argparse.ArgumentParser(prog="compressor serve-hub", description=description)
    add_arguments(parser)
    return run(parser.parse_args(argv), parser)
