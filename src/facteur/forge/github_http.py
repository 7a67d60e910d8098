"""The GitHub HTTP layer: one httpx client, one concurrency limit, a time budget per call, retries.

A *call* is one port method (which may send several requests, e.g. to page); it gets ``timeout_seconds`` in
all, retries and rate-limit waits included. 5xx answers and transport errors are retried with back-off
doubling from 0.5 s; rate-limited answers (403/429 with ``Retry-After`` or ``X-RateLimit-Remaining: 0``) are
retried once the limit lifts, unless that is past the budget. Other refusals become ``ForgeError``s carrying
GitHub's message; tokens never appear in them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from facteur.clock import Clock, SystemClock
from facteur.errors import ForgeError, ForgeNotFound, ForgeUnavailable

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
API_VERSION = "2022-11-28"
FIRST_BACKOFF_SECONDS = 0.5
#: GitHub asks clients hit by a secondary limit without ``Retry-After`` to wait at least a minute
SECONDARY_LIMIT_SECONDS = 60.0

_deadline: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("github_deadline", default=None)


@dataclass(frozen=True, slots=True)
class RateLimit:
    wait_seconds: float
    resets_at: datetime


def graphql_url(api_url: str) -> str:
    """GitHub's GraphQL endpoint for a REST root (GHE's ``/api/v3`` maps to ``/api/graphql``)."""
    root = api_url.rstrip("/")
    if root.endswith("/api/v3"):
        return root[: -len("/v3")] + "/graphql"
    return root + "/graphql"


class GitHubHttp:
    def __init__(
        self,
        *,
        api_url: str,
        user_agent: str,
        timeout_seconds: float,
        max_concurrency: int,
        max_attempts: int,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.graphql_url = graphql_url(self.api_url)
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.clock: Clock = clock or SystemClock()
        self._sleep: Sleep = sleep or asyncio.sleep
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._pinned: set[str] = set()
        self._recent: deque[str] = deque(maxlen=64)
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds),
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": user_agent,
            },
        )

    async def close(self) -> None:
        await self._client.aclose()

    def add_secret(self, secret: str, *, pinned: bool = False) -> None:
        """Remember a credential so that it is blanked out of any error text (minted ones: the latest few)."""
        if secret:
            (self._pinned.add if pinned else self._recent.append)(secret)

    def redact(self, text: str) -> str:
        for secret in (*self._pinned, *self._recent):
            text = text.replace(secret, "***")
        return text

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Open a call's time budget (a call nested in another shares the outer budget)."""
        if _deadline.get() is not None:
            yield
            return
        token = _deadline.set(self.clock.now() + timedelta(seconds=self.timeout_seconds))
        try:
            yield
        finally:
            _deadline.reset(token)

    async def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        authorization: str | None,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one request, retrying as the module says; a 2xx (or a status in ``accept``) is returned."""
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        headers = {"Authorization": authorization} if authorization else {}
        async with self.call():
            deadline = _deadline.get()
            assert deadline is not None
            attempt = 0
            while True:
                attempt += 1
                remaining = (deadline - self.clock.now()).total_seconds()
                if remaining <= 0:
                    raise self._out_of_time(what)
                try:
                    response = await self._send(
                        method=method, url=url, headers=headers, params=params, json=json, remaining=remaining
                    )
                except TimeoutError:
                    raise self._out_of_time(what) from None
                except httpx.TransportError as exc:
                    failure = f"could not reach GitHub ({type(exc).__name__})"
                    wait = FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1)
                else:
                    status = response.status_code
                    if status < 300 or status in accept:
                        return response
                    limit = self._rate_limit(response)
                    if limit is not None:
                        failure = f"GitHub rate limit (resets at {limit.resets_at.isoformat()})"
                        wait = limit.wait_seconds
                        if wait > remaining:
                            raise ForgeUnavailable(
                                f"GitHub rate-limited {what}; the limit resets at"
                                f" {limit.resets_at.isoformat()} (in {wait:.0f}s),"
                                f" past this call's {self.timeout_seconds:g}s budget"
                            )
                    elif status >= 500:
                        failure = f"GitHub answered {status}"
                        wait = FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1)
                    else:
                        raise self.refusal(response, what)
                if attempt >= self.max_attempts:
                    raise ForgeUnavailable(f"{failure} for {what}, {attempt} attempt(s) made")
                if wait >= (deadline - self.clock.now()).total_seconds():
                    raise ForgeUnavailable(
                        f"{failure} for {what}; no time left in the {self.timeout_seconds:g}s budget to retry"
                    )
                logger.warning("github request retried: what=%s reason=%s wait=%.1fs", what, failure, wait)
                await self._sleep(wait)

    async def _send(
        self,
        *,
        method: str,
        url: str,
        headers: dict[str, str],
        params: Mapping[str, str | int] | None,
        json: Any,
        remaining: float,
    ) -> httpx.Response:
        async with asyncio.timeout(remaining), self._semaphore:
            return await self._client.request(method, url, headers=headers, params=params, json=json)

    def _out_of_time(self, what: str) -> ForgeUnavailable:
        return ForgeUnavailable(f"GitHub did not answer {what} within {self.timeout_seconds:g}s")

    def _rate_limit(self, response: httpx.Response) -> RateLimit | None:
        if response.status_code not in (403, 429):
            return None
        now = self.clock.now()
        retry_after = _number(response.headers.get("retry-after"))
        if retry_after is not None:
            wait = max(retry_after, 0.0)
            return RateLimit(wait, now + timedelta(seconds=wait))
        reset = _number(response.headers.get("x-ratelimit-reset"))
        if response.headers.get("x-ratelimit-remaining") == "0" and reset is not None:
            wait = max(reset - now.timestamp(), 0.0)
            return RateLimit(wait, now + timedelta(seconds=wait))
        if response.status_code == 429 or "rate limit" in error_message(response).lower():
            return RateLimit(SECONDARY_LIMIT_SECONDS, now + timedelta(seconds=SECONDARY_LIMIT_SECONDS))
        return None

    def refusal(self, response: httpx.Response, what: str) -> ForgeError:
        message = self.redact(error_message(response)) or response.reason_phrase
        if response.status_code == 404:
            return ForgeNotFound(f"GitHub has no {what} (404: {message})")
        return ForgeError(f"GitHub refused {what}: {response.status_code} {message}")


def split_repo(repo: str) -> tuple[str, str]:
    """``owner/name`` as its two parts; ForgeError for anything else."""
    owner, _, name = repo.partition("/")
    if not owner or not name or "/" in name:
        raise ForgeError(f"repository {repo!r} is not named owner/name")
    return owner, name


def repo_path(repo: str) -> str:
    """``/repos/{owner}/{name}``, each part quoted."""
    owner, name = split_repo(repo)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def decode(response: httpx.Response, what: str) -> Any:
    """The JSON body of ``response``; ForgeError when it is not JSON (a proxy's HTML page, say)."""
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0].strip() or "no content type"
        raise ForgeError(f"GitHub's answer for {what} is not JSON ({response.status_code}, {kind})") from None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def error_message(response: httpx.Response) -> str:
    """GitHub's ``message`` with the details of its ``errors`` list, or an empty string."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    message = str(body.get("message") or "")
    details: list[str] = []
    for error in body.get("errors") or ():
        if isinstance(error, str):
            details.append(error)
        elif isinstance(error, dict):
            where = ".".join(str(error[key]) for key in ("resource", "field") if error.get(key))
            detail = error.get("message") or (f"{where}: {error.get('code')}" if where else error.get("code"))
            if detail:
                details.append(str(detail))
    return f"{message} ({'; '.join(details)})" if details else message
