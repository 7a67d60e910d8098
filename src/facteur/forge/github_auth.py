"""How the GitHub adapter authenticates: a fixed token, or as a GitHub App's installation.

App auth signs a short RS256 JWT (issued 60 s in the past, valid 9 minutes, issuer the app id), finds the
repository's installation (``GET /repos/{owner}/{repo}/installation``) and mints an installation token
(``POST /app/installations/{id}/access_tokens``). The JWT is reused until a minute before it expires; the
installation id is looked up once per repository; tokens are cached per installation and minted again five
minutes before they expire, or at once after GitHub refused one (``forget``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from facteur.clock import parse_timestamp
from facteur.errors import ConfigError, ForgeError
from facteur.forge import github_payloads as payloads
from facteur.forge.github_http import GitHubHttp, decode, repo_path

JWT_BACKDATE = timedelta(seconds=60)
JWT_LIFETIME = timedelta(minutes=9)
#: a cached app JWT is signed again this long before it expires
JWT_REUSE_MARGIN = timedelta(minutes=1)
REFRESH_BEFORE_EXPIRY = timedelta(minutes=5)


class GitHubAuth(Protocol):
    async def authorization(self, repo: str) -> str | None:
        """The ``Authorization`` header value for a request about ``repo``."""
        ...

    def forget(self, repo: str) -> None:
        """Drop whatever credential for ``repo`` GitHub just refused with a 401, so the next one is fresh."""
        ...


class TokenAuth:
    def __init__(self, token: str | None) -> None:
        self._header = f"Bearer {token}" if token else None

    async def authorization(self, repo: str) -> str | None:
        return self._header

    def forget(self, repo: str) -> None:
        """A fixed token cannot be refreshed."""


@dataclass(frozen=True, slots=True)
class _AppJwt:
    token: str
    expires_at: datetime


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
        self._jwt: _AppJwt | None = None
        self._installations: dict[str, int] = {}
        self._installation_locks: dict[str, asyncio.Lock] = {}
        self._tokens: dict[int, _InstallationToken] = {}
        self._token_locks: dict[int, asyncio.Lock] = {}

    def app_jwt(self) -> str:
        """The app's JWT, signed again only once the cached one is within a minute of expiring."""
        now = self._http.clock.now()
        if self._jwt is None or now >= self._jwt.expires_at - JWT_REUSE_MARGIN:
            expires_at = now + JWT_LIFETIME
            claims = {
                "iat": int((now - JWT_BACKDATE).timestamp()),
                "exp": int(expires_at.timestamp()),
                "iss": str(self._app_id),
            }
            token = jwt.encode(claims, self._key, algorithm="RS256")
            self._http.add_secret(token)
            self._jwt = _AppJwt(token, expires_at)
        return self._jwt.token

    async def authorization(self, repo: str) -> str | None:
        installation = await self._installation(repo)
        async with self._token_locks.setdefault(installation, asyncio.Lock()):
            cached = self._tokens.get(installation)
            if cached is None or self._http.clock.now() >= cached.expires_at - REFRESH_BEFORE_EXPIRY:
                cached = await self._mint(installation)
                self._tokens[installation] = cached
        return f"Bearer {cached.token}"

    def forget(self, repo: str) -> None:
        """Drop the cached token of ``repo``'s installation (after GitHub answered 401); the installation id
        is kept."""
        installation = self._installations.get(repo)
        if installation is not None:
            self._tokens.pop(installation, None)

    async def _installation(self, repo: str) -> int:
        """``repo``'s installation id, looked up once however many calls ask for it at the same time."""
        installation = self._installations.get(repo)
        if installation is not None:
            return installation
        async with self._installation_locks.setdefault(repo, asyncio.Lock()):
            installation = self._installations.get(repo)
            if installation is None:
                what = f"GitHub App installation for {repo}"
                response = await self._http.request(
                    "GET", f"{repo_path(repo)}/installation", what=what, authorization=self._bearer_jwt()
                )
                body = payloads.as_object(decode(response, what), what)
                installation = payloads.required(body, "id", int, f"installation for {repo}")
                self._installations[repo] = installation
        return installation

    async def _mint(self, installation: int) -> _InstallationToken:
        what = f"an access token for installation {installation}"
        response = await self._http.request(
            "POST",
            f"/app/installations/{installation}/access_tokens",
            what=what,
            authorization=self._bearer_jwt(),
        )
        body = payloads.as_object(decode(response, what), what)
        token = payloads.required(body, "token", str, f"access token for installation {installation}")
        if not token:
            raise ForgeError(f"GitHub's access token for installation {installation} lacks token")
        self._http.add_secret(token)
        expires_at = parse_timestamp(body.get("expires_at"))
        if expires_at is None:
            raise ForgeError(f"GitHub's access token for installation {installation} has no valid expires_at")
        return _InstallationToken(token, expires_at)

    def _bearer_jwt(self) -> str:
        return f"Bearer {self.app_jwt()}"
