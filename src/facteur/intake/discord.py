"""Discord interactions: the logic behind ``POST /webhooks/discord`` (the role Froussard plays in the seeds).

A request is checked against the application's Ed25519 public key, then answered by interaction type:
a PING gets a PONG; the ``/plan`` slash command opens a modal asking for the request's content; the
submitted modal becomes a ``proompteng.facteur.v1.CommandEvent`` handed to the sink (which records it and
queues it for ``discord.commands.incoming``) before Discord is told that the request was received.

Everything here is pure logic: the route passes the raw body and the headers in and sends back
:class:`DiscordAnswer`. Text that people typed is untrusted: it is never logged, only its length.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from facteur.clock import Clock
from facteur.errors import InvalidPayload
from facteur.intake.discord_fields import Fields
from facteur.intake.discord_signature import verify_signature
from facteur.proto.proompteng.facteur.v1 import contract_pb2 as pb
from facteur.settings import DiscordSettings

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-Ed25519"
TIMESTAMP_HEADER = "X-Signature-Timestamp"

# interaction types (what Discord sends)
PING = 1
APPLICATION_COMMAND = 2
MODAL_SUBMIT = 5
# interaction callback types (what we answer)
PONG = 1
CHANNEL_MESSAGE = 4
MODAL = 9
#: message flag: only the person who interacted sees the message
EPHEMERAL = 64

PLAN_COMMAND = "plan"
CONTENT_FIELD = "content"
CONTENT_MIN = 10
CONTENT_MAX = 4000
TITLE_MAX = 120

RECEIVED = "Planning request received. Facteur will execute the workflow shortly."
UNSUPPORTED_COMMAND = "Unsupported command. Try `/plan`."
UNSUPPORTED_MODAL = "Unsupported form. Try `/plan`."
UNSUPPORTED_TYPE = "Unsupported interaction type"
COMMAND_INVALID = "Command payload invalid"
CONTENT_LENGTH = f"Content must be between {CONTENT_MIN} and {CONTENT_MAX} characters."


@dataclass(frozen=True, slots=True)
class DiscordAnswer:
    """The HTTP answer to an interaction: its status and its JSON body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """A submitted ``/plan`` form, ready to be recorded and published on ``discord.commands.incoming``.

    ``event`` is the serialized ``proompteng.facteur.v1.CommandEvent``; ``headers`` are the message's headers;
    the message key is the interaction id.
    """

    interaction_id: str
    application_id: str
    command_id: str
    title: str
    content: str
    user_id: str
    username: str
    global_name: str | None
    guild_id: str | None
    channel_id: str | None
    issued_at: datetime
    event: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The message key: the interaction id."""
        return self.interaction_id


PlanSink = Callable[[PlanRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _User:
    id: str
    username: str
    global_name: str | None
    discriminator: str | None


class DiscordIntake:
    def __init__(self, *, settings: DiscordSettings, clock: Clock, sink: PlanSink) -> None:
        self._settings = settings
        self._clock = clock
        self._sink = sink

    async def handle(self, raw_body: bytes, headers: Mapping[str, str]) -> DiscordAnswer:
        """Check and answer one interaction; the sink's `StoreUnavailable` propagates (the route: 503).

        ``headers`` must look names up case-insensitively, as Starlette's ``Headers`` do.
        """
        public_key = self._settings.public_key
        if not public_key:
            return _error(
                503, "not configured", "Discord interactions need discord.public_key (env DISCORD_PUBLIC_KEY)"
            )
        signature = headers.get(SIGNATURE_HEADER)
        timestamp = headers.get(TIMESTAMP_HEADER)
        if not signature:
            return _rejected(f"missing {SIGNATURE_HEADER} header")
        if not timestamp:
            return _rejected(f"missing {TIMESTAMP_HEADER} header")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return _rejected(f"{TIMESTAMP_HEADER} must be a Unix timestamp")
        if not verify_signature(public_key, signature, timestamp, raw_body):
            return _rejected("the request signature does not match discord.public_key")
        try:
            document = json.loads(raw_body)
        except (ValueError, RecursionError):
            return _invalid("the body is not valid JSON")
        if not isinstance(document, dict):
            return _invalid("the body must be a JSON object")
        try:
            return await self._answer(Fields(document))
        except InvalidPayload as exc:
            return _invalid(exc.message)

    async def _answer(self, interaction: Fields) -> DiscordAnswer:
        kind = interaction.integer("type")
        logger.info(
            "discord_interaction: type=%s id=%s", kind, _short(interaction.optional_string("id") or "")
        )
        if kind == PING:
            return DiscordAnswer(200, {"type": PONG})
        if kind == APPLICATION_COMMAND:
            return self._command(interaction.object("data"))
        if kind == MODAL_SUBMIT:
            return await self._modal_submit(interaction)
        return _message(UNSUPPORTED_TYPE, ephemeral=True)

    def _command(self, data: Fields) -> DiscordAnswer:
        name = data.string("name")
        if name != PLAN_COMMAND:
            return _message(UNSUPPORTED_COMMAND, ephemeral=True)
        command_id = data.optional_string("id")
        if not command_id:
            return _message(COMMAND_INVALID, ephemeral=True)
        return DiscordAnswer(200, plan_modal(command_id))

    async def _modal_submit(self, interaction: Fields) -> DiscordAnswer:
        data = interaction.object("data")
        prefix, _, command_id = data.string("custom_id").partition(":")
        if prefix != PLAN_COMMAND or not command_id:
            return _message(UNSUPPORTED_MODAL, ephemeral=True)
        content = _text_input(data, CONTENT_FIELD).strip()
        if not CONTENT_MIN <= len(content) <= CONTENT_MAX:
            return _message(CONTENT_LENGTH, ephemeral=True)

        interaction_id = interaction.string("id")
        application_id = interaction.string("application_id")
        guild_id = interaction.optional_string("guild_id") or None
        channel_id = interaction.optional_string("channel_id") or None
        member = interaction.optional_object("member")
        user = _user((member.optional_object("user") if member else None) or interaction.object("user"))
        issued_at = self._clock.now().astimezone(UTC)
        title = plan_title(content)
        payload = {
            "stage": "planning",
            "prompt": content,
            "title": title,
            "repository": "",
            "issueNumber": "",
            "postToGithub": False,
            "runId": interaction_id,
            "issuedAt": iso_timestamp(issued_at),
            **({"guildId": guild_id} if guild_id else {}),
            **({"channelId": channel_id} if channel_id else {}),
            "user": {
                "id": user.id,
                "username": user.username,
                **({"globalName": user.global_name} if user.global_name else {}),
            },
        }
        event = pb.CommandEvent(
            provider="discord",
            interaction_id=interaction_id,
            application_id=application_id,
            command=PLAN_COMMAND,
            command_id=command_id,
            version=_version(interaction),
            token=interaction.optional_string("token") or "",
            options={
                "content": content,
                "payload": json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
            },
            guild_id=guild_id or "",
            channel_id=channel_id or "",
            user=pb.DiscordUser(
                id=user.id,
                username=user.username,
                global_name=user.global_name or "",
                discriminator=user.discriminator or "",
            ),
            locale=interaction.optional_string("locale") or "",
            guild_locale=interaction.optional_string("guild_locale") or "",
            response=pb.Response(type=CHANNEL_MESSAGE, flags=EPHEMERAL if self._settings.ephemeral else None),
            timestamp=iso_timestamp(issued_at),
        )
        if member is not None:
            event.member.CopyFrom(pb.DiscordMember(id=user.id, roles=member.strings("roles")))
        headers = {
            "content-type": "application/x-protobuf",
            "x-discord-interaction-type": str(MODAL_SUBMIT),
            "x-discord-command-name": PLAN_COMMAND,
            "x-discord-command-id": command_id,
            "x-discord-application-id": application_id,
        }
        for name, value in (
            ("x-discord-guild-id", guild_id),
            ("x-discord-channel-id", channel_id),
            ("x-discord-user-id", user.id),
        ):
            if value:
                headers[name] = value
        request = PlanRequest(
            interaction_id=interaction_id,
            application_id=application_id,
            command_id=command_id,
            title=title,
            content=content,
            user_id=user.id,
            username=user.username,
            global_name=user.global_name,
            guild_id=guild_id,
            channel_id=channel_id,
            issued_at=issued_at,
            event=event.SerializeToString(),
            headers=headers,
        )
        logger.info(
            "discord_plan_received: interaction=%s user=%s guild=%s content_chars=%d",
            _short(interaction_id),
            _short(user.id),
            _short(guild_id or "-"),
            len(content),
        )
        await self._sink(request)
        return _message(RECEIVED, ephemeral=self._settings.ephemeral)


def plan_modal(command_id: str) -> dict[str, Any]:
    """The modal (callback type 9) that ``/plan`` opens."""
    return {
        "type": MODAL,
        "data": {
            "custom_id": f"{PLAN_COMMAND}:{command_id}",
            "title": "Request Planning Run",
            "components": [
                {
                    "type": 1,
                    "components": [
                        {
                            "type": 4,
                            "custom_id": CONTENT_FIELD,
                            "label": "Content",
                            "style": 2,
                            "min_length": CONTENT_MIN,
                            "max_length": CONTENT_MAX,
                            "required": True,
                        }
                    ],
                }
            ],
        },
    }


def plan_title(content: str) -> str:
    """The first line of the content, cut to 120 characters (the last one an ellipsis) when longer."""
    first = content.strip().splitlines()[0].strip() if content.strip() else ""
    return first if len(first) <= TITLE_MAX else first[: TITLE_MAX - 1].rstrip() + "…"


def iso_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as JavaScript's ``toISOString`` writes it."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _text_input(data: Fields, custom_id: str) -> str:
    """The value of the form's text input ``custom_id`` (in an action row, or in a label component)."""
    for row in data.objects("components"):
        children = row.objects("components")
        child = row.optional_object("component")
        for component in [*children, *([child] if child is not None else [])]:
            if component.optional_string("custom_id") == custom_id:
                return component.string("value")
    raise InvalidPayload(f"field {data.name('components')} has no text input {custom_id!r}")


