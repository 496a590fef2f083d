"""Failures on purpose, for the tests: a server's `faults` switch answers chosen requests with an error
status, drops them mid-upload or slows them down (`--fault` on the command line)."""

from __future__ import annotations

import re
import threading


class Fault:
    """A failure on purpose: the `nth` request (counted from when it is added) that matches `method` and the
    `path` regex gets `kind`, and so do the `times - 1` matching requests after it.

    kind "status": answer `status` (default 503) with a JSON error; "drop": read half of the request body,
    then close the connection without an answer (a connection lost mid-upload); "slow": wait `delay`
    seconds, then answer normally.
    """

    KINDS = ("status", "drop", "slow")

    def __init__(
        self,
        kind: str,
        nth: int = 1,
        times: int = 1,
        status: int = 503,
        delay: float = 1.0,
        method: str | None = None,
        path: str | None = None,
    ):
        if kind not in self.KINDS or nth < 1 or times < 1:
            raise ValueError(
                f"fault kind must be one of {', '.join(self.KINDS)}, with nth >= 1 and times >= 1"
            )
        self.kind, self.nth, self.times, self.status, self.delay = kind, nth, times, status, delay
        self.method, self.path = method, re.compile(path) if path else None
        self.seen = 0
        self.hits_at: list[int] = []  # the matching request numbers it hit

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or bool(self.path.search(path))
        )

    @property
    def spent(self) -> bool:
        return len(self.hits_at) >= self.times

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """'KIND@N[xTIMES][:ARG][,METHOD][,PATH_REGEX]': 503@3, drop@2,PUT, slow@1x5:2.5, 500@1x9,POST,/commit/."""
        m = re.fullmatch(r"(\w+)@(\d+)(?:x(\d+))?(?::([\d.]+))?(?:,([A-Z]+))?(?:,(.+))?", spec)
        if not m:
            raise ValueError(
                f"fault {spec!r} must be KIND@N[xTIMES][:ARG][,METHOD][,PATH], e.g. 503@3 or drop@2,PUT"
            )
        kind, nth, times, arg, method, path = m.groups()
        status = int(kind) if kind.isdigit() else 503
        kwargs = {"delay": float(arg)} if arg and kind == "slow" else {}
        return cls(
            "status" if kind.isdigit() else kind,
            int(nth),
            int(times or 1),
            status,
            method=method,
            path=path,
            **kwargs,
        )


class Faults:
    """The server's fault switch: a list of `Fault`s, each counting the requests it matches."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str | Fault, **kwargs) -> Fault:
        fault = kind if isinstance(kind, Fault) else Fault(kind, **kwargs)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault this request gets, if any (every live matching fault counts the request)."""
        hit = None
        with self._lock:
            for fault in self._faults:
                if fault.spent or not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen >= fault.nth and hit is None:
                    fault.hits_at.append(fault.seen)
                    hit = fault
        return hit
