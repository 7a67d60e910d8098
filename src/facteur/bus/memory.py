"""An in-process broker: the embedded default and the reference for the bus contract tests.

Topics have partitions (a key always maps to the same partition; keyless messages go round-robin), consumer
groups keep committed offsets per partition, partitions are shared among the live members of a group, a new
member resumes at the committed offsets, and waiting consumers wake up on publish. Nothing survives the
process. :meth:`MemoryBroker.outage` makes the broker fail like an unreachable one, for tests.
"""

from __future__ import annotations

import asyncio
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from facteur.bus.port import Handler, Message, Received, StartAt
from facteur.errors import BusUnavailable, CommitFailed

DEFAULT_PARTITIONS = 3
#: messages a partition keeps; older ones are dropped, as a Kafka topic's retention would
DEFAULT_RETENTION = 100_000
#: bytes (values and keys) a partition keeps, so that large messages (raw webhook bodies) cannot fill memory
DEFAULT_RETENTION_BYTES = 32 * 1024 * 1024


@dataclass
class _Group:
    committed: dict[int, int] = field(default_factory=dict)
    members: list[MemoryConsumer] = field(default_factory=list)
    generation: int = 0


class MemoryBroker:
    def __init__(
        self,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        retention: int = DEFAULT_RETENTION,
        retention_bytes: int = DEFAULT_RETENTION_BYTES,
    ) -> None:
        if partitions < 1:
            raise ValueError("a topic needs at least one partition")
        if retention < 1:
            raise ValueError("a partition keeps at least one message")
        self._partitions = partitions
        self._retention = retention
        self._retention_bytes = retention_bytes
        #: bytes each partition holds
        self._sizes: dict[str, list[int]] = {}
        self._logs: dict[str, list[list[Received]]] = {}
        #: offset of the first message each partition still holds
        self._bases: dict[str, list[int]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._round_robin = itertools.count()
        self._changed = asyncio.Event()
        self._outage: str | None = None

    @property
    def description(self) -> str:
        return "memory"

    async def start(self) -> None:
        self._check()

    async def close(self) -> None:
        self._wake()

    def outage(self, reason: str | None) -> None:
        """Fail every publish, join and commit with ``reason`` from now on (None: work again)."""
        self._outage = reason

    def _check(self) -> None:
        if self._outage is not None:
            raise BusUnavailable(f"memory broker unavailable: {self._outage}")

    # --- producing ---------------------------------------------------------------------------------

    def partition_for(self, key: bytes | None) -> int:
        if key is None:
            return next(self._round_robin) % self._partitions
        return zlib.crc32(key) % self._partitions

    def _log(self, topic: str) -> list[list[Received]]:
        if topic not in self._logs:
            self._logs[topic] = [[] for _ in range(self._partitions)]
            self._bases[topic] = [0] * self._partitions
            self._sizes[topic] = [0] * self._partitions
        return self._logs[topic]

    def _base(self, topic: str) -> list[int]:
        self._log(topic)
        return self._bases[topic]

    async def publish(self, messages: Sequence[Message]) -> None:
        self._check()
        for message in messages:
            log = self._log(message.topic)
            base = self._base(message.topic)
            partition = self.partition_for(message.key)
            log[partition].append(
                Received(
                    topic=message.topic,
                    partition=partition,
                    offset=base[partition] + len(log[partition]),
                    value=message.value,
                    key=message.key,
                    headers=tuple(message.headers),
                )
            )
            sizes = self._sizes[message.topic]
            sizes[partition] += _size(message)
            if len(log[partition]) > self._retention or sizes[partition] > self._retention_bytes:
                self._trim(message.topic, partition)
        if messages:
            self._wake()

    def _trim(self, topic: str, partition: int) -> None:
        """Drop the oldest messages down to 90 % of the limits (in one go, so that trimming is rare)."""
        log, base, sizes = self._logs[topic][partition], self._bases[topic], self._sizes[topic]
        keep_count = max(1, self._retention * 9 // 10)
        keep_bytes = self._retention_bytes * 9 // 10
        drop = max(0, len(log) - keep_count)
        size = sizes[partition] - sum(_size(r) for r in log[:drop])
        while drop < len(log) - 1 and size > keep_bytes:
            size -= _size(log[drop])
            drop += 1
        del log[:drop]
        base[partition] += drop
        sizes[partition] = size

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- inspection (tests, diagnostics) ------------------------------------------------------------

    def records(self, topic: str) -> list[Received]:
        """Every message of a topic, by partition then offset."""
        return [record for partition in self._logs.get(topic, []) for record in partition]

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """The group's committed offsets (next offset to read) by partition."""
        group_state = self._groups.get((topic, group))
        return dict(group_state.committed) if group_state else {}

    # --- consuming ---------------------------------------------------------------------------------

    def consumer(self, topic: str, group: str, *, start_at: StartAt = "earliest") -> MemoryConsumer:
        return MemoryConsumer(self, topic, group, start_at)

    def _group(self, topic: str, group: str) -> _Group:
        return self._groups.setdefault((topic, group), _Group())

    def _join(self, member: MemoryConsumer) -> None:
        self._check()
        group = self._group(member.topic, member.group)
        group.members.append(member)
        group.generation += 1
        self._wake()

    def _leave(self, member: MemoryConsumer) -> None:
        group = self._group(member.topic, member.group)
        if member in group.members:
            group.members.remove(member)
            group.generation += 1
            self._wake()

    def _commit(self, topic: str, group: str, partition: int, next_offset: int) -> None:
        if self._outage is not None:
            raise CommitFailed(f"commit of {topic}/{partition} for group {group} failed: {self._outage}")
        self._group(topic, group).committed[partition] = next_offset


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, topic: str, group: str, start_at: StartAt) -> None:
        self._broker = broker
        self.topic = topic
        self.group = group
        self._start_at = start_at
        self._positions: dict[int, int] = {}
        self._generation = -1
        self._stopping = asyncio.Event()
        self._joined = False
        self._next_partition = 0

    async def start(self) -> None:
        if not self._joined:
            self._broker._join(self)
            self._joined = True

    def _assigned(self, group: _Group) -> list[int]:
        if self not in group.members:
            return []
        index, size = group.members.index(self), len(group.members)
        return [p for p in range(self._broker._partitions) if p % size == index]

    def _next(self) -> Received | None:
        group = self._broker._group(self.topic, self.group)
        if group.generation != self._generation:  # rebalanced: resume at the committed offsets
            self._generation = group.generation
            self._positions.clear()
        log = self._broker._log(self.topic)
        bases = self._broker._base(self.topic)
        assigned = self._assigned(group)
        for step in range(len(assigned)):  # rotate so that one busy partition does not starve the others
            partition = assigned[(self._next_partition + step) % len(assigned)]
            base, held = bases[partition], log[partition]
            position = self._positions.get(partition)
            if position is None:
                position = group.committed.get(partition)
                if position is None:
                    position = base if self._start_at == "earliest" else base + len(held)
            position = max(position, base)  # what retention dropped is gone, as in Kafka
            self._positions[partition] = position
            if position < base + len(held):
                self._next_partition = (self._next_partition + step + 1) % len(assigned)
                return held[position - base]
        return None

    async def run(self, handler: Handler) -> None:
        await self.start()
        self._stopping.clear()
        while not self._stopping.is_set():
            changed = self._broker._changed
            record = self._next()
            if record is None:
                await _first(changed, self._stopping)
                continue
            await handler(record)
            self._broker._commit(self.topic, self.group, record.partition, record.offset + 1)
            self._positions[record.partition] = record.offset + 1

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self._stopping.set()
        if self._joined:
            self._joined = False
            self._broker._leave(self)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _size(message: Message | Received) -> int:
    return len(message.value) + len(message.key or b"")
