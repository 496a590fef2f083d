"""The Hub token from the command line: --token, --token-file (a file or standard input), HF_TOKEN, else the
cached login. Shared by every subcommand that reads or writes the Hub (compressor.cli, `compressor eval`,
`compressor study`); the value is never printed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from compressor.errors import CompressorError

TOKEN_HELP = (
    "Hub token. Unsafe on a shared machine: a --token value is visible to every user in the process "
    "list (ps). Prefer --token-file, HF_TOKEN or `hf auth login`. Never logged or saved"
)
TOKEN_FILE_HELP = (
    "read the Hub token from FILE, or from standard input with '-' (e.g. `pass hf | compressor … "
    "--token-file -`): the safe way, it never shows in the process list. Default: HF_TOKEN, then the cached login"
)


def add_token_options(p) -> None:
    """--token and --token-file on a parser or an argument group (one of them at a time)."""
    p.add_argument("--token", help=TOKEN_HELP)
    p.add_argument("--token-file", metavar="FILE", help=TOKEN_FILE_HELP)


def token_from(args: argparse.Namespace) -> str | None:
    """The token of --token-file (a file, or '-' for stdin), else --token, else HF_TOKEN, else None (the
    cached login). The value is never printed: errors name the file, not its content."""
    path, given = getattr(args, "token_file", None), getattr(args, "token", None)
    if path is not None and given is not None:
        raise CompressorError("give the token once: --token-file or --token, not both")
    if path is not None:
        if path == "-":
            text, where = sys.stdin.readline(), "standard input"
        else:
            try:
                text, where = Path(path).read_text(), repr(path)
            except OSError as err:
                raise CompressorError(
                    f"--token-file {path!r} cannot be read ({err.strerror}); give a file holding the token, "
                    "or '-' to read it from standard input"
                ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 1 or any(c.isspace() for c in lines[0]):
            raise CompressorError(
                f"--token-file: {where} must hold the token alone on one line (it holds {len(lines)} non-empty "
                "lines); write only the token there"
            )
        return lines[0]
    return given or os.environ.get("HF_TOKEN") or None
