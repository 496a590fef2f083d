"""The HTTP layer's base: the route table, and a request's dispatch, body, answer, authentication and
permission checks, which every endpoint (account.py, reads.py, writes.py, jobs_api.py) builds on."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from .common import HubError, log
from .store import _valid_repo_id

if TYPE_CHECKING:
    from .server import HubServer

KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def _flag(query: dict, name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() in ("1", "true", "yes")


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<kinds>models|datasets|spaces)/" + _REPO
_GIT = r"/(?:(?P<kinds>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+?)\.git/info/lfs/objects/"
ROUTES = [
    ("GET", r"/api/whoami-v2", "whoami"),
    ("POST", r"/api/repos/create", "create_repo"),
    ("DELETE", r"/api/repos/delete", "delete_repo"),
    ("POST", r"/api/validate-yaml", "validate_yaml"),
    ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "info"),
    ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ("POST", _API + r"/paths-info/(?P<rev>[^/]+)", "paths_info"),
    ("GET", _API + r"/refs", "refs"),
    ("GET", _API + r"/commits/(?P<rev>[^/]+)", "commits"),
    ("PUT", _API + r"/settings", "settings"),
    ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
    ("POST", _GIT + "batch", "lfs_batch"),
    ("POST", _GIT + "verify", "lfs_verify"),
    ("PUT", r"/api/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)", "jobs_list"),
    ("POST", r"/api/jobs/(?P<namespace>[^/]+)", "job_create"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)", "job_info"),
    ("GET", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/logs", "job_logs"),
    ("POST", r"/api/jobs/(?P<namespace>[^/]+)/(?P<job_id>[^/]+)/cancel", "job_cancel"),
    (
        "GET HEAD",
        r"/(?:(?P<kinds>datasets|spaces)/)?" + _REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
        "resolve",
    ),
    (
        "GET HEAD POST PUT",
        r"/api/(?:models|datasets|spaces)/[^/]+(?:/(?:revision|tree|paths-info|refs|commits|settings|preupload|commit)(?:/.*)?)?",
        "no_repo",
    ),
    ("GET HEAD", r"/[^/]+/resolve/.*", "no_repo"),
]
_COMPILED = [(methods.split(), re.compile(pattern), name) for methods, pattern, name in ROUTES]


def _route(method: str, path: str) -> tuple[str, dict]:
    for methods, pattern, name in _COMPILED:
        match = pattern.fullmatch(path)
        if match and method in methods:
            return name, {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
    raise HubError(404, f"Not found: {method} {path}")


class Request(BaseHTTPRequestHandler):
    """One request: route it, authenticate it, answer it (or answer the HubError it raised).

    The endpoints (`h_<route name>`) live in the subclasses `server._Handler` combines: account.py, reads.py,
    writes.py and jobs_api.py."""

    protocol_version = "HTTP/1.1"
    server_version = "compressor-hub/1"
    server: HubServer

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body, self.user = b"", None
        self._unread, self._answered = True, False
        fault = self.server.faults.take(self.command, url.path)
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        try:
            if fault is not None and fault.kind == "status":
                raise HubError(fault.status, f"Injected fault: {fault.status} on request {fault.hits_at[-1]}")
            name, params = _route(self.command, url.path)
            if name != "lfs_upload":
                self.body = b"".join(self._body_chunks())
            self.user = self._authenticate()
            getattr(self, f"h_{name}")(**params)
        except HubError as err:
            self._fail(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-answer
        except Exception:
            log.exception("hub server error on %s %s", self.command, url.path)
            if self._answered:  # too late for an error status: drop the connection instead
                self.close_connection = True
            else:
                self._fail(HubError(500, "Internal server error"))

    # -- request and response plumbing

    def _drop(self) -> None:
        """Read half of the request body (mid-upload), then close the socket without an answer."""
        import socket

        left = int(self.headers.get("Content-Length") or 0) // 2
        while left > 0 and (chunk := self.rfile.read(min(left, 1 << 16))):
            left -= len(chunk)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, Content-Length or chunked, in pieces (an LFS upload may be large)."""
        self._unread = False
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                raise HubError(400, "Request body ended early")
            left -= len(chunk)
            yield chunk

    def _json_body(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HubError(400, f"Invalid JSON body: {exc}") from exc
        if not isinstance(data, dict):
            raise HubError(400, "The JSON body must be an object")
        return data

    def _send(self, status: int, body: bytes, headers: dict | None = None, length: int | None = None) -> None:
        if self._unread:  # we answer before reading the body: the connection can't be reused
            self.close_connection = True
        self._answered = True
        self.send_response(status)
        headers = {"Content-Type": "application/json", **(headers or {})}
        headers["Content-Length"] = str(len(body) if length is None else length)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if self.server.transcript is not None:
            self.server.transcript.append((self.command, urlsplit(self.path).path, status, bytes(body)))

    def _json(self, obj: object, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _fail(self, err: HubError) -> None:
        headers = {"X-Error-Message": err.message.encode("latin-1", "replace").decode("latin-1")[:500]}
        headers.update(err.headers)
        if err.code:
            headers["X-Error-Code"] = err.code
        self._json(err.body, err.status, headers)

    def log_request(self, code: object = "-", size: object = "-") -> None:
        log.info("%s %s %s", self.command, urlsplit(self.path).path, code)  # no query string, no headers

    def log_message(self, format: str, *args: object) -> None:
        log.debug("hub server: " + format, *args)

    @property
    def base(self) -> str:
        return f"http://{self.headers.get('Host') or urlsplit(self.server.url).netloc}"

    def _repo_url(self, kind: str, repo_id: str) -> str:
        return f"{self.base}/{URL_PREFIX[kind]}{repo_id}"

    # -- authentication and permissions

    def _authenticate(self) -> dict | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        user = self.server.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _owns(self, namespace: str) -> bool:
        return self.user is not None and namespace in (self.user["user"], *self.user.get("orgs", ()))

    def _check_write(self, namespace: str, what: str) -> None:
        if self.user is None:
            raise HubError(401, f"You must be authenticated to write to {what}")
        if self.user["role"] != "write":
            raise HubError(403, f"You don't have the rights to write to {what}: this token is read-only")
        if not self._owns(namespace):
            raise HubError(403, f"You don't have the rights to write to {what}")

    def _repo(self, kinds: str, repo_id: str, write: bool = False) -> tuple[str, dict]:
        kind = KINDS[kinds or "models"]
        meta = self.server.store.repo(kind, repo_id) if _valid_repo_id(repo_id) else None
        if meta is None or (meta["private"] and not self._owns(repo_id.split("/")[0])):
            if self.user is None:
                raise HubError(401, "Invalid username or password.", "RepoNotFound")
            raise HubError(404, "Repository not found", "RepoNotFound")
        if write:
            self._check_write(repo_id.split("/")[0], f"{kind} {repo_id}")
        return kind, meta

    def _check_gate(self, kind: str, repo_id: str, meta: dict) -> None:
        if not meta.get("gated") or self._owns(repo_id.split("/")[0]):
            return
        message = (
            f"Access to {kind} {repo_id} is restricted. You must have access to it and be authenticated."
        )
        raise HubError(401 if self.user is None else 403, message, "GatedRepo")

    def _commit(self, kind: str, repo_id: str, rev: str) -> dict:
        commit = self.server.store.resolve(kind, repo_id, rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit
