"""The account and repo endpoints: whoami, repo create/delete/settings, and card validation."""

from __future__ import annotations

import hashlib

from .cards import validate_card
from .common import HubError
from .request import URL_PREFIX, Request
from .store import _valid_repo_id


class AccountEndpoints(Request):
    # -- account and repos

    def h_whoami(self) -> None:
        if self.user is None:
            raise HubError(401, "Invalid username or password.")
        name, role = self.user["user"], self.user["role"]
        orgs = [
            {"type": "org", "name": org, "fullname": org, "roleInOrg": "write"}
            for org in self.user.get("orgs", ())
        ]
        token_info = {"displayName": f"{name}-{role}", "role": role, "createdAt": "2024-01-01T00:00:00.000Z"}
        self._json(
            {
                "type": "user",
                "id": hashlib.sha1(name.encode()).hexdigest()[:24],
                "name": name,
                "fullname": self.user.get("fullname", name),
                "email": None,
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": f"{self.base}/avatars/{name}.svg",
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": token_info},
            }
        )

    def h_create_repo(self) -> None:
        req = self._json_body()
        kind = req.get("type") or "model"
        if kind not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {kind!r}")
        if self.user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace, name = req.get("organization") or self.user["user"], req.get("name") or ""
        self._check_write(namespace, f'the namespace "{namespace}"')
        repo_id = f"{namespace}/{name}"
        if not _valid_repo_id(repo_id) or "--" in name or name.endswith(".git"):
            raise HubError(400, f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.' (max 96)")
        private = req["visibility"] != "public" if "visibility" in req else bool(req.get("private"))
        url = self._repo_url(kind, repo_id)
        if not self.server.store.create(kind, repo_id, self.user["user"], private):
            raise HubError(409, f"You already created this {kind} repo", url=url)
        self._json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def h_delete_repo(self) -> None:
        req = self._json_body()
        if (req.get("type") or "model") not in URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {req.get('type')!r}")
        repo_id = f"{req.get('organization') or (self.user or {}).get('user', '')}/{req.get('name')}"
        kind, _ = self._repo(f"{req.get('type') or 'model'}s", repo_id, write=True)
        self.server.store.delete(kind, repo_id)
        self._json({})

    def h_settings(self, kinds: str, repo: str) -> None:
        kind, meta = self._repo(kinds, repo, write=True)
        req, changes = self._json_body(), {}
        if "gated" in req:
            if req["gated"] not in ("auto", "manual", False):
                raise HubError(400, "gated must be 'auto', 'manual' or false")
            changes["gated"] = req["gated"]
        if "visibility" in req or "private" in req:
            changes["private"] = (
                req["visibility"] != "public" if "visibility" in req else bool(req["private"])
            )
        self.server.store.update(kind, repo, **changes)
        self._json({})

    def h_no_repo(self) -> None:
        raise HubError(401 if self.user is None else 404, "Repository not found", "RepoNotFound")

    def h_validate_yaml(self) -> None:
        req = self._json_body()
        errors, warnings = validate_card(str(req.get("content") or ""), req.get("repoType") or "model")
        status = 400 if errors else 200
        if "text/plain" in self.headers.get("Accept", ""):
            lines = [f"- Error: {e}" for e in errors] + [f"- Warning: {w}" for w in warnings]
            self._send(status, "\n".join(lines).encode(), {"Content-Type": "text/plain; charset=utf-8"})
            return
        self._json(
            {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]},
            status,
        )
