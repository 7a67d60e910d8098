"""A Discord channel per stage run, through Discord's REST API: the channel opened in a category with room
(:mod:`facteur.domain.discord_channels` decides names and categories), messages posted into it. A 429 is
waited out (``retry_after``) and retried; a 5xx or a transport error is retried with back-off, five attempts
in all; any other refusal is a :class:`DiscordFailure` quoting Discord's message. Blocking (``httpx.Client``):
the CLI calls it directly, a stage from a thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from facteur import __version__
from facteur.domain import discord_channels as rules

TIMEOUT_SECONDS = 10.0
#: attempts of one request when Discord answers 5xx or cannot be reached
MAX_ATTEMPTS = 5
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
#: the wait when a 429 names none
DEFAULT_RETRY_AFTER = 1.0


class DiscordFailure(Exception):
    """Discord refused a request, or kept failing."""


class DiscordApi:
    """Discord's REST API with its rate limits waited out and its failures retried."""

    def __init__(
        self,
        base: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base = base.rstrip("/")
        self._sleep = sleep
        self._client = httpx.Client(
            timeout=TIMEOUT_SECONDS,
            transport=transport,
            headers={
                "Authorization": f"Bot {token}",
                "User-Agent": f"DiscordBot (facteur, {__version__})",
            },
        )

    def __enter__(self) -> DiscordApi:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(self, path: str) -> Any:
        return self._request("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._request("POST", path, body)

    def open_channel(self, guild: str, name: str, configured_category: str | None) -> str:
        """Create the text channel ``name`` in a category with room (a new one when all are full); its id."""
        channels = self.get(f"/guilds/{guild}/channels")
        if not isinstance(channels, list):
            raise DiscordFailure("Discord listed the guild's channels as something other than a list")
        listed = [c for c in channels if isinstance(c, dict)]
        parent = rules.choose_category(listed, configured_category)
        if parent is None:
            taken = [str(c.get("name", "")) for c in listed if c.get("type") == rules.CATEGORY]
            created = self.post(
                f"/guilds/{guild}/channels", {"name": rules.new_category_name(taken), "type": rules.CATEGORY}
            )
            parent = _id_of(created, "category")
        channel = self.post(
            f"/guilds/{guild}/channels", {"name": name, "type": rules.TEXT_CHANNEL, "parent_id": parent}
        )
        return _id_of(channel, "channel")

    def say(self, channel_id: str, content: str) -> None:
        self.post(f"/channels/{channel_id}/messages", {"content": content})

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        failures = 0
        while True:
            try:
                response = self._client.request(method, f"{self._base}{path}", json=body)
            except httpx.TransportError as exc:
                problem = f"cannot reach Discord ({exc or type(exc).__name__})"
            else:
                if response.status_code == 429:
                    self._sleep(retry_after(response))
                    continue
                if response.status_code < 500:
                    if response.status_code >= 400:
                        raise DiscordFailure(f"{method} {path}: {refusal(response)}")
                    return response_document(response)
                problem = f"HTTP {response.status_code}"
            failures += 1
            if failures >= MAX_ATTEMPTS:
                raise DiscordFailure(f"{method} {path} failed {MAX_ATTEMPTS} times; the last: {problem}")
            self._sleep(min(FIRST_BACKOFF * 2 ** (failures - 1), MAX_BACKOFF))


def _id_of(document: Any, what: str) -> str:
    if isinstance(document, dict) and document.get("id") is not None:
        return str(document["id"])
    raise DiscordFailure(f"Discord created the {what} but its answer has no id")


def response_document(response: httpx.Response) -> Any:
    """The response's JSON body, or ``None`` when it has none."""
    try:
        return response.json()
    except ValueError:
        return None


def retry_after(response: httpx.Response) -> float:
    """The body's ``retry_after`` (seconds), else the ``Retry-After`` header, else one second."""
    document = response_document(response)
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


def refusal(response: httpx.Response) -> str:
    """One line: the HTTP status, and Discord's ``message`` (and error ``code``) when the body has one."""
    document = response_document(response)
    message = document.get("message") if isinstance(document, dict) else None
    code = document.get("code") if isinstance(document, dict) else None
    status = f"HTTP {response.status_code}" + (f", code {code}" if isinstance(code, int) and code else "")
    detail = message if isinstance(message, str) and message else (response.reason_phrase or "no detail")
    return f"Discord refused the request ({status}): {' '.join(detail.split())}"
