"""POST /webhooks/discord through the app: a /plan form becomes an idea and a CommandEvent in the outbox,
once per interaction; bad signatures and payloads get 4xx."""

from __future__ import annotations

import json
import uuid

from facteur.domain.ideas import IdeaSource
from facteur.proto.proompteng.facteur.v1 import contract_pb2 as pb
from facteur.settings import load_settings
from tests.support.app import running_app
from tests.unit.intake.test_discord import CONTENT, Signer, modal_submit


async def test_plan_form_becomes_an_idea_and_a_command_event_once(database_url: str) -> None:
    signer = Signer()
    settings = load_settings(
        environ={
            "FACTEUR_DATABASE__URL": database_url,
            "FACTEUR_EXECUTOR__KIND": "none",
            "FACTEUR_BUS__OUTBOX__RELAY_ENABLED": "false",
            "DISCORD_PUBLIC_KEY": signer.public_hex,
            "DISCORD_APPLICATION_ID": "4242",
        }
    )
    async with running_app(settings) as running:
        client, store = running.client, running.runtime.store
        body = json.dumps(modal_submit()).encode()
        response = await client.post("/webhooks/discord", content=body, headers=signer.headers(body))
        assert response.status_code == 200
        assert response.json()["type"] == 4
        assert response.json()["data"]["flags"] == 64

        again = await client.post("/webhooks/discord", content=body, headers=signer.headers(body))
        assert again.status_code == 200

        entries = await store.pending_outbox(100)
        assert [e.message.topic for e in entries] == ["discord.commands.incoming"]
        event = pb.CommandEvent.FromString(entries[0].message.value)
        assert (event.provider, event.command, event.options["content"]) == ("discord", "plan", CONTENT)
        assert entries[0].message.key == event.interaction_id.encode()
        assert entries[0].message.header("content-type") == b"application/x-protobuf"

        stored = await store.find_delivery("discord", event.interaction_id)
        assert stored is not None
        idea = await store.get_idea(uuid.UUID(stored["ideaId"]))
        assert (idea.source, idea.title) == (IdeaSource.DISCORD, CONTENT.splitlines()[0])
        assert [e.kind for e in await store.list_events()] == ["idea.registered"]

        forged = await client.post(
            "/webhooks/discord", content=body.replace(b"status", b"statue"), headers=signer.headers(body)
        )
        assert forged.status_code == 401
        assert forged.json()["error"] == "unauthorized"
        garbage = b"{nope"
        response = await client.post("/webhooks/discord", content=garbage, headers=signer.headers(garbage))
        assert response.status_code == 400
        assert response.json()["error"] == "invalid payload"
        ping = json.dumps({"type": 1, "id": "1", "application_id": "4242"}).encode()
        response = await client.post("/webhooks/discord", content=ping, headers=signer.headers(ping))
        assert response.json() == {"type": 1}
        assert len(await store.pending_outbox(100)) == 1


async def test_without_a_public_key_interactions_are_refused(sqlite_url: str) -> None:
    settings = load_settings(environ={"FACTEUR_DATABASE__URL": sqlite_url, "FACTEUR_EXECUTOR__KIND": "none"})
    async with running_app(settings) as running:
        response = await running.client.post("/webhooks/discord", content=b"{}")
        assert response.status_code == 503
        # refused for the missing key, not because the store is not ready
        assert response.json()["error"] == "not configured"
        assert "discord.public_key" in response.json()["detail"]
