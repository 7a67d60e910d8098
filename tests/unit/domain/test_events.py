"""The audit chain: hashing and verification."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from facteur.domain.events import GENESIS_HASH, Event, NewEvent, canonical_json, seal, verify_chain

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def chain(count: int) -> list[Event]:
    events: list[Event] = []
    prev = GENESIS_HASH
    for n in range(count):
        event = seal(
            NewEvent(kind="test", actor="me", payload={"n": n}, idea_id=uuid.UUID(int=n)),
            seq=n + 1,
            prev_hash=prev,
            created_at=T0 + timedelta(seconds=n),
        )
        events.append(event)
        prev = event.hash
    return events


def test_hash_is_sha256_of_prev_hash_and_canonical_document() -> None:
    [event] = chain(1)
    document = {
        "seq": 1,
        "kind": "test",
        "actor": "me",
        "payload": {"n": 0},
        "idea_id": str(uuid.UUID(int=0)),
        "task_id": None,
        "run_id": None,
        "created_at": "2026-11-21T12:00:00.000000Z",
    }
    assert event.hash == hashlib.sha256(GENESIS_HASH.encode() + canonical_json(document)).hexdigest()


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'
    assert canonical_json({"é": "ü"}) == '{"é":"ü"}'.encode()


def test_intact_chain_verifies() -> None:
    assert verify_chain(chain(5)) is None
    assert verify_chain([]) is None


def test_changed_payload_is_found() -> None:
    events = chain(5)
    events[2] = dataclasses.replace(events[2], payload={"n": 99})
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 3
    assert "hash" in broken.reason


def test_removed_event_is_found() -> None:
    events = chain(5)
    del events[1]
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 3


def test_rehashed_event_breaks_the_next_link() -> None:
    events = chain(4)
    forged = seal(
        NewEvent(kind="test", actor="mallory", payload={"n": 1}, idea_id=uuid.UUID(int=1)),
        seq=2,
        prev_hash=events[0].hash,
        created_at=events[1].created_at,
    )
    events[1] = forged
    broken = verify_chain(events)
    assert broken is not None
    assert broken.seq == 3
    assert "prev_hash" in broken.reason


def test_payload_is_normalised_to_json() -> None:
    event = seal(
        NewEvent(kind="k", actor="a", payload={"when": T0, "tuple": (1, 2)}),
        seq=1,
        prev_hash=GENESIS_HASH,
        created_at=T0,
    )
    assert event.payload == {"when": "2026-11-21 12:00:00+00:00", "tuple": [1, 2]}
    assert verify_chain([event]) is None
