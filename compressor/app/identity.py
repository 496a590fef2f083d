"""Who the visitor is and which token acts for them: the login button (a Space's OAuth or Gradio's local
stand-in), the token box, the token a Hugging Face Job runs with, the page's session, and the output repo
suggested in the signed-in user's namespace. A token is never logged, shown or written to a file."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from compressor.app.form import _text
from compressor.app.messages import _escape
from compressor.errors import CompressorError


def oauth_enabled() -> bool:
    """True in a Space with `hf_oauth: true` (SYSTEM=spaces, as Gradio checks, and the OAuth client's id)."""
    return os.environ.get("SYSTEM") == "spaces" and bool(os.environ.get("OAUTH_CLIENT_ID"))


def login_available() -> bool:
    """A login button in a Space with OAuth, and outside a Space where Gradio's local stand-in can sign in
    (it signs in as the machine's saved Hub user, so it needs a saved token or HF_TOKEN)."""
    if oauth_enabled():
        return True
    from huggingface_hub import get_token

    return os.environ.get("SYSTEM") != "spaces" and get_token() is not None


MOCK_OAUTH_TOKEN = "mock-oauth-token-for-local-dev"  # Gradio's local stand-in: not a Hub token


def resolve_token(text: str | None, oauth_token: gr.OAuthToken | None) -> str | None:
    """The password box wins; else the Space login's token; else None (huggingface_hub's own lookup, which
    is also the user the local login stand-in shows)."""
    if _text(text):
        return _text(text)
    if oauth_token is None or oauth_token.token == MOCK_OAUTH_TOKEN:
        return None
    return oauth_token.token


def jobs_token(
    text: str | None, oauth_token: gr.OAuthToken | None, profile: gr.OAuthProfile | None
) -> str | None:
    """The visitor's own token for a Job: the token box, else the Space login's. Outside a Space, Gradio's
    local login stand-in signs in as the machine's saved Hub user, whose token (None: huggingface_hub's
    lookup) is then the signed-in user's. Never the server's token for a visitor who did not sign in."""
    token = resolve_token(text, oauth_token)
    if token is None and (profile is None or oauth_enabled()):
        raise CompressorError(
            "a Hugging Face Job runs with your own token: sign in with the button, or paste a write token in "
            "the Hub token box"
        )
    return token


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or uuid.uuid4().hex


def suggest_repo(user: str | None, source: str | None, method: str | None, ratio: Any) -> str | None:
    """`USER/NAME-METHODPCT`, e.g. alice/tiny-llava-width30, from the model's name and the pruning."""
    if not user or not _text(source):
        return None
    name = re.sub(r"[^\w.-]+", "-", Path(source.strip().rstrip("/")).name).strip("-.") or "model"
    try:
        pct = f"{round(float(ratio) * 100)}"
    except (TypeError, ValueError):
        pct = ""
    return f"{user}/{name}-{method or 'pruned'}{pct}"[:96]


def on_load(
    source: str, method: str, ratio: Any, repo_id: str, profile: gr.OAuthProfile | None = None
) -> tuple[Any, Any, dict[str, Any]]:
    """(repo box, sign-in note, auto state): signed in, the output repo defaults to the user's namespace."""
    user = profile.username if profile is not None else None
    if user is None:
        return gr.update(), "", {"user": None, "repo": None}
    suggestion = suggest_repo(user, source, method, ratio)
    current = _text(repo_id)
    take = suggestion and (current is None or current.split("/")[0] != user)
    return (
        gr.update(value=suggestion) if take else gr.update(),
        f"Signed in as **{_escape(user)}**: the output repo defaults to your namespace.",
        {"user": user, "repo": suggestion if take else None},
    )


def follow_repo(auto: dict[str, Any] | None, source: str, method: str, ratio: Any, repo_id: str):
    """The suggested repo follows the model and the pruning, until the visitor types their own."""
    auto = dict(auto or {})
    if not auto.get("user") or _text(repo_id) != auto.get("repo"):
        return gr.update(), auto
    suggestion = suggest_repo(auto["user"], source, method, ratio)
    auto["repo"] = suggestion
    return gr.update(value=suggestion), auto
