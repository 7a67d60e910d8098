"""How the GitHub adapter authenticates: a fixed token, or as a GitHub App's installation.

App auth signs a short RS256 JWT (issued 60 s in the past, valid 9 minutes, issuer the app id), finds the
repository's installation (``GET /repos/{owner}/{repo}/installation``) and mints an installation token
(``POST /app/installations/{id}/access_tokens``). Tokens are cached per installation and minted again five
minutes before they expire.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from facteur.errors import ConfigError, ForgeError
from facteur.forge.github_http import GitHubHttp

JWT_BACKDATE = timedelta(seconds=60)
JWT_LIFETIME = timedelta(minutes=9)
REFRESH_BEFORE_EXPIRY = timedelta(minutes=5)


class GitHubAuth(Protocol):
    async def authorization(self, repo: str) -> str | None:
        """The ``Authorization`` header value for a request about ``repo``."""
        ...


class TokenAuth:
    def __init__(self, token: str | None) -> None:
        self._header = f"Bearer {token}" if token else None

    async def authorization(self, repo: str) -> str | None:
        return self._header


@dataclass(frozen=True, slots=True)
class _InstallationToken:
    token: str
    expires_at: datetime


def load_private_key(value: str) -> RSAPrivateKey:
    """An RSA key from inline PEM or ``@path``; ConfigError naming ``github.private_key`` otherwise."""
    text = value.strip()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"github.private_key: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("github.private_key: not a PEM private key without a passphrase") from None
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError("github.private_key: GitHub App keys are RSA keys")
    return key


class AppAuth:
    def __init__(self, http: GitHubHttp, *, app_id: int, private_key: RSAPrivateKey) -> None:
        self._http = http
        self._app_id = app_id
        self._key = private_key
        self._installations: dict[str, int] = {}
        self._tokens: dict[int, _InstallationToken] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def app_jwt(self) -> str:
        now = self._http.clock.now()
        claims = {
            "iat": int((now - JWT_BACKDATE).timestamp()),
            "exp": int((now + JWT_LIFETIME).timestamp()),
            "iss": str(self._app_id),
        }
        token = jwt.encode(claims, self._key, algorithm="RS256")
        self._http.add_secret(token)
        return token

    async def authorization(self, repo: str) -> str | None:
        installation = await self._installation(repo)
        lock = self._locks.setdefault(installation, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation)
            if cached is None or self._http.clock.now() >= cached.expires_at - REFRESH_BEFORE_EXPIRY:
                cached = await self._mint(installation)
                self._tokens[installation] = cached
        return f"Bearer {cached.token}"

    def forget(self, repo: str) -> None:
        """Drop the cached token of ``repo``'s installation (after GitHub answered 401)."""
        installation = self._installations.pop(repo, None)
        if installation is not None:
            self._tokens.pop(installation, None)

    async def _installation(self, repo: str) -> int:
        if repo not in self._installations:
            owner, name = repo.split("/", 1)
            response = await self._http.request(
                "GET",
                f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}/installation",
                what=f"GitHub App installation for {repo}",
                authorization=f"Bearer {self.app_jwt()}",
            )
            body = response.json()
            installation = body.get("id") if isinstance(body, dict) else None
            if not isinstance(installation, int):
                raise ForgeError(f"GitHub's installation for {repo} has no id")
            self._installations[repo] = installation
        return self._installations[repo]

    async def _mint(self, installation: int) -> _InstallationToken:
        response = await self._http.request(
            "POST",
            f"/app/installations/{installation}/access_tokens",
            what=f"an access token for installation {installation}",
            authorization=f"Bearer {self.app_jwt()}",
        )
        body = response.json()
        token = body.get("token") if isinstance(body, dict) else None
        expires = body.get("expires_at") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ForgeError(f"GitHub's access token for installation {installation} lacks token")
        self._http.add_secret(token)
        try:
            expires_at = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        except ValueError:
            raise ForgeError(
                f"GitHub's access token for installation {installation} has no valid expires_at"
            ) from None
        return _InstallationToken(token, expires_at)
