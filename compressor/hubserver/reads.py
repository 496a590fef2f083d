"""The reading endpoints: repo info, tree and paths-info listings, refs, commits and `/resolve` downloads
(with byte ranges)."""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from .cards import _card_data
from .common import HubError
from .request import Request, _flag
from .store import Store, _lfs_pointer, _path_json, _tree


def _byte_range(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end inclusive, status) for a single `Range: bytes=…` header; 416 when unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
    if match is None or match.groups() == ("", ""):
        return 0, size - 1, 200
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    return start, end, 206


def _config_summary(store: Store, config: dict | None) -> dict | None:
    if config is None or config["size"] > 10_000_000:
        return None
    try:
        data = json.loads(store.blob(config["sha256"]).read_bytes())
    except ValueError:
        return None
    return (
        {k: data[k] for k in ("architectures", "model_type") if k in data} if isinstance(data, dict) else None
    )


class ReadEndpoints(Request):
    # -- reading

    def h_info(self, kinds: str, repo: str, rev: str = "main") -> None:
        kind, meta = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        files, store = commit["files"], self.server.store
        blobs = _flag(self.query, "blobs")
        info = {
            "_id": hashlib.sha1(f"{kind}/{repo}".encode()).hexdigest()[:24],
            "id": repo,
            "author": repo.split("/")[0],
            "sha": commit["id"],
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": meta.get("gated", False),
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": [self._sibling(p, files[p], blobs) for p in sorted(files)],
            "usedStorage": sum(f["size"] for f in files.values()),
        }
        card = _card_data(store, files.get("README.md"))
        if card is not None:
            tags = card.get("tags") or []
            info["cardData"], info["tags"] = card, [tags] if isinstance(tags, str) else tags
            info.update(
                {k: card[k] for k in ("library_name", "pipeline_tag") if isinstance(card.get(k), str)}
            )
        if kind == "model" and (config := _config_summary(store, files.get("config.json"))) is not None:
            info["config"] = config
        expand = self.query.get("expand") or self.query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
        self._json(info)

    @staticmethod
    def _sibling(path: str, entry: dict, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": path}
        out = {"rfilename": path, "size": entry["size"], "blobId": entry["oid"]}
        if entry["lfs"]:
            pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
            out["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": pointer_size}
        return out

    def h_tree(self, kinds: str, repo: str, rev: str, path: str = "") -> None:
        kind, _ = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        expand = _flag(self.query, "expand")
        entries = _tree(commit["files"], path.strip("/"), _flag(self.query, "recursive"))
        cursor = (self.query.get("cursor") or ["0"])[-1]
        if not cursor.isdigit():
            raise HubError(400, f"Invalid cursor: {cursor!r}")
        start = int(cursor)
        size = 50 if expand else self.server.page_size
        page = entries[start : start + size]
        if expand:
            page = [{**e, "lastCommit": self._last_commit(kind, repo, commit, e["path"])} for e in page]
        headers = {}
        if start + size < len(entries):
            query = {k: v[-1] for k, v in self.query.items()} | {"cursor": str(start + size)}
            headers["Link"] = f'<{self.base}{urlsplit(self.path).path}?{urlencode(query)}>; rel="next"'
        self._json(page, headers=headers)

    def _last_commit(self, kind: str, repo: str, commit: dict, path: str) -> dict:
        """The latest commit that changed `path` (a file or a folder)."""
        history = self.server.store.history(kind, repo, commit)
        newest, current = None, None
        for past in history:
            entry = _path_json(path, past["files"])
            oid = entry and entry["oid"]
            if newest is not None and oid != current:
                break
            newest, current = past, oid
        return {"id": newest["id"], "title": newest["title"], "date": newest["date"]}

    def h_paths_info(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        form = parse_qs(self.body.decode())
        if not form and self.body:
            form = {"paths": self._json_body().get("paths", [])}
        found = (_path_json(p.strip("/"), commit["files"]) for p in form.get("paths", []))
        self._json([entry for entry in found if entry is not None])

    def h_refs(self, kinds: str, repo: str) -> None:
        _, meta = self._repo(kinds, repo)
        refs = meta["refs"]
        branches = [
            {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs.items() if "/" not in n
        ]
        prs = [{"name": n, "ref": n, "targetCommit": s} for n, s in refs.items() if n.startswith("refs/pr/")]
        self._json({"branches": branches, "converts": [], "tags": [], "pullRequests": prs})

    def h_commits(self, kinds: str, repo: str, rev: str) -> None:
        kind, _ = self._repo(kinds, repo)
        history = self.server.store.history(kind, repo, self._commit(kind, repo, rev))
        keys = ("id", "title", "message", "date")
        self._json(
            [{**{k: c[k] for k in keys}, "authors": [{"user": c["author"], "avatar": None}]} for c in history]
        )

    def h_resolve(self, repo: str, rev: str, path: str, kinds: str = "models") -> None:
        kind, meta = self._repo(kinds, repo)
        commit = self._commit(kind, repo, rev)
        headers = {"X-Repo-Commit": commit["id"]}
        self._check_gate(kind, repo, meta)
        entry = commit["files"].get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers=headers)
        size, etag = entry["size"], f'"{entry["sha256"] if entry["lfs"] else entry["oid"]}"'
        headers |= {"ETag": etag, "Accept-Ranges": "bytes"}
        headers["Content-Type"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": etag, "X-Linked-Size": str(size)}
        start, end, status = _byte_range(self.headers.get("Range"), size)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._send(status, b"", headers, length=end - start + 1)
        if self.command == "GET":
            self._stream(self.server.store.blob(entry["sha256"]), start, end - start + 1)

    def _stream(self, blob: Path, start: int, length: int) -> None:
        with blob.open("rb") as f:
            f.seek(start)
            while length > 0 and (chunk := f.read(min(length, 1 << 20))):
                self.wfile.write(chunk)
                length -= len(chunk)
