"""The bus port: messages, received messages, the broker and its consumers.

Delivery is at least once. A consumer commits a message's offset only after its handler returned; when the
handler raises, nothing from that message on is committed, :meth:`Consumer.run` re-raises the exception and
the consumer stops, so the message is delivered again to the next consumer of the group (after a restart, or
to another member). Handlers are therefore idempotent (the codex-task listener is, by delivery id).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Headers = tuple[tuple[str, bytes], ...]
#: where a group without a committed offset starts reading
StartAt = Literal["earliest", "latest"]


@dataclass(frozen=True, slots=True)
class Message:
    """A message to publish. Messages with the same key land on the same partition, in publish order."""

    topic: str
    value: bytes
    key: bytes | None = None
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        """The last value of a header (names compared case-insensitively), or None."""
        return _header(self.headers, name)


@dataclass(frozen=True, slots=True)
class Received:
    """A message as a consumer received it: where it sits in the log, and what it holds."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None
    headers: Headers = ()

    def header(self, name: str) -> bytes | None:
        return _header(self.headers, name)

    @property
    def position(self) -> str:
        """``topic/partition/offset``, for logs and dead letters."""
        return f"{self.topic}/{self.partition}/{self.offset}"


Handler = Callable[[Received], Awaitable[None]]


class Consumer(Protocol):
    """One member of a consumer group on one topic."""

    async def start(self) -> None:
        """Join the group; raise :class:`facteur.errors.BusUnavailable` when the brokers cannot be reached."""
        ...

    async def run(self, handler: Handler) -> None:
        """Hand every message to ``handler`` in partition order, committing each offset after its handler.

        Returns after :meth:`stop`; re-raises a handler's exception (its message uncommitted); raises
        :class:`facteur.errors.CommitFailed` when an offset cannot be committed.
        """
        ...

    async def stop(self) -> None:
        """Make :meth:`run` return once the message in hand is handled and committed."""
        ...

    async def close(self) -> None:
        """Leave the group and release the connection (idempotent)."""
        ...


class Broker(Protocol):
    """The transport."""

    @property
    def description(self) -> str:
        """What the broker is, for messages (``kafka 127.0.0.1:9092``, ``memory``); never holds secrets."""
        ...

    async def start(self) -> None:
        """Connect; raise :class:`facteur.errors.BusUnavailable` naming the unreachable brokers."""
        ...

    async def close(self) -> None: ...

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publish a batch; return once every message is acknowledged by all in-sync replicas.

        Messages with the same key keep their order. Raise :class:`facteur.errors.BusUnavailable` when the
        brokers cannot be reached or do not acknowledge in time; then some messages of the batch may have been
        written (publish again: consumers are idempotent).
        """
        ...

    def consumer(self, topic: str, group: str, *, start_at: StartAt = "earliest") -> Consumer:
        """A consumer of ``topic`` in ``group``; it resumes at the group's committed offsets."""
        ...


def dead_letter_topic(topic: str) -> str:
    """Where messages of ``topic`` that cannot be handled go."""
    return f"{topic}.dlq"


def _header(headers: Headers, name: str) -> bytes | None:
    wanted = name.lower()
    found: bytes | None = None
    for key, value in headers:
        if key.lower() == wanted:
            found = value
    return found
