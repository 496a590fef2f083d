"""The waiting line: one heavy run at a time per app instance (`LINE`); the visitors after it hold a `Ticket`
and see their place ("2nd in line") until their run goes."""

from __future__ import annotations

import os
import threading

from compressor.errors import CompressorError


class Ticket:
    """A visitor's place in the line: their session, their Cancel, and their run once it goes."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.cancel = threading.Event()


class Line:
    """One heavy run at a time per app instance; the visitors after it wait, first come, first served.

    The ticket at the head runs; `place` is 0 for it, 1 for the next ("2nd in line") and so on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._tickets: list[Ticket] = []

    def join(self, key: str) -> Ticket:
        """A new ticket at the end; a CompressorError when this session already has one (one run per page)
        or the line is full (each waiting visitor holds one of the server's worker threads)."""
        with self._cond:
            if any(t.key == key for t in self._tickets):
                raise CompressorError(
                    "this page already has a run going or waiting: cancel it, or wait for it"
                )
            if len(self._tickets) > max_waiting():
                raise CompressorError(
                    f"{len(self._tickets) - 1} runs are waiting already, the most this app takes: try again "
                    "later (or duplicate the Space to run on your own)"
                )
            ticket = Ticket(key)
            self._tickets.append(ticket)
            return ticket

    def place(self, ticket: Ticket) -> int:
        with self._cond:
            return self._tickets.index(ticket)

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def leave(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket in self._tickets:
                self._tickets.remove(ticket)
            self._cond.notify_all()

    def cancel(self, key: str) -> bool:
        """Cancel the session's run (or its place in the line); False when it has none."""
        with self._cond:
            found = [t for t in self._tickets if t.key == key]
            for ticket in found:
                ticket.cancel.set()
            self._cond.notify_all()
            return bool(found)

    def __len__(self) -> int:
        with self._cond:
            return len(self._tickets)


LINE = Line()


def max_waiting() -> int:
    """How many runs may wait behind the one going (COMPRESSOR_MAX_WAITING, default 8)."""
    return int(os.environ.get("COMPRESSOR_MAX_WAITING") or 8)


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def waiting_md(place: int) -> str:
    ahead = "the run ahead of you ends" if place == 1 else f"the {place} runs ahead of you end"
    return (
        f"**Waiting: {ordinal(place + 1)} in line.** One run goes at a time here; yours starts when {ahead}. "
        "Cancel leaves the line."
    )
