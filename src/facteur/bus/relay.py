"""The outbox relay: publishes what the store's outbox holds, in outbox order, and marks it published.

Messages reach the outbox in the same transaction as the state change that caused them, so a broker outage
delays them and never loses them. One relay at a time publishes — the holder of the ``outbox-relay`` lease,
renewed every round — so messages with the same key keep their order across replicas. Delivery is at least
once: a relay that stops between publishing and marking, or loses its lease while publishing, leaves
messages that are published again (consumers are idempotent).

While the broker is unavailable the relay backs off (0.1 s doubling to ``max_backoff_seconds``) and keeps
the messages; the backlog (count, age of the oldest message) is in ``/readyz`` and ``/metrics``. Published
messages are pruned after ``retention_hours``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from facteur.bus.port import Broker
from facteur.clock import Clock
from facteur.errors import BusUnavailable, StoreError
from facteur.settings import OutboxSettings
from facteur.store.port import OutboxBacklog, OutboxEntry, Store

logger = logging.getLogger(__name__)

LEASE = "outbox-relay"
#: seconds between prunes of published messages
PRUNE_INTERVAL_SECONDS = 300.0
#: the first pause after a failure; it doubles up to ``max_backoff_seconds``
FIRST_BACKOFF_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class RelayStatus:
    """What the relay knows, for readiness and metrics."""

    holder: str
    leading: bool
    #: messages published and marked by this relay
    published: int
    failures: int
    #: the broker or store problem of the last round, None once a round succeeded
    problem: str | None
    #: messages not published yet, as last counted (None before the first count)
    backlog: int | None


def default_holder() -> str:
    """A name for this process among replicas: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class OutboxRelay:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        clock: Clock,
        settings: OutboxSettings,
        *,
        holder: str | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._clock = clock
        self._settings = settings
        self.holder = holder or default_holder()
        self._wake = asyncio.Event()
        self._lease_until: datetime | None = None
        self._published = 0
        self._failures = 0
        self._problem: str | None = None
        self._backlog: OutboxBacklog | None = None
        self._pruned_at: datetime | None = None
        self._counted_at: datetime | None = None
        #: the previous batch's mark, running while the next batch is read and published
        self._marking: asyncio.Task[None] | None = None
        #: the last id of the batch being marked (the next read skips up to it)
        self._marking_up_to = 0

    @property
    def broker_description(self) -> str:
        return self._broker.description

    def wake(self) -> None:
        """Look at the outbox now (called after this process wrote to it)."""
        self._wake.set()

    def status(self) -> RelayStatus:
        backlog = self._backlog
        return RelayStatus(
            holder=self.holder,
            leading=self._leading(),
            published=self._published,
            failures=self._failures,
            problem=self._problem,
            backlog=backlog.count if backlog is not None else None,
        )

    async def refresh_backlog(self) -> OutboxBacklog:
        """Count the backlog now (``/readyz`` and ``/metrics`` call this; the relay does at most once per
        poll interval)."""
        self._backlog = await self._store.outbox_backlog()
        return self._backlog

    async def _refresh_backlog_if_due(self) -> None:
        """Count the backlog at most once per poll interval (a count costs as much as a small round)."""
        now = self._clock.now()
        if (
            self._counted_at is None
            or (now - self._counted_at).total_seconds() >= self._settings.poll_seconds
        ):
            self._counted_at = now
            await self.refresh_backlog()

    def _leading(self) -> bool:
        return self._lease_until is not None and self._clock.now() < self._lease_until

    async def run(self) -> None:
        """Relay until cancelled."""
        backoff = 0.0
        try:
            while True:
                self._wake.clear()  # what is written from now on wakes the next idle wait
                try:
                    published = await self._round()
                except (BusUnavailable, StoreError) as exc:
                    await self._abandon_marking()  # what it could not mark is published again
                    backoff = await self._pause(exc, backoff)
                    continue
                if self._problem is not None:
                    logger.warning("outbox relay resumed: published=%s", published)
                    self._problem = None
                backoff = 0.0
                if published < self._settings.batch_size:  # else more are waiting: go on at once
                    await self._idle()
        finally:
            await self._abandon_marking()

    async def _round(self) -> int:
        """One round. While a backlog lasts, a batch is marked published while the next one is read and
        published (publishes stay one at a time, in outbox order); the read skips the batch being marked.
        A round that is not full waits for its mark, then prunes and counts when due."""
        after = self._marking_up_to if self._marking is not None else 0
        entries = await self._publish_next(after)
        await self._finish_marking()
        if entries:
            self._marking_up_to = entries[-1].id  # before the next read, which skips them
            self._marking = asyncio.create_task(self._mark(entries))
        if len(entries) < self._settings.batch_size:
            await self._finish_marking()
            await self.prune_if_due()
            await self._refresh_backlog_if_due()
        return len(entries)

    async def _finish_marking(self) -> None:
        marking, self._marking = self._marking, None
        if marking is not None:
            await marking

    async def _abandon_marking(self) -> None:
        marking, self._marking = self._marking, None
        if marking is not None:
            marking.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await marking

    async def _pause(self, problem: BusUnavailable | StoreError, backoff: float) -> float:
        """Record a failed round and wait before the next; returns the pause taken."""
        self._failures += 1
        backoff = min(self._settings.max_backoff_seconds, max(FIRST_BACKOFF_SECONDS, backoff * 2))
        if self._problem != problem.message:
            logger.warning(
                "outbox relay paused: error=%s retry_in=%.1fs (messages stay in the outbox)",
                problem.message,
                backoff,
            )
        self._problem = problem.message
        with contextlib.suppress(StoreError):
            await self.refresh_backlog()
        await asyncio.sleep(backoff)
        return backoff

    async def relay_once(self) -> int:
        """Publish and mark one batch if this relay holds the lease; returns how many it published."""
        entries = await self._publish_next(0)
        if entries:
            await self._mark(entries)
        return len(entries)

    async def _publish_next(self, after: int) -> list[OutboxEntry]:
        """Read the next batch (ids above ``after``) and publish it, if this relay holds the lease."""
        if not await self._hold_lease():
            return []
        entries = await self._store.pending_outbox(self._settings.batch_size, after_id=after)
        if entries:
            await self._broker.publish([entry.message for entry in entries])
            logger.debug("outbox published: messages=%s last_id=%s", len(entries), entries[-1].id)
        return entries

    async def _mark(self, entries: list[OutboxEntry]) -> None:
        await self._store.mark_published([entry.id for entry in entries], self._clock.now())
        self._published += len(entries)  # published and marked: relayed

    async def _hold_lease(self) -> bool:
        """Take or renew the lease once a third of it has passed; False while another replica holds it."""
        now = self._clock.now()
        lease = timedelta(seconds=self._settings.lease_seconds)
        if self._lease_until is not None and now < self._lease_until - lease * (2 / 3):
            return True
        was_leading = self._leading()
        if await self._store.acquire_lease(LEASE, self.holder, now=now, until=now + lease):
            self._lease_until = now + lease
            if not was_leading:
                logger.info("outbox relay leading: holder=%s", self.holder)
            return True
        if was_leading:
            logger.warning("outbox relay lease lost to another replica: holder=%s", self.holder)
        self._lease_until = None
        return False

    async def _idle(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that arrives as
        # the event is set, and the relay would then never stop
        try:
            async with asyncio.timeout(self._settings.poll_seconds):
                await self._wake.wait()
        except TimeoutError:
            return
        if self._settings.linger_ms:  # woken by a write: let the writes of the next moments join the round
            await asyncio.sleep(self._settings.linger_ms / 1000)

    async def prune_if_due(self) -> None:
        """Delete messages published more than ``retention_hours`` ago (at most every 5 minutes)."""
        now = self._clock.now()
        if self._pruned_at is not None and (now - self._pruned_at).total_seconds() < PRUNE_INTERVAL_SECONDS:
            return
        if not self._leading():
            return
        self._pruned_at = now
        pruned = await self._store.prune_outbox(now - timedelta(hours=self._settings.retention_hours))
        if pruned:
            logger.info("outbox pruned: messages=%s", pruned)
