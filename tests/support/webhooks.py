"""Signed GitHub deliveries and an app wired to a fake GitHub, for webhook tests."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from facteur.forge.github import GitHubForge
from facteur.intake.github_delivery import signature_of
from facteur.settings import Settings, load_settings
from facteur.store.port import OutboxEntry
from tests.support.app import Running, running_app
from tests.support.github_api import FakeGitHub

SECRET = "it's-a-secret-to-everybody"


def webhook_settings(database_url: str, **env: str) -> Settings:
    return load_settings(
        environ={
            "FACTEUR_DATABASE__URL": database_url,
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_BUS__OUTBOX__RELAY_ENABLED": "false",
            "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_TOKEN": "test-token",
            "FACTEUR_GITHUB__API_URL": "http://github.test",
            "CODEX_TRIGGER_LOGINS": "octocat,codertocat",
            **env,
        }
    )


def signed(
    event: str, payload: Mapping[str, Any] | bytes, *, delivery: str | None = None
) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "4242",
        "Content-Type": "application/json",
        "X-Hub-Signature-256": signature_of(SECRET, body),
    }
    return body, headers


@dataclass
class Hooked:
    running: Running
    github: FakeGitHub

    async def post(
        self, event: str, payload: Mapping[str, Any] | bytes, *, delivery: str | None = None
    ) -> httpx.Response:
        body, headers = signed(event, payload, delivery=delivery)
        return await self.running.client.post("/webhooks/github", content=body, headers=headers)

    async def outbox(self) -> list[OutboxEntry]:
        return await self.running.runtime.store.pending_outbox(10_000)

    async def topics(self) -> list[str]:
        return [entry.message.topic for entry in await self.outbox()]


@asynccontextmanager
async def hooked_app(settings: Settings, github: FakeGitHub | None = None) -> AsyncIterator[Hooked]:
    fake = github or FakeGitHub()
    forge = GitHubForge(settings.github, transport=httpx.MockTransport(fake.handle))
    async with running_app(settings, forge=forge) as running:
        yield Hooked(running, fake)


def issue_payload(
    repo: str, number: int, *, author: str = "octocat", body: str = "Make it faster", action: str = "opened"
) -> dict[str, Any]:
    owner = repo.split("/", maxsplit=1)[0]
    return {
        "action": action,
        "issue": {
            "number": number,
            "title": "Faster widgets",
            "body": body,
            "html_url": f"https://github.com/{repo}/issues/{number}",
            "repository_url": f"https://api.github.com/repos/{repo}",
            "user": {"login": author, "type": "User"},
        },
        "repository": {"full_name": repo, "default_branch": "main", "owner": {"login": owner}},
        "sender": {"login": author, "type": "User"},
    }


def comment_payload(
    repo: str,
    number: int,
    body: str,
    *,
    author: str = "octocat",
    association: str = "OWNER",
    comment_id: int = 900,
    updated_at: str = "2026-11-21T12:00:00Z",
    pull: bool = False,
    action: str = "created",
    author_type: str = "User",
) -> dict[str, Any]:
    payload = issue_payload(repo, number, author=author, action=action)
    if pull:
        payload["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{repo}/pulls/{number}"}
    payload["comment"] = {
        "id": comment_id,
        "body": body,
        "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment_id}",
        "user": {"login": author, "type": author_type},
        "author_association": association,
        "created_at": "2026-11-21T12:00:00Z",
        "updated_at": updated_at,
    }
    payload["sender"] = {"login": author, "type": author_type}
    return payload
