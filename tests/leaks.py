"""Searching for a secret where it could leak, and the positive controls that prove each search can see.

`holding` is the one search every "the token is not there" check uses; each such check has a control that runs
the same search on the same place with a copy planted (or a value known to be there), so a search that looks
in the wrong place, at the wrong stream or for the wrong string fails instead of passing."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


def holding(secret: str, places: dict[str, str | bytes]) -> list[str]:
    """The names of `places` (captured output, messages, file contents, /proc files) that hold `secret`."""
    needle = secret.encode()
    return [
        name
        for name, text in places.items()
        if needle in (text if isinstance(text, bytes) else text.encode())
    ]


def check_found_where_the_cli_writes(secret: str, read_stderr: Callable[[], str]) -> None:
    """Positive control: a copy of `secret` planted in each place the CLI writes to, one at a time (a record
    of the compressor's logger; a line on stderr), is found by `holding` in what `read_stderr()` captures next."""
    logging.getLogger("compressor.hub").warning("planted copy: %s", secret)
    assert holding(secret, {"log record": read_stderr()}) == ["log record"], "a log record is not captured"
    print(f"planted copy: {secret}", file=sys.stderr, flush=True)
    assert holding(secret, {"stderr line": read_stderr()}) == ["stderr line"], "stderr is not captured"
