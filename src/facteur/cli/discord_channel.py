"""``facteur discord-channel``: open a Discord channel for a stage run, post an intro, then stream the
run's output (stdin) into it, as the seeds' ``discord-channel`` script does.

The channel is named from the repository, issue, stage, start time and run id
(:func:`facteur.domain.discord_channels.channel_name`) and goes in the configured category
(``DISCORD_CATEGORY_ID``), else in a category named ``Codex Channel - …`` with room, else in a new one.
Credentials are ``discord.bot_token`` (``DISCORD_BOT_TOKEN``) and ``discord.guild_id``
(``DISCORD_GUILD_ID``); the API is ``discord.api_url``, spoken to by
:class:`facteur.notify.discord_channel.DiscordApi` (rate limits waited out, 5xx and transport errors
retried).

Exit codes: 0 done, 2 missing credentials or bad settings, 1 a bad ``--timestamp`` or Discord failed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from facteur.cli.common import ConfigOption, fail, settings_or_exit
from facteur.domain import discord_channels as rules
from facteur.notify.discord_channel import DiscordApi, DiscordFailure

if TYPE_CHECKING:
    import httpx

#: the HTTP transport to Discord's API (``None``: the network); tests set an ``httpx.MockTransport``
transport: httpx.BaseTransport | None = None
#: how waits (rate limits, back-off) are slept; tests replace it so that they are instant
sleep: Callable[[float], None] = time.sleep

DRY_RUN_GUILD = "dry-run-guild"


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
        with DiscordApi(base, token, transport=transport, sleep=sleep) as discord:
            channel_id = discord.open_channel(guild, name, settings.category_id)
            typer.echo(f"channel_name={name}")
            typer.echo(f"channel_id={channel_id}")
            typer.echo(f"channel_url=https://discord.com/channels/{guild}/{channel_id}")
            discord.say(channel_id, intro)
            for message in _messages():
                discord.say(channel_id, message)
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
