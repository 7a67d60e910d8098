"""Audit events: an append-only record of every decision, chained by hashes.

``hash = sha256(prev_hash || canonical_json(event))`` where ``prev_hash`` is the previous event's hash
(64 hex characters; the first event chains to :data:`GENESIS_HASH`). Changing, removing or reordering any
stored event breaks every hash after it, which :func:`verify_chain` reports.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEvent:
    """An event about to be appended."""

    kind: str
    actor: str
    payload: Mapping[str, Any]
    idea_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    seq: int
    kind: str
    actor: str
    payload: JsonObject
    idea_id: uuid.UUID | None
    task_id: uuid.UUID | None
    run_id: uuid.UUID | None
    created_at: datetime
    prev_hash: str
    hash: str


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON: sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_document(
    *,
    seq: int,
    kind: str,
    actor: str,
    payload: Mapping[str, Any],
    idea_id: uuid.UUID | None,
    task_id: uuid.UUID | None,
    run_id: uuid.UUID | None,
    created_at: datetime,
) -> JsonObject:
    """The hashed content of an event."""
    return {
        "seq": seq,
        "kind": kind,
        "actor": actor,
        "payload": dict(payload),
        "idea_id": str(idea_id) if idea_id else None,
        "task_id": str(task_id) if task_id else None,
        "run_id": str(run_id) if run_id else None,
        "created_at": _timestamp(created_at),
    }


def chain_hash(prev_hash: str, document: Mapping[str, Any]) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical_json(document)).hexdigest()


def seal(new: NewEvent, *, seq: int, prev_hash: str, created_at: datetime) -> Event:
    """Give an event its place in the chain."""
    payload: JsonObject = json.loads(canonical_json(dict(new.payload)))
    document = event_document(
        seq=seq,
        kind=new.kind,
        actor=new.actor,
        payload=payload,
        idea_id=new.idea_id,
        task_id=new.task_id,
        run_id=new.run_id,
        created_at=created_at,
    )
    return Event(
        seq=seq,
        kind=new.kind,
        actor=new.actor,
        payload=payload,
        idea_id=new.idea_id,
        task_id=new.task_id,
        run_id=new.run_id,
        created_at=created_at,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, document),
    )


@dataclass(frozen=True, slots=True)
class ChainBreak:
    seq: int
    reason: str


class ChainVerifier:
    """Recompute the chain event by event (so that a long chain can be read in pages)."""

    def __init__(self) -> None:
        self.last_seq = 0
        self.last_hash = GENESIS_HASH

    def feed(self, event: Event) -> ChainBreak | None:
        """Check the next event; the break it shows, or None (then it becomes the last verified one)."""
        expected = self.last_seq + 1
        if event.seq != expected:
            return ChainBreak(event.seq, f"expected event #{expected}, found #{event.seq}")
        if event.prev_hash != self.last_hash:
            return ChainBreak(event.seq, "prev_hash does not match the previous event's hash")
        document = event_document(
            seq=event.seq,
            kind=event.kind,
            actor=event.actor,
            payload=event.payload,
            idea_id=event.idea_id,
            task_id=event.task_id,
            run_id=event.run_id,
            created_at=event.created_at,
        )
        if chain_hash(event.prev_hash, document) != event.hash:
            return ChainBreak(event.seq, "content does not match its hash")
        self.last_seq, self.last_hash = event.seq, event.hash
        return None

    def finish(self, head_seq: int, head_hash: str) -> ChainBreak | None:
        """Compare the last verified event with the chain's recorded head (catches a removed tail)."""
        if head_seq != self.last_seq:
            return ChainBreak(
                self.last_seq + 1,
                f"the chain's head is event #{head_seq}, but the events end at #{self.last_seq}",
            )
        if head_hash != self.last_hash:
            return ChainBreak(head_seq, "the chain's head hash does not match the last event's hash")
        return None


def verify_chain(events: Iterable[Event]) -> ChainBreak | None:
    """Recompute the chain in order; the first broken link, or None when it is intact."""
    verifier = ChainVerifier()
    for event in events:
        broken = verifier.feed(event)
        if broken is not None:
            return broken
    return None
