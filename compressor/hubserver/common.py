"""What every part of the embedded Hub shares: its logger, the error it answers with, the time stamp it
writes and the atomic JSON files it keeps."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger("compressor.hubserver")


class HubError(Exception):
    """An error answered the way the Hub does: a status, a JSON body and `X-Error-*` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers: dict[str, str] = extra.pop("headers", {})
        self.body: dict = {"error": message, **extra}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, obj: dict) -> None:
    """Write atomically: readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
