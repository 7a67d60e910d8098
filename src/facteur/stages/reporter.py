"""A stage run's reports to Facteur: ``POST <callbackUrl>`` with the run's token, one JSON event each.

Each event carries an id (``started``, ``heartbeat-3``, ``plan-1``, ``completed``, …) so that a resent one
is recognised and applied once. A timeout, a connection error, 408, 429 and 5xx are retried with back-off up
to ``stage.callback_attempts``; any other answer is final. A run without a callback URL (an event file made
by hand) keeps its reports in its log only. A report that cannot be delivered never fails the stage: the
reconciler learns the run's end from the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from facteur.stages.event import RunInfo

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_RETRIED = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Mapping[str, Any]

    @property
    def problems(self) -> list[str]:
        value = self.body.get("problems")
        return [str(p) for p in value] if isinstance(value, list) else []


class Reporter:
    def __init__(
        self,
        run: RunInfo,
        *,
        attempts: int = 5,
        timeout_seconds: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._run = run
        self._attempts = attempts
        self._sleep = sleep
        self._counts: dict[str, int] = {}
        url = run.callback_url
        # plain http needs no TLS: skip loading the CA bundle (tens of milliseconds at every stage start)
        self._client = (
            httpx.AsyncClient(timeout=timeout_seconds, transport=transport, verify=url.startswith("https://"))
            if url is not None
            else None
        )
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._beat_waiting = False

    async def aclose(self) -> None:
        await self.flush()
        if self._sender is not None:
            self._queue.put_nowait(None)
            await self._sender
            self._sender = None
        if self._client is not None:
            await self._client.aclose()

    # started, heartbeats, progress and usage go out in the background, in order, so that the stage does not
    # wait for Facteur's answer; plan and completed wait for them, then for their own answer

    def started(self) -> None:
        self.post("started", event_id="started")

    def heartbeat(self) -> None:
        self.post("heartbeat")

    def progress(self, text: str, checklist: list[dict[str, Any]] | None = None) -> None:
        self.post("progress", text=text[:20_000], checklist=checklist or [])

    def usage(self, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        if input_tokens or output_tokens or cost_usd:
            self.post(
                "usage", input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=round(cost_usd, 6)
            )

    async def plan(self, markdown: str) -> Answer | None:
        await self.flush()
        return await self.send("plan", markdown=markdown)

    async def completed(
        self,
        *,
        succeeded: bool,
        summary: str,
        artifacts: Sequence[Mapping[str, Any]] | None = None,
        pull_request: str | None = None,
        branch: str | None = None,
    ) -> Answer | None:
        await self.flush()
        fields: dict[str, Any] = {
            "outcome": "succeeded" if succeeded else "failed",
            "summary": summary[:100_000],
            "artifacts": list(artifacts or []),
        }
        if pull_request:
            fields["pull_request"] = pull_request
        if branch:
            fields["branch"] = branch
        return await self.send("completed", event_id="completed", **fields)

    def post(self, kind: str, *, event_id: str | None = None, **fields: Any) -> None:
        """Queue one event; it is sent after those queued before it (a heartbeat only when none waits)."""
        if kind == "heartbeat":
            if self._beat_waiting:
                return
            self._beat_waiting = True
        self._queue.put_nowait((kind, {"event_id": event_id or self._next_id(kind), **fields}))
        if self._sender is None:
            self._sender = asyncio.create_task(self._drain(), name="facteur-stage-reports")

    async def flush(self) -> None:
        """Wait until every queued event was sent (or given up on)."""
        if self._sender is not None:
            await self._queue.join()

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if item is None:
                    return
                kind, fields = item
                if kind == "heartbeat":
                    self._beat_waiting = False
                await self.send(kind, **fields)
            except Exception:  # a report that fails to go out never fails the stage
                logger.exception("run report not sent")
            finally:
                self._queue.task_done()

    def _next_id(self, kind: str) -> str:
        count = self._counts.get(kind, 0) + 1
        self._counts[kind] = count
        return f"{kind}-{count}"

    async def send(self, kind: str, *, event_id: str | None = None, **fields: Any) -> Answer | None:
        """Send one event now; the answer, or None when there is nowhere to send it or it never got
        through."""
        if event_id is None:
            event_id = self._next_id(kind)
        if self._client is None or self._run.callback_url is None:
            logger.info("run report kept in the log (no callback URL): type=%s id=%s", kind, event_id)
            return None
        body = {"id": event_id, "type": kind, **fields}
        headers = {"Authorization": f"Bearer {self._run.callback_token}"}
        delay = 0.5
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(self._run.callback_url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 500 and response.status_code not in _RETRIED:
                    answer = Answer(response.status_code, _json(response))
                    if response.status_code >= 400:
                        logger.warning(
                            "run report refused: type=%s id=%s status=%s answer=%s",
                            kind,
                            event_id,
                            response.status_code,
                            dict(answer.body),
                        )
                    return answer
                problem = f"HTTP {response.status_code}"
            if attempt < self._attempts:
                logger.info(
                    "run report not delivered, retrying: type=%s id=%s attempt=%s problem=%s",
                    kind,
                    event_id,
                    attempt,
                    problem,
                )
                await self._sleep(delay)
                delay = min(delay * 2, 10.0)
        logger.warning(
            "run report not delivered: type=%s id=%s attempts=%s problem=%s",
            kind,
            event_id,
            self._attempts,
            problem,
        )
        return None

    @contextlib.asynccontextmanager
    async def heartbeats(self, interval: float) -> AsyncIterator[None]:
        """Send a heartbeat every ``interval`` seconds while the block runs."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(interval)
                self.heartbeat()

        task = asyncio.create_task(beat(), name="facteur-stage-heartbeat")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _json(response: httpx.Response) -> Mapping[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, Mapping) else {}
