"""The Store contract for deliveries that start no run (``record_delivery``) and for inbox aliases."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from facteur.bus.port import Message
from facteur.domain.events import NewEvent, verify_chain
from facteur.domain.ideas import IdeaSource
from facteur.store.port import Delivery, DeliveryIds, IdeaDraft, IngestEffects, Store
from tests.contract.test_store import make_ingest
from tests.support.fakes import FakeClock


def make_delivery(
    clock: FakeClock,
    *,
    delivery_id: str = "gh-1",
    source_ref: str | None = None,
    messages: int = 1,
) -> Delivery:
    def effects(ids: DeliveryIds) -> IngestEffects:
        return IngestEffects(
            response={"status": "ignored", "idea": None if ids.idea_id is None else str(ids.idea_id)},
            events=[
                NewEvent(
                    kind="test.recorded",
                    actor="test",
                    payload={"delivery_id": delivery_id, "created": ids.idea_created},
                    idea_id=ids.idea_id,
                )
            ],
            messages=[
                Message(topic="github.webhook.events", key=delivery_id.encode(), value=b"{}", headers=())
                for _ in range(messages)
            ],
        )

    idea = None
    if source_ref is not None:
        idea = IdeaDraft(
            id=uuid.uuid4(),
            source=IdeaSource.DISCORD,
            source_ref=source_ref,
            repository="",
            title="Plan the thing",
            initiator="someone",
            priority=1,
            spec={"goal": "g"},
        )
    return Delivery(
        source="github", delivery_id=delivery_id, received_at=clock.now(), idea=idea, effects=effects
    )


async def test_record_delivery_stores_answer_events_and_messages_once(store: Store, clock: FakeClock) -> None:
    first = await store.record_delivery(make_delivery(clock))
    assert not first.duplicate
    assert first.ids is not None and first.ids.idea_id is None
    assert first.messages == 1
    assert await store.find_delivery("github", "gh-1") == {"status": "ignored", "idea": None}

    again = await store.record_delivery(make_delivery(clock, messages=3))
    assert again.duplicate
    assert again.response == {"status": "ignored", "idea": None}
    assert len(await store.pending_outbox(10)) == 1
    events = await store.list_events()
    assert [e.kind for e in events] == ["test.recorded"]
    assert verify_chain(events) is None


async def test_record_delivery_creates_the_idea_it_names_once(store: Store, clock: FakeClock) -> None:
    first = await store.record_delivery(make_delivery(clock, delivery_id="i-1", source_ref="guild/1"))
    second = await store.record_delivery(make_delivery(clock, delivery_id="i-2", source_ref="guild/1"))
    assert first.ids is not None and second.ids is not None
    assert first.ids.idea_created and not second.ids.idea_created
    assert first.ids.idea_id == second.ids.idea_id
    assert first.ids.idea_id is not None
    idea = await store.get_idea(first.ids.idea_id)
    assert (idea.source, idea.source_ref, idea.priority, idea.title) == (
        IdeaSource.DISCORD,
        "guild/1",
        1,
        "Plan the thing",
    )


async def test_concurrent_records_of_one_delivery_write_once(store: Store, clock: FakeClock) -> None:
    results = await asyncio.gather(*(store.record_delivery(make_delivery(clock)) for _ in range(8)))
    assert sum(not r.duplicate for r in results) == 1
    assert len(await store.pending_outbox(100)) == 1


async def test_a_delivery_ingested_before_is_a_duplicate_for_record(store: Store, clock: FakeClock) -> None:
    ingest = make_ingest(clock, delivery_id="shared")
    await store.ingest(dataclasses.replace(ingest, source="github"))
    result = await store.record_delivery(make_delivery(clock, delivery_id="shared"))
    assert result.duplicate
    assert "runId" in result.response


async def test_ingest_aliases_answer_with_the_same_response(store: Store, clock: FakeClock) -> None:
    ingest = dataclasses.replace(
        make_ingest(clock, delivery_id="acme/widgets#3#comment-9-2026"),
        source="github_review",
        aliases=[("github", "gh-delivery-1")],
    )
    result = await store.ingest(ingest)
    assert not result.duplicate
    assert await store.find_delivery("github", "gh-delivery-1") == result.response

    # the same comment through another delivery: the review key is taken
    again = dataclasses.replace(
        make_ingest(clock, delivery_id="acme/widgets#3#comment-9-2026"),
        source="github_review",
        aliases=[("github", "gh-delivery-2")],
    )
    replay = await store.ingest(again)
    assert replay.duplicate
    assert await store.find_delivery("github", "gh-delivery-2") is None


async def test_an_alias_recorded_before_is_kept(store: Store, clock: FakeClock) -> None:
    await store.record_delivery(make_delivery(clock, delivery_id="gh-7"))
    ingest = dataclasses.replace(
        make_ingest(clock, delivery_id="review-key"), source="github_review", aliases=[("github", "gh-7")]
    )
    result = await store.ingest(ingest)
    assert not result.duplicate
    assert await store.find_delivery("github", "gh-7") == {"status": "ignored", "idea": None}
