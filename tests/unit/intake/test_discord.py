"""Discord interactions intake: signature, PING, /plan and its modal, the CommandEvent handed to the sink."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.datastructures import Headers

from facteur.errors import StoreUnavailable
from facteur.intake.discord import DiscordAnswer, DiscordIntake, PlanRequest, plan_title
from facteur.intake.discord_signature import verify_signature
from facteur.proto.proompteng.facteur.v1 import contract_pb2 as pb
from facteur.settings import DiscordSettings
from tests.support.fakes import FakeClock

TIMESTAMP = "1795435200"
CONTENT = "Add a /status command\n\nIt should report the last run of each idea."


class Signer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.public_hex = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def sign(self, timestamp: str, body: bytes) -> str:
        return self.key.sign(timestamp.encode() + body).hex()

    def headers(self, body: bytes, timestamp: str = TIMESTAMP) -> dict[str, str]:
        return {"X-Signature-Ed25519": self.sign(timestamp, body), "X-Signature-Timestamp": timestamp}


class Sink:
    def __init__(self, error: Exception | None = None) -> None:
        self.requests: list[PlanRequest] = []
        self.error = error

    async def __call__(self, request: PlanRequest) -> None:
        if self.error is not None:
            raise self.error
        self.requests.append(request)


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def sink() -> Sink:
    return Sink()


def make_intake(signer: Signer, sink: Sink, clock: FakeClock, **settings: Any) -> DiscordIntake:
    values: dict[str, Any] = {"public_key": signer.public_hex, "application_id": "4242"} | settings
    return DiscordIntake(settings=DiscordSettings(**values), clock=clock, sink=sink)


@pytest.fixture
def intake(signer: Signer, sink: Sink, clock: FakeClock) -> DiscordIntake:
    return make_intake(signer, sink, clock)


async def send(intake: DiscordIntake, signer: Signer, document: Any) -> DiscordAnswer:
    body = json.dumps(document).encode()
    return await intake.handle(body, signer.headers(body))


def command(name: str = "plan", command_id: str | None = "777") -> dict[str, Any]:
    data: dict[str, Any] = {"name": name, "type": 1}
    if command_id is not None:
        data["id"] = command_id
    return {"type": 2, "id": "100", "application_id": "4242", "token": "tok", "data": data}


def modal_submit(content: str = CONTENT, custom_id: str = "plan:777", **changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "type": 5,
        "id": "1300000000000000001",
        "application_id": "4242",
        "token": "interaction-token",
        "version": 1,
        "guild_id": "55",
        "channel_id": "66",
        "locale": "fr",
        "guild_locale": "en-US",
        "member": {
            "user": {"id": "77", "username": "ada", "global_name": "Ada L.", "discriminator": "0"},
            "roles": ["r1", "r2"],
        },
        "data": {
            "custom_id": custom_id,
            "components": [
                {"type": 1, "components": [{"type": 4, "custom_id": "content", "value": content}]}
            ],
        },
    }
    document.update(changes)
    return document


def message(content: str, ephemeral: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"content": content}
    if ephemeral:
        data["flags"] = 64
    return {"type": 4, "data": data}


# --- signature -------------------------------------------------------------------------------------------


def test_verify_signature_accepts_a_good_signature(signer: Signer) -> None:
    body = b'{"type":1}'
    assert verify_signature(signer.public_hex, signer.sign(TIMESTAMP, body), TIMESTAMP, body)


def test_verify_signature_rejects_tampering_and_other_keys(signer: Signer) -> None:
    body = b'{"type":1}'
    signature = signer.sign(TIMESTAMP, body)
    assert not verify_signature(signer.public_hex, signature, TIMESTAMP, b'{"type":2}')
    assert not verify_signature(signer.public_hex, signature, "1795435201", body)
    assert not verify_signature(Signer().public_hex, signature, TIMESTAMP, body)


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        ("zz" * 32, "00" * 64),
        ("00" * 31, "00" * 64),
        ("ab" * 32, "00" * 63),
        ("ab" * 32, " " + "00" * 63 + " "),
        ("ab" * 32, "0g" * 64),
        ("", ""),
        ("ab" * 32 + "\n", "00" * 64),
    ],
)
def test_verify_signature_is_false_on_malformed_hex(public_key: str, signature: str) -> None:
    assert verify_signature(public_key, signature, TIMESTAMP, b"{}") is False


def test_verify_signature_is_false_on_an_unencodable_timestamp(signer: Signer) -> None:
    assert verify_signature(signer.public_hex, signer.sign(TIMESTAMP, b"{}"), "\ud800", b"{}") is False


async def test_without_a_public_key_interactions_are_not_configured(
    signer: Signer, sink: Sink, clock: FakeClock
) -> None:
    intake = DiscordIntake(settings=DiscordSettings(), clock=clock, sink=sink)
    answer = await send(intake, signer, {"type": 1})
    assert answer.status == 503
    assert answer.body["error"] == "not configured"
    assert "discord.public_key" in answer.body["detail"]


@pytest.mark.parametrize(
    ("drop", "named"),
    [("X-Signature-Ed25519", "X-Signature-Ed25519"), ("X-Signature-Timestamp", "X-Signature-Timestamp")],
)
async def test_a_missing_signature_header_is_401(
    intake: DiscordIntake, signer: Signer, drop: str, named: str
) -> None:
    body = b'{"type":1}'
    headers = signer.headers(body)
    del headers[drop]
    answer = await intake.handle(body, headers)
    assert answer.status == 401
    assert set(answer.body) == {"error", "detail"}
    assert named in answer.body["detail"]


async def test_a_bad_signature_is_401(intake: DiscordIntake, signer: Signer) -> None:
    body = b'{"type":1}'
    for signature in ("00" * 64, "not hex", Signer().sign(TIMESTAMP, body)):
        answer = await intake.handle(
            body, {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": TIMESTAMP}
        )
        assert answer.status == 401, signature
        assert answer.body["error"] == "unauthorized"


async def test_a_tampered_body_is_401(intake: DiscordIntake, signer: Signer) -> None:
    headers = signer.headers(b'{"type":1}')
    answer = await intake.handle(b'{"type":2}', headers)
    assert answer.status == 401


async def test_a_bad_timestamp_header_is_401(intake: DiscordIntake, signer: Signer) -> None:
    body = b'{"type":1}'
    # signed, but not a Unix timestamp
    answer = await intake.handle(body, signer.headers(body, timestamp="yesterday"))
    assert answer.status == 401
    assert "X-Signature-Timestamp" in answer.body["detail"]
    # a timestamp other than the one that was signed
    headers = signer.headers(body) | {"X-Signature-Timestamp": "1795435299"}
    assert (await intake.handle(body, headers)).status == 401


async def test_headers_are_matched_whatever_their_case(intake: DiscordIntake, signer: Signer) -> None:
    body = b'{"type":1}'
    # what the route passes: Starlette's Headers, which look names up whatever their case
    headers = Headers({key.lower(): value for key, value in signer.headers(body).items()})
    assert await intake.handle(body, headers) == DiscordAnswer(200, {"type": 1})


# --- body ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b"{not json", b"\xff\xfe", b"", b"[" * 100_000], ids=["syntax", "bytes", "empty", "deep"]
)
async def test_a_body_that_is_not_json_is_400(intake: DiscordIntake, signer: Signer, body: bytes) -> None:
    answer = await intake.handle(body, signer.headers(body))
    assert answer.status == 400
    assert answer.body == {"error": "invalid payload", "detail": "the body is not valid JSON"}


@pytest.mark.parametrize("document", [[1], "ping", 1, None])
async def test_a_body_that_is_not_an_object_is_400(
    intake: DiscordIntake, signer: Signer, document: Any
) -> None:
    answer = await send(intake, signer, document)
    assert answer.status == 400
    assert answer.body["detail"] == "the body must be a JSON object"


# --- PING and commands -----------------------------------------------------------------------------------


async def test_ping_gets_pong(intake: DiscordIntake, signer: Signer, sink: Sink) -> None:
    assert await send(intake, signer, {"type": 1, "id": "1"}) == DiscordAnswer(200, {"type": 1})
    assert sink.requests == []


async def test_plan_opens_the_modal(intake: DiscordIntake, signer: Signer, sink: Sink) -> None:
    answer = await send(intake, signer, command())
    assert answer == DiscordAnswer(
        200,
        {
            "type": 9,
            "data": {
                "custom_id": "plan:777",
                "title": "Request Planning Run",
                "components": [
                    {
                        "type": 1,
                        "components": [
                            {
                                "type": 4,
                                "custom_id": "content",
                                "label": "Content",
                                "style": 2,
                                "min_length": 10,
                                "max_length": 4000,
                                "required": True,
                            }
                        ],
                    }
                ],
            },
        },
    )
    assert sink.requests == []


async def test_another_command_is_unsupported(intake: DiscordIntake, signer: Signer) -> None:
    answer = await send(intake, signer, command("status"))
    assert answer == DiscordAnswer(200, message("Unsupported command. Try `/plan`."))


async def test_a_command_without_an_id_is_invalid(intake: DiscordIntake, signer: Signer) -> None:
    for command_id in (None, ""):
        answer = await send(intake, signer, command(command_id=command_id))
        assert answer == DiscordAnswer(200, message("Command payload invalid"))


@pytest.mark.parametrize("kind", [3, 4, 99])
async def test_other_interaction_types_are_unsupported(
    intake: DiscordIntake, signer: Signer, kind: int
) -> None:
    answer = await send(intake, signer, {"type": kind, "id": "1", "data": {}})
    assert answer == DiscordAnswer(200, message("Unsupported interaction type"))


# --- modal submit ----------------------------------------------------------------------------------------


async def test_a_submitted_plan_reaches_the_sink_as_a_command_event(
    intake: DiscordIntake, signer: Signer, sink: Sink, clock: FakeClock
) -> None:
    clock.current = datetime(2026, 11, 21, 12, 0, 0, 123456, tzinfo=UTC)
    answer = await send(intake, signer, modal_submit())
    assert answer == DiscordAnswer(
        200, message("Planning request received. Facteur will execute the workflow shortly.")
    )
    [request] = sink.requests
    assert request.interaction_id == request.key == "1300000000000000001"
    assert request.application_id == "4242"
    assert request.command_id == "777"
    assert request.title == "Add a /status command"
    assert request.content == CONTENT
    assert (request.user_id, request.username, request.global_name) == ("77", "ada", "Ada L.")
    assert (request.guild_id, request.channel_id) == ("55", "66")
    assert request.issued_at == clock.current
    assert request.headers == {
        "content-type": "application/x-protobuf",
        "x-discord-interaction-type": "5",
        "x-discord-command-name": "plan",
        "x-discord-command-id": "777",
        "x-discord-application-id": "4242",
        "x-discord-guild-id": "55",
        "x-discord-channel-id": "66",
        "x-discord-user-id": "77",
    }

    event = pb.CommandEvent.FromString(request.event)
    assert event.provider == "discord"
    assert event.interaction_id == "1300000000000000001"
    assert event.application_id == "4242"
    assert event.command == "plan"
    assert event.command_id == "777"
    assert event.version == 1
    assert event.token == "interaction-token"
    assert (event.guild_id, event.channel_id) == ("55", "66")
    assert event.user == pb.DiscordUser(id="77", username="ada", global_name="Ada L.", discriminator="0")
    assert event.member == pb.DiscordMember(id="77", roles=["r1", "r2"])
    assert (event.locale, event.guild_locale) == ("fr", "en-US")
    assert event.response.type == 4
    assert event.response.HasField("flags")
    assert event.response.flags == 64
    assert event.timestamp == "2026-11-21T12:00:00.123Z"
    assert (event.correlation_id, event.trace_id) == ("", "")
    assert set(event.options) == {"content", "payload"}
    assert event.options["content"] == CONTENT
    assert json.loads(event.options["payload"]) == {
        "stage": "planning",
        "prompt": CONTENT,
        "title": "Add a /status command",
        "repository": "",
        "issueNumber": "",
        "postToGithub": False,
        "runId": "1300000000000000001",
        "issuedAt": "2026-11-21T12:00:00.123Z",
        "guildId": "55",
        "channelId": "66",
        "user": {"id": "77", "username": "ada", "globalName": "Ada L."},
    }


async def test_a_plan_from_a_direct_message_uses_the_user_and_omits_the_guild(
    signer: Signer, sink: Sink, clock: FakeClock
) -> None:
    intake = make_intake(signer, sink, clock, ephemeral=False)
    document = modal_submit(user={"id": "88", "username": "grace"})
    for key in ("member", "guild_id", "guild_locale", "locale", "version"):
        del document[key]
    answer = await send(intake, signer, document)
    assert answer == DiscordAnswer(
        200, message("Planning request received. Facteur will execute the workflow shortly.", ephemeral=False)
    )
    [request] = sink.requests
    assert (request.user_id, request.global_name, request.guild_id) == ("88", None, None)
    assert "x-discord-guild-id" not in request.headers
    assert request.headers["x-discord-user-id"] == "88"
    event = pb.CommandEvent.FromString(request.event)
    assert not event.HasField("member")
    assert event.user == pb.DiscordUser(id="88", username="grace")
    assert event.guild_id == ""
    assert event.version == 0
    assert not event.response.HasField("flags")
    payload = json.loads(event.options["payload"])
    assert "guildId" not in payload
    assert payload["user"] == {"id": "88", "username": "grace"}


async def test_content_is_trimmed_and_a_long_first_line_is_cut_for_the_title(
    intake: DiscordIntake, signer: Signer, sink: Sink
) -> None:
    content = "  " + "x" * 300 + "\nsecond line  \n"
    await send(intake, signer, modal_submit(content))
    [request] = sink.requests
    assert request.content == content.strip()
    assert len(request.title) == 120
    assert request.title == "x" * 119 + "…"


def test_plan_title() -> None:
    assert plan_title("short title\nbody") == "short title"
    assert plan_title("y" * 120) == "y" * 120
    assert plan_title("y" * 121) == "y" * 119 + "…"


@pytest.mark.parametrize("content", ["too short", "   padded   ", "z" * 4001])
async def test_content_outside_10_to_4000_characters_is_refused(
    intake: DiscordIntake, signer: Signer, sink: Sink, content: str
) -> None:
    answer = await send(intake, signer, modal_submit(content))
    assert answer == DiscordAnswer(200, message("Content must be between 10 and 4000 characters."))
    assert sink.requests == []


async def test_content_of_4000_characters_is_accepted(
    intake: DiscordIntake, signer: Signer, sink: Sink
) -> None:
    await send(intake, signer, modal_submit("w" * 4000))
    assert len(sink.requests) == 1


@pytest.mark.parametrize("custom_id", ["review:777", "plan", "plan:", "planning:777", ""])
async def test_a_form_other_than_plan_is_unsupported(
    intake: DiscordIntake, signer: Signer, sink: Sink, custom_id: str
) -> None:
    answer = await send(intake, signer, modal_submit(custom_id=custom_id))
    assert answer == DiscordAnswer(200, message("Unsupported form. Try `/plan`."))
    assert sink.requests == []


async def test_a_label_component_holding_the_text_input_is_read(
    intake: DiscordIntake, signer: Signer, sink: Sink
) -> None:
    document = modal_submit()
    document["data"]["components"] = [
        {"type": 18, "component": {"type": 4, "custom_id": "content", "value": CONTENT}}
    ]
    await send(intake, signer, document)
    assert sink.requests[0].content == CONTENT


async def test_the_sinks_store_unavailable_propagates(signer: Signer, clock: FakeClock) -> None:
    intake = make_intake(signer, Sink(StoreUnavailable("database down")), clock)
    with pytest.raises(StoreUnavailable):
        await send(intake, signer, modal_submit())


async def test_the_content_is_not_logged(
    intake: DiscordIntake, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = "confidential roadmap item that must stay out of logs"
    await send(intake, signer, modal_submit(secret_text))
    assert "content_chars=" in caplog.text
    assert secret_text not in caplog.text
    assert "interaction-token" not in caplog.text


# --- malformed fields in signed payloads -----------------------------------------------------------------


def _set(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    target: Any = document
    for part in parents:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if value is _DELETE:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"id": "1"}, "type"),
        ({"type": "1"}, "type"),
        ({"type": True}, "type"),
        ({"type": 1.5}, "type"),
        ({"type": 2}, "data"),
        ({"type": 2, "data": []}, "data"),
        (_set(command(), "data.name", _DELETE), "data.name"),
        (_set(command(), "data.name", 7), "data.name"),
        (_set(command(), "data.id", 777), "data.id"),
        ({"type": 5, "id": "1"}, "data"),
        (_set(modal_submit(), "data.custom_id", 12), "data.custom_id"),
        (_set(modal_submit(), "data.custom_id", _DELETE), "data.custom_id"),
        (_set(modal_submit(), "data.components", {"a": 1}), "data.components"),
        (_set(modal_submit(), "data.components", []), "data.components"),
        (_set(modal_submit(), "data.components.0", "row"), "data.components[0]"),
        (_set(modal_submit(), "data.components.0.components", "x"), "data.components[0].components"),
        (
            _set(modal_submit(), "data.components.0.components.0.value", 5),
            "data.components[0].components[0].value",
        ),
        (
            _set(modal_submit(), "data.components.0.components.0.value", _DELETE),
            "data.components[0].components[0].value",
        ),
        (_set(modal_submit(), "id", 1300), "id"),
        (_set(modal_submit(), "id", _DELETE), "id"),
        (_set(modal_submit(), "application_id", _DELETE), "application_id"),
        (_set(modal_submit(), "guild_id", 55), "guild_id"),
        (_set(modal_submit(), "token", ["t"]), "token"),
        (_set(modal_submit(), "locale", 1), "locale"),
        (_set(modal_submit(), "version", "1"), "version"),
        (_set(modal_submit(), "version", 2**32), "version"),
        (_set(modal_submit(), "member", "ada"), "member"),
        (_set(modal_submit(), "member.user.id", 77), "member.user.id"),
        (_set(modal_submit(), "member.user.username", _DELETE), "member.user.username"),
        (_set(modal_submit(), "member.roles", "admin"), "member.roles"),
        (_set(modal_submit(), "member.roles", [1]), "member.roles[0]"),
        (_set(modal_submit(), "member", _DELETE), "user"),
        (_set(modal_submit(), "member.user", _DELETE), "user"),
        (
            _set(modal_submit(), "data.components.0.components.0.value", "lone \ud800 surrogate here"),
            "data.components[0].components[0].value",
        ),
    ],
)
async def test_a_malformed_field_is_400_naming_it(
    intake: DiscordIntake, signer: Signer, sink: Sink, document: dict[str, Any], named: str
) -> None:
    answer = await send(intake, signer, document)
    assert answer.status == 400, answer
    assert answer.body["error"] == "invalid payload"
    assert f"field {named} " in answer.body["detail"]
    assert sink.requests == []
