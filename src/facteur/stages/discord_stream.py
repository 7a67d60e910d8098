"""A stage's output streamed into its own Discord channel, when ``discord.bot_token`` and
``discord.guild_id`` are configured (``DISCORD_BOT_TOKEN``, ``DISCORD_GUILD_ID``; category
``discord.category_id``, ``DISCORD_CATEGORY_ID``), as the seeds' stage runs did with ``discord-channel``.

The channel is named after the repository, issue, stage, start and run; its intro names the work. The
agent's messages, tool calls and output lines are posted in chunks (at most 2,000 characters, cut at a
newline), then the stage's outcome. Discord is for people: a failure to reach it is logged once and the
stream stops; the stage goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import httpx

from facteur.domain import discord_channels as rules
from facteur.notify.discord_channel import DiscordApi, DiscordFailure
from facteur.settings import DiscordSettings
from facteur.stages.event import StageEvent

logger = logging.getLogger(__name__)


class StageChannel:
    def __init__(
        self,
        settings: DiscordSettings,
        event: StageEvent,
        *,
        transport: httpx.BaseTransport | None = None,
        started: datetime | None = None,
    ) -> None:
        assert settings.bot_token is not None
        assert settings.guild_id
        self._api = DiscordApi(settings.api_url, settings.bot_token.get_secret_value(), transport=transport)
        self._guild = settings.guild_id
        self._category = settings.category_id
        self._event = event
        self._started = started or datetime.now(UTC)
        self._buffer = rules.OutputBuffer()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.channel_id: str | None = None
        self.failed = False

    @classmethod
    def configured(cls, settings: DiscordSettings, event: StageEvent) -> StageChannel | None:
        """The stage's channel when Discord credentials are configured, else None."""
        if settings.bot_token is None or not settings.guild_id:
            return None
        return cls(settings, event)

    def start(self) -> None:
        """Open the channel and post the intro, in the background."""
        self._worker = asyncio.create_task(self._work(), name="facteur-stage-discord")

    def feed(self, text: str) -> None:
        if self.failed:
            return
        for message in self._buffer.feed(text if text.endswith("\n") else text + "\n"):
            self._queue.put_nowait(message)

    async def close(self, outcome: str | None = None) -> None:
        """Post what is left (and the outcome), then stop."""
        if outcome:
            self.feed(outcome)
        for message in self._buffer.flush():
            self._queue.put_nowait(message)
        self._queue.put_nowait(None)
        if self._worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await asyncio.to_thread(self._api.close)

    async def _work(self) -> None:
        event = self._event
        issue = event.pull_number or event.issue_number or None
        name = rules.channel_name(
            repo=event.repository,
            issue=issue,
            stage=event.stage.value,
            started=self._started,
            run_id=(str(event.run.run_id)[:8] if event.run.run_id else None),
        )
        intro = rules.intro_message(
            channel=name,
            started=self._started,
            title=event.task.title if event.task else (event.issue_title or None),
            repo=event.repository,
            issue=issue,
            url=event.issue_url or None,
            stage=event.stage.value,
            summary=event.task.description if event.task else None,
        )
        try:
            self.channel_id = await asyncio.to_thread(
                self._api.open_channel, self._guild, name, self._category
            )
            logger.info("discord channel opened: name=%s id=%s", name, self.channel_id)
            await asyncio.to_thread(self._api.say, self.channel_id, intro)
            while (message := await self._queue.get()) is not None:
                await asyncio.to_thread(self._api.say, self.channel_id, message)
        except (DiscordFailure, httpx.HTTPError) as exc:
            self.failed = True
            logger.warning("discord stream stopped: %s", exc)
