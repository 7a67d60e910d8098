"""Where a Discord ``/plan`` goes: an idea (source ``discord``) and its ``CommandEvent`` on
``discord.commands.incoming``, recorded with the interaction id as the inbox key, in one transaction."""

from __future__ import annotations

from facteur.bus.port import Message
from facteur.clock import Ids
from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaSource
from facteur.intake.discord import PlanRequest
from facteur.store.port import Delivery, DeliveryIds, IdeaDraft, IngestEffects, Store

DELIVERY_SOURCE = "discord"
ACTOR = "intake:discord"


class DiscordPlans:
    """The sink of :class:`facteur.intake.discord.DiscordIntake`."""

    def __init__(self, *, store: Store, ids: Ids, topic: str) -> None:
        self._store = store
        self._ids = ids
        self._topic = topic

    async def __call__(self, request: PlanRequest) -> None:
        message = Message(
            topic=self._topic,
            key=request.key.encode(),
            value=request.event,
            headers=tuple((name, value.encode()) for name, value in request.headers.items()),
        )

        def effects(ids: DeliveryIds) -> IngestEffects:
            events = []
            if ids.idea_created:
                events.append(
                    NewEvent(
                        kind="idea.registered",
                        actor=ACTOR,
                        payload={"source": IdeaSource.DISCORD.value, "title": request.title},
                        idea_id=ids.idea_id,
                    )
                )
            return IngestEffects(
                response={"ideaId": None if ids.idea_id is None else str(ids.idea_id)},
                events=events,
                messages=[message],
            )

        await self._store.record_delivery(
            Delivery(
                source=DELIVERY_SOURCE,
                delivery_id=request.interaction_id,
                received_at=request.issued_at,
                idea=IdeaDraft(
                    id=self._ids.new_id(),
                    source=IdeaSource.DISCORD,
                    source_ref=f"discord:{request.interaction_id}",
                    repository="",
                    title=request.title,
                    initiator=request.username or request.user_id,
                    spec={
                        "body": request.content,
                        "guild_id": request.guild_id,
                        "channel_id": request.channel_id,
                        "user_id": request.user_id,
                        "command_id": request.command_id,
                    },
                ),
                effects=effects,
            )
        )
