"""The forge a stage run publishes to, and where its git remote is (``forge.kind``).

``github``: the GitHub forge with ``github.token`` (in a pod, the ``GITHUB_TOKEN`` or ``GH_TOKEN`` the
WorkflowTemplate mounts from its secret when the setting is unset); git talks to
``https://<host>/<owner>/<name>.git`` with the token in an HTTP header, never in the URL. ``local``: the
local forge under ``forge.local.root``; the remote is its bare repository. ``auto``: GitHub when a token or
an App is configured, else the local forge.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from facteur.errors import ConfigError
from facteur.forge.port import Forge
from facteur.settings import Settings
from facteur.stages.git import GitAuth

_TOKEN_ENV = ("GITHUB_TOKEN", "GH_TOKEN")


@dataclass(frozen=True, slots=True)
class StageForge:
    forge: Forge
    kind: str
    remote: str
    #: the web host git talks to (GitHub); empty for the local forge
    host: str = ""


def open_forge(
    settings: Settings,
    repository: str,
    environ: Mapping[str, str] | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> StageForge:
    environ = os.environ if environ is None else environ
    github = settings.github
    token = github.token.get_secret_value() if github.token is not None else None
    token = token or next((environ[name] for name in _TOKEN_ENV if environ.get(name)), None)
    kind = settings.forge.kind
    if kind == "auto":
        kind = "github" if token or github.app_id is not None else "local"
    if kind == "local":
        from facteur.forge.local import LocalForge

        local = LocalForge.from_settings(settings.forge.local)
        return StageForge(local, "local", str(local.repository_path(repository)))
    from facteur.forge.github import GitHubForge

    host = _web_host(github.api_url)
    remote = f"https://{host}/{repository}.git"
    app = github.app_id is not None and github.private_key is not None
    if not app and token is None:
        raise ConfigError(
            "forge.kind is github but neither a token nor a GitHub App is configured: set github.token "
            "(FACTEUR_GITHUB__TOKEN or GITHUB_TOKEN), or github.app_id and github.private_key"
        )
    if not app:
        github = github.model_copy(update={"token": SecretStr(token or "")})
    return StageForge(GitHubForge(github, transport=transport), "github", remote, host=host)


async def git_auth(stage_forge: StageForge, repository: str) -> GitAuth | None:
    """How git authenticates to the forge now: none for the local forge; else the GitHub forge's token (the
    configured one, or a GitHub App installation token minted again near its expiry: asked before each
    push)."""
    from facteur.forge.github import GitHubForge

    forge = stage_forge.forge
    if not isinstance(forge, GitHubForge):
        return None
    token = await forge.git_token(repository)
    return GitAuth(token=token, host=stage_forge.host) if token else None


def _web_host(api_url: str) -> str:
    """``api.github.com`` → ``github.com``; GitHub Enterprise ``ghe.example.com/api/v3`` → itself."""
    host = urlsplit(api_url).netloc or "api.github.com"
    return host.removeprefix("api.") if host == "api.github.com" else host
