"""The embedded Hub's storage: repos, commits and content-addressed blobs in one folder (see the package's
docstring for the layout), the repo id rule, and the file/folder entries the tree and paths-info listings
answer for a commit's files."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .common import HubError, _now, _read_json, _write_json

LFS_PATTERNS = (  # noqa: SIM905 (word lists read better as text)
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
    "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
    "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
SHORT_SHA = re.compile(r"[0-9a-f]{7,40}")


def _git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _valid_repo_id(repo_id: str) -> bool:
    """namespace/name, each a plain name: never '..' or a path (ids come from URLs and land on disk)."""
    parts = repo_id.split("/")
    return len(parts) == 2 and all(REPO_NAME.fullmatch(p) and ".." not in p for p in parts)


class Store:
    """Repos, commits and content-addressed blobs in one folder; one lock serialises every write."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def repo_dir(self, kind: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{kind}s" / repo_id

    def repo(self, kind: str, repo_id: str) -> dict | None:
        return _read_json(self.repo_dir(kind, repo_id) / "repo.json")

    def commit(self, kind: str, repo_id: str, sha: str) -> dict | None:
        return _read_json(self.repo_dir(kind, repo_id) / "commits" / f"{sha}.json")

    def resolve(self, kind: str, repo_id: str, rev: str) -> dict | None:
        """The commit a branch, a PR ref or a (short) commit sha points at."""
        refs = self.repo(kind, repo_id)["refs"]
        sha = refs.get(rev.removeprefix("refs/heads/"))
        if sha is None and SHORT_SHA.fullmatch(rev):
            found = list((self.repo_dir(kind, repo_id) / "commits").glob(f"{rev}*.json"))
            sha = found[0].stem if len(found) == 1 else None
        return self.commit(kind, repo_id, sha) if sha else None

    def history(self, kind: str, repo_id: str, commit: dict) -> Iterator[dict]:
        while commit is not None:
            yield commit
            parents = commit["parents"]
            commit = self.commit(kind, repo_id, parents[0]) if parents else None

    def blob(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.blob(sha256).is_file():
            fd, tmp = tempfile.mkstemp(dir=self.root / "blobs", prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.blob(sha256))
        return sha256

    def file_entry(self, data: bytes, lfs: bool) -> dict:
        sha256 = self.put_blob(data)
        oid = _git_oid(_lfs_pointer(sha256, len(data)) if lfs else data)
        return {"oid": oid, "sha256": sha256, "size": len(data), "lfs": lfs}

    def create(self, kind: str, repo_id: str, owner: str, private: bool) -> bool:
        """Create a repo whose first commit holds the Hub's default .gitattributes; False if it exists."""
        with self.lock:
            if self.repo(kind, repo_id) is not None:
                return False
            files = {".gitattributes": self.file_entry(GITATTRIBUTES.encode(), lfs=False)}
            sha = self.save_commit(kind, repo_id, [], files, "initial commit", "", owner)
            meta = {
                "owner": owner,
                "private": private,
                "gated": False,
                "createdAt": _now(),
                "refs": {"main": sha},
            }
            _write_json(self.repo_dir(kind, repo_id) / "repo.json", meta)
            return True

    def delete(self, kind: str, repo_id: str) -> None:
        with self.lock:
            trash = self.root / "trash" / f"{repo_id.replace('/', '--')}-{time.time_ns()}"
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.repo_dir(kind, repo_id), trash)  # atomic: the repo is gone at once
            shutil.rmtree(trash, ignore_errors=True)

    def save_commit(
        self, kind: str, repo_id: str, parents: list, files: dict, title: str, message: str, author: str
    ):
        body = {"parents": parents, "files": files, "title": title, "message": message, "author": author}
        body["date"] = _now()
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        _write_json(self.repo_dir(kind, repo_id) / "commits" / f"{sha}.json", {"id": sha, **body})
        return sha

    def update(self, kind: str, repo_id: str, refs: dict | None = None, **settings) -> None:
        with self.lock:
            meta = self.repo(kind, repo_id)
            meta["refs"].update(refs or {})
            meta.update(settings)
            _write_json(self.repo_dir(kind, repo_id) / "repo.json", meta)


# --- listings ---------------------------------------------------------------------------------------------


def _file_json(path: str, entry: dict) -> dict:
    out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        pointer_size = len(_lfs_pointer(entry["sha256"], entry["size"]))
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": pointer_size}
    return out


def _dir_json(path: str, files: dict) -> dict:
    inside = sorted((p, f["oid"]) for p, f in files.items() if p.startswith(path + "/"))
    return {
        "type": "directory",
        "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
        "size": 0,
        "path": path,
    }


def _path_json(path: str, files: dict) -> dict | None:
    if path in files:
        return _file_json(path, files[path])
    if any(p.startswith(path + "/") for p in files):
        return _dir_json(path, files)
    return None


def _tree(files: dict, folder: str, recursive: bool) -> list[dict]:
    """Entries under `folder` ('' for the root): direct children, or everything when recursive."""
    root = f"{folder}/" if folder else ""
    inside = sorted(p for p in files if p.startswith(root))
    if folder and not inside:
        raise HubError(404, f"Entry not found: {folder}", "EntryNotFound")
    dirs, out = set(), []
    for path in inside:
        parts = path[len(root) :].split("/")
        depth = len(parts) - 1 if recursive else min(len(parts) - 1, 1)
        dirs.update(root + "/".join(parts[: i + 1]) for i in range(depth))
        if recursive or len(parts) == 1:
            out.append(_file_json(path, files[path]))
    return [_dir_json(d, files) for d in sorted(dirs)] + out
