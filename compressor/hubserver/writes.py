"""The writing endpoints: preupload (regular or LFS, ignored or not), the Git LFS batch API with its upload and
verify steps, and NDJSON commits, every operation checked before anything is written."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import tempfile

from .common import HubError
from .request import URL_PREFIX, Request, _flag
from .store import _git_oid, _lfs_pointer

LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub stores anything this large (or binary) in LFS
SHA256 = re.compile(r"[0-9a-f]{64}")


def _matches(path: str, patterns: list[str]) -> bool:
    """gitattributes/gitignore-style match: a pattern without '/' matches the file name at any depth."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in p else name, p.lstrip("/")) for p in patterns)


def _gitattributes_lfs(text: str) -> list[str]:
    return [
        line.split()[0] for line in text.splitlines() if "filter=lfs" in line and not line.startswith("#")
    ]


def _gitignore(text: str) -> list[str]:
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "!"))]


def _check_path(path: object) -> str:
    ok = isinstance(path, str) and path and not path.startswith("/") and ".." not in path.split("/")
    if not ok or path.startswith(".git/") or "//" in path:
        raise HubError(400, f"Invalid path in commit: {path!r}")
    return path


class WriteEndpoints(Request):
    # -- writing

    def h_preupload(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo, write=not _flag(self.query, "create_pr"))
        commit = self._commit(kind, repo, rev)
        files, store = commit["files"], self.server.store
        attributes = files.get(".gitattributes")
        lfs = _gitattributes_lfs(store.blob(attributes["sha256"]).read_text()) if attributes else []
        req = self._json_body()
        ignore_file = files.get(".gitignore")
        ignore_text = req.get("gitIgnore") or (
            store.blob(ignore_file["sha256"]).read_text() if ignore_file else ""
        )
        ignore = _gitignore(ignore_text)
        out = []
        for item in req.get("files", []):
            path, sample = _check_path(item.get("path")), base64.b64decode(item.get("sample") or "")
            is_lfs = int(item.get("size") or 0) >= LFS_MIN_SIZE or b"\0" in sample or _matches(path, lfs)
            old = files.get(path)
            oid = None if old is None else old["sha256"] if old["lfs"] else old["oid"]
            mode = "lfs" if is_lfs else "regular"
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": _matches(path, ignore), "oid": oid})
        self._json({"files": out, "commitOid": commit["id"]})

    def h_lfs_batch(self, repo: str, kinds: str = "models") -> None:
        kind, _ = self._repo(kinds, repo, write=True)
        req = self._json_body()
        if req.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation is supported; download with /resolve")
        verify = f"{self.base}/{URL_PREFIX[kind]}{repo}.git/info/lfs/objects/verify"
        objects = [
            self._batch_object(obj.get("oid"), obj.get("size"), verify) for obj in req.get("objects", [])
        ]
        self._json(
            {"transfer": "basic", "objects": objects},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def _batch_object(self, oid: object, size: object, verify: str) -> dict:
        """Upload instructions for one LFS object, nothing if it is already stored, or its error."""
        if not (isinstance(oid, str) and SHA256.fullmatch(oid) and isinstance(size, int) and size >= 0):
            return {"oid": str(oid), "size": 0, "error": {"code": 422, "message": "Invalid object"}}
        if size > self.server.max_file_size:
            message = f"Object is {size} bytes, over the {self.server.max_file_size}-byte file size limit"
            return {"oid": oid, "size": size, "error": {"code": 422, "message": message}}
        if self.server.store.blob(oid).is_file():
            return {"oid": oid, "size": size}
        href = f"{self.base}/api/lfs-upload/{oid}?ticket={self.server.issue_ticket(oid, size)}"
        actions = {"upload": {"href": href}, "verify": {"href": verify, "header": {}}}
        return {"oid": oid, "size": size, "authenticated": True, "actions": actions}

    def h_lfs_upload(self, oid: str) -> None:
        """The 'storage' side of LFS: a PUT with a one-time ticket instead of credentials, like a signed URL."""
        size = self.server.take_ticket((self.query.get("ticket") or [""])[-1], oid)
        if size is None:
            raise HubError(403, "Invalid or expired upload URL")
        store, digest, written = self.server.store, hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=store.root / "blobs", prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in self._body_chunks():
                    digest.update(chunk)
                    f.write(chunk)
                    written += len(chunk)
            if digest.hexdigest() != oid or written != size:
                raise HubError(400, f"Uploaded content does not match oid {oid} and size {size}")
            os.replace(tmp, store.blob(oid))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def h_lfs_verify(self, repo: str, kinds: str = "models") -> None:
        self._repo(kinds, repo, write=True)
        req = self._json_body()
        oid = str(req.get("oid", ""))
        blob = self.server.store.blob(oid)
        if not SHA256.fullmatch(oid) or not blob.is_file() or blob.stat().st_size != req.get("size"):
            raise HubError(404, f"LFS object {oid} was not uploaded")
        self._json({"success": True})

    def h_commit(self, kinds: str, repo: str, rev: str) -> None:
        create_pr = _flag(self.query, "create_pr")
        kind, _ = self._repo(kinds, repo, write=True)
        header, ops = self._parse_commit()
        store = self.server.store
        with store.lock:
            head = self._commit(kind, repo, rev)
            branch = rev.removeprefix("refs/heads/")
            if store.repo(kind, repo)["refs"].get(branch) != head["id"]:
                raise HubError(400, f"Cannot commit to {rev!r}: it is not a branch")
            parent = header.get("parentCommit")
            if parent and not head["id"].startswith(parent):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = self._apply(dict(head["files"]), ops)
            summary, description = header["summary"], header.get("description") or ""
            sha = store.save_commit(kind, repo, [head["id"]], files, summary, description, self.user["user"])
            target, body = branch, {"success": True, "commitOid": sha, "hookOutput": ""}
            if create_pr:
                number = 1 + sum(n.startswith("refs/pr/") for n in store.repo(kind, repo)["refs"])
                target, body["pullRequestUrl"] = (
                    f"refs/pr/{number}",
                    f"{self._repo_url(kind, repo)}/discussions/{number}",
                )
            store.update(kind, repo, refs={target: sha})
        self._json({**body, "commitUrl": f"{self._repo_url(kind, repo)}/commit/{sha}"})

    def _parse_commit(self) -> tuple[dict, list[tuple[str, str, object]]]:
        """Header and operations of an NDJSON commit, all checked before anything is written."""
        try:
            lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        except ValueError as exc:
            raise HubError(400, f"Invalid NDJSON commit payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header" or not (lines[0].get("value") or {}).get("summary"):
            raise HubError(400, "A commit starts with a header line that has a non-empty summary")
        ops = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = _check_path(
                value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path")
            )
            if key == "file":
                try:
                    data = base64.b64decode(value.get("content", ""), validate=True)
                except ValueError as exc:
                    raise HubError(400, f"Invalid base64 content for {path}") from exc
                if len(data) > self.server.max_file_size:
                    limit = self.server.max_file_size
                    raise HubError(413, f"{path} is {len(data)} bytes, over the {limit}-byte file size limit")
                ops.append(("file", path, data))
            elif key == "lfsFile":
                ops.append(("lfsFile", path, self._lfs_entry(path, value)))
            elif key in ("deletedFile", "deletedFolder"):
                ops.append((key, path, None))
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")
        return lines[0]["value"], ops

    def _lfs_entry(self, path: str, value: dict) -> dict:
        oid = str(value.get("oid", ""))
        blob = self.server.store.blob(oid)
        if value.get("algo", "sha256") != "sha256" or not SHA256.fullmatch(oid) or not blob.is_file():
            raise HubError(
                422, f"LFS object {oid} for {path} was never uploaded: upload it through the batch API"
            )
        size = blob.stat().st_size
        if value.get("size") not in (None, size):
            raise HubError(422, f"LFS object {oid} for {path} has size {size}, not {value['size']}")
        return {"oid": _git_oid(_lfs_pointer(oid, size)), "sha256": oid, "size": size, "lfs": True}

    def _apply(self, files: dict, ops: list) -> dict:
        for key, path, payload in ops:
            if key == "file":
                files[path] = self.server.store.file_entry(payload, lfs=False)
            elif key == "lfsFile":
                files[path] = payload
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                inside = [p for p in files if p.startswith(path + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
        for path in files:
            parts = path.split("/")
            if any("/".join(parts[:i]) in files for i in range(1, len(parts))):
                raise HubError(400, f"{path} would be inside a file that has the same name as its folder")
        return files