def _version(interaction: Fields) -> int:
    version = interaction.optional_integer("version") or 0
    if not 0 <= version < 2**32:
        raise InvalidPayload(f"field {interaction.name('version')} is out of range")
    return version


def _user(fields: Fields) -> _User:
    return _User(
        id=fields.string("id"),
        username=fields.string("username"),
        global_name=fields.optional_string("global_name") or None,
        discriminator=fields.optional_string("discriminator") or None,
    )


def _short(value: str) -> str:
    """An identifier for a log line: printable and bounded, whatever the payload held."""
    return value[:32].encode("unicode_escape").decode("ascii")


def _message(content: str, *, ephemeral: bool) -> DiscordAnswer:
    data: dict[str, Any] = {"content": content}
    if ephemeral:
        data["flags"] = EPHEMERAL
    return DiscordAnswer(200, {"type": CHANNEL_MESSAGE, "data": data})


def _error(status: int, error: str, detail: str) -> DiscordAnswer:
    return DiscordAnswer(status, {"error": error, "detail": detail})


def _rejected(detail: str) -> DiscordAnswer:
    logger.warning("webhook_rejected: source=discord status=401 reason=%s", detail)
    return _error(401, "unauthorized", detail)


def _invalid(detail: str) -> DiscordAnswer:
    logger.warning("webhook_rejected: source=discord status=400 reason=%s", detail)
    return _error(400, "invalid payload", detail)
