"""``facteur discord-channel``: open a Discord channel for a stage run, post an intro, then stream the
run's output (stdin) into it, as the seeds' ``discord-channel`` script does.

The channel is named from the repository, issue, stage, start time and run id
(:func:`facteur.domain.discord_channels.channel_name`) and goes in the configured category
(``DISCORD_CATEGORY_ID``), else in a category named ``Codex Channel - …`` with room, else in a new one.
Credentials are ``discord.bot_token`` (``DISCORD_BOT_TOKEN``) and ``discord.guild_id``
(``DISCORD_GUILD_ID``); the API is ``discord.api_url``. A 429 is waited out (``retry_after``) and retried;
a 5xx or a transport error is retried with back-off, five attempts in all.

Exit codes: 0 done, 2 missing credentials or bad settings, 1 a bad ``--timestamp`` or Discord failed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from facteur import __version__
from facteur.cli.common import ConfigOption, fail, settings_or_exit
from facteur.domain import discord_channels as rules

if TYPE_CHECKING:
    import httpx

#: the HTTP transport to Discord's API (``None``: the network); tests set an ``httpx.MockTransport``
transport: httpx.BaseTransport | None = None
#: how waits (rate limits, back-off) are slept; tests replace it so that they are instant
sleep: Callable[[float], None] = time.sleep

CATEGORY_ENV = "DISCORD_CATEGORY_ID"
DRY_RUN_GUILD = "dry-run-guild"
TIMEOUT_SECONDS = 10.0
#: attempts of one request when Discord answers 5xx or cannot be reached
MAX_ATTEMPTS = 5
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
#: the wait when a 429 names none
DEFAULT_RETRY_AFTER = 1.0


class DiscordFailure(Exception):
    """Discord refused a request, or kept failing."""


def discord_channel(
    *,
    stage: Annotated[
        str | None, typer.Option("--stage", help="The stage (planning, implementation, review).")
    ] = None,
    repo: Annotated[str | None, typer.Option("--repo", help="owner/repo.", show_default=False)] = None,
    issue: Annotated[
        int | None, typer.Option("--issue", min=1, help="The issue's number.", show_default=False)
    ] = None,
    url: Annotated[
        str | None,
        typer.Option("--url", help="The issue's (or, for review, pull request's) URL.", show_default=False),
    ] = None,
    title: Annotated[
        str | None, typer.Option("--title", help="The issue's title.", show_default=False)
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The run's id (else 4 random characters).", show_default=False),
    ] = None,
    timestamp: Annotated[
        str | None,
        typer.Option("--timestamp", help="When the run started, ISO 8601 (else now).", show_default=False),
    ] = None,
    summary: Annotated[
        str | None, typer.Option("--summary", help="A summary for the intro message.", show_default=False)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the channel, intro and messages; call no API.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Create a channel for a run, post an intro, and stream stdin into it as messages."""
    settings = settings_or_exit(config).discord
    token = settings.bot_token.get_secret_value() if settings.bot_token is not None else ""
    guild = settings.guild_id or ""
    if not dry_run:
        if not token:
            fail("no Discord bot token: set DISCORD_BOT_TOKEN (discord.bot_token)", 2)
        if not guild:
            fail("no Discord guild: set DISCORD_GUILD_ID (discord.guild_id)", 2)
    try:
        started = rules.parse_timestamp(timestamp) if timestamp is not None else datetime.now(UTC)
    except rules.BadTimestamp as exc:
        fail(f"--timestamp: {exc}", 1)
    name = rules.channel_name(repo=repo, issue=issue, stage=stage, started=started, run_id=run_id)
    intro = rules.intro_message(
        channel=name,
        started=started,
        title=title,
        repo=repo,
        issue=issue,
        url=url,
        stage=stage,
        summary=summary,
    )
    if dry_run:
        _dry_run(name, guild or DRY_RUN_GUILD, intro)
        return
    base = settings.api_url.rstrip("/")
    try:
        with _Discord(base, token) as discord:
            channel_id = _open_channel(discord, guild, name, os.environ.get(CATEGORY_ENV) or None)
            typer.echo(f"channel_name={name}")
            typer.echo(f"channel_id={channel_id}")
            typer.echo(f"channel_url=https://discord.com/channels/{guild}/{channel_id}")
            discord.post(f"/channels/{channel_id}/messages", {"content": intro})
            for message in _messages():
                discord.post(f"/channels/{channel_id}/messages", {"content": message})
    except DiscordFailure as exc:
        fail(str(exc).replace(token, "****"), 1)


def _dry_run(name: str, guild: str, intro: str) -> None:
    _say(f"would create channel {name} in guild {guild}")
    _say(intro)
    for message in _messages():
        _say(f"[dry-run] {message}")


def _say(text: str) -> None:
    typer.echo(text, err=True)


def _messages() -> Iterator[str]:
    """The messages stdin makes, as soon as each is ready (nothing when stdin is a terminal)."""
    if sys.stdin is None or sys.stdin.isatty():
        return
    buffer = rules.OutputBuffer()
    for line in iter(sys.stdin.readline, ""):
        yield from buffer.feed(line)
    yield from buffer.flush()


def _open_channel(discord: _Discord, guild: str, name: str, configured: str | None) -> str:
    channels = discord.get(f"/guilds/{guild}/channels")
    if not isinstance(channels, list):
        raise DiscordFailure("Discord listed the guild's channels as something other than a list")
    listed = [c for c in channels if isinstance(c, dict)]
    parent = rules.choose_category(listed, configured)
    if parent is None:
        taken = [str(c.get("name", "")) for c in listed if c.get("type") == rules.CATEGORY]
        created = discord.post(
            f"/guilds/{guild}/channels", {"name": rules.new_category_name(taken), "type": rules.CATEGORY}
        )
        parent = _id_of(created, "category")
    channel = discord.post(
        f"/guilds/{guild}/channels", {"name": name, "type": rules.TEXT_CHANNEL, "parent_id": parent}
    )
    return _id_of(channel, "channel")


def _id_of(document: Any, what: str) -> str:
    if isinstance(document, dict) and document.get("id") is not None:
        return str(document["id"])
    raise DiscordFailure(f"Discord created the {what} but its answer has no id")


class _Discord:
    """Discord's REST API with its rate limits waited out and its failures retried."""

    def __init__(self, base: str, token: str) -> None:
        import httpx

        self._base = base
        self._client = httpx.Client(
            timeout=TIMEOUT_SECONDS,
            transport=transport,
            headers={
                "Authorization": f"Bot {token}",
                "User-Agent": f"DiscordBot (facteur, {__version__})",
            },
        )

    def __enter__(self) -> _Discord:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._client.close()

    def get(self, path: str) -> Any:
        return self._request("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        import httpx

        failures = 0
        while True:
            try:
                response = self._client.request(method, f"{self._base}{path}", json=body)
            except httpx.TransportError as exc:
                problem = f"cannot reach Discord ({exc or type(exc).__name__})"
            else:
                if response.status_code == 429:
                    sleep(_retry_after(response))
                    continue
                if response.status_code < 500:
                    if response.status_code >= 400:
                        raise DiscordFailure(f"{method} {path}: {_refusal(response)}")
                    return _document(response)
                problem = f"HTTP {response.status_code}"
            failures += 1
            if failures >= MAX_ATTEMPTS:
                raise DiscordFailure(f"{method} {path} failed {MAX_ATTEMPTS} times; the last: {problem}")
            sleep(min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))


def _document(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    """The body's ``retry_after`` (seconds), else the ``Retry-After`` header, else one second."""
    document = _document(response)
    candidates = [document.get("retry_after") if isinstance(document, dict) else None]
    candidates.append(response.headers.get("retry-after"))
    for candidate in candidates:
        if candidate is None or isinstance(candidate, bool):
            continue
        try:
            seconds = float(candidate)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return DEFAULT_RETRY_AFTER


def _refusal(response: httpx.Response) -> str:
    document = _document(response)
    message = document.get("message") if isinstance(document, dict) else None
    detail = message if isinstance(message, str) and message else (response.reason_phrase or "no detail")
    return f"Discord refused the request (HTTP {response.status_code}): {' '.join(detail.split())}"
