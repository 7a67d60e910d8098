"""``facteur discord …``: set up the Discord application whose interactions reach ``/webhooks/discord``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from facteur import __version__
from facteur.cli.common import ConfigOption, JsonOption, fail, settings_or_exit
from facteur.notify.discord_channel import refusal, response_document, retry_after
from facteur.settings import MASK, DiscordSettings

if TYPE_CHECKING:
    import httpx

app = typer.Typer(
    help="Discord: the slash commands whose interactions reach /webhooks/discord.", no_args_is_help=True
)

#: the one slash command Facteur answers (a CHAT_INPUT command without options: it opens a form)
PLAN_COMMAND: dict[str, Any] = {
    "name": "plan",
    "type": 1,
    "description": "Request a planning run: describe the work in the form that opens.",
}
TIMEOUT_SECONDS = 10.0
#: the longest rate-limit wait honoured before giving up
MAX_RETRY_AFTER_SECONDS = 60.0


#: the HTTP transport to Discord's API (``None``: the network); tests set an ``httpx.MockTransport``
transport: httpx.BaseTransport | None = None
#: waits out a 429 before the one retry; tests replace it
sleep: Callable[[float], None] = time.sleep

DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the request that would be made; send nothing.")
]


@dataclass(frozen=True, slots=True)
class Registration:
    """Where the commands are registered: one guild (visible at once) or every guild (global)."""

    application_id: str
    guild_id: str | None
    url: str

    @classmethod
    def of(cls, settings: DiscordSettings, application_id: str) -> Registration:
        base = f"{settings.api_url.rstrip('/')}/applications/{application_id}"
        if settings.guild_id:
            return cls(application_id, settings.guild_id, f"{base}/guilds/{settings.guild_id}/commands")
        return cls(application_id, None, f"{base}/commands")

    @property
    def scope(self) -> str:
        return "guild" if self.guild_id else "global"

    def where(self) -> str:
        if self.guild_id:
            return f"in guild {self.guild_id} of application {self.application_id}"
        return (
            f"globally for application {self.application_id} "
            "(discord.guild_id is not set; global commands can take up to an hour to appear)"
        )


def request_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bot {token}",
        "Content-Type": "application/json",
        "User-Agent": f"DiscordBot (facteur, {__version__})",
    }


@app.command("register-commands")
def register_commands(
    config: ConfigOption = None, as_json: JsonOption = False, dry_run: DryRunOption = False
) -> None:
    """Register the /plan slash command: in discord.guild_id when set, else globally."""
    settings = settings_or_exit(config).discord
    if not settings.application_id:
        fail("discord.application_id is not set (env DISCORD_APPLICATION_ID)", 2)
    target = Registration.of(settings, settings.application_id)
    body = [PLAN_COMMAND]
    if dry_run:
        _print_dry_run(target, body, as_json=as_json)
        return
    if settings.bot_token is None or not settings.bot_token.get_secret_value():
        fail("discord.bot_token is not set (env DISCORD_BOT_TOKEN)", 2)
    token = settings.bot_token.get_secret_value()
    response = _put(target.url, request_headers(token), body, token)
    if response.status_code >= 400:
        fail(_scrub(refusal(response), token))
    commands = _registered(response)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "application_id": target.application_id,
                    "scope": target.scope,
                    "guild_id": target.guild_id,
                    "url": target.url,
                    "commands": commands,
                }
            )
        )
        return
    names = ", ".join(f"/{c['name']} (id {c['id']})" for c in commands) or "no commands"
    typer.echo(f"registered {names} {target.where()}")


def _print_dry_run(target: Registration, body: list[dict[str, Any]], *, as_json: bool) -> None:
    headers = request_headers(MASK)
    if as_json:
        document = {
            "dry_run": True,
            "application_id": target.application_id,
            "scope": target.scope,
            "guild_id": target.guild_id,
            "method": "PUT",
            "url": target.url,
            "headers": headers,
            "body": body,
        }
        typer.echo(json.dumps(document))
        return
    typer.echo(f"dry run: would register /plan {target.where()}")
    typer.echo(f"PUT {target.url}")
    for name, value in headers.items():
        typer.echo(f"{name}: {value}")
    typer.echo("")
    typer.echo(json.dumps(body, indent=2))


def _put(url: str, headers: dict[str, str], body: list[dict[str, Any]], token: str) -> httpx.Response:
    """PUT the commands; a 429 is waited out once (``retry_after``, at most a minute), then retried."""
    import httpx

    try:
        with httpx.Client(timeout=TIMEOUT_SECONDS, transport=transport) as client:
            response = client.put(url, headers=headers, json=body)
            if response.status_code == 429:
                wait = retry_after(response)
                if wait > MAX_RETRY_AFTER_SECONDS:
                    fail(f"Discord rate-limited the request for {wait:.0f} s; try again later")
                sleep(wait)
                response = client.put(url, headers=headers, json=body)
                if response.status_code == 429:
                    fail("Discord rate-limited the request again after waiting; try again later")
            return response
    except httpx.HTTPError as exc:
        fail(_scrub(f"cannot reach Discord at {url}: {exc or type(exc).__name__}", token))


def _registered(response: httpx.Response) -> list[dict[str, str]]:
    document = response_document(response)
    if not isinstance(document, list):
        return [{"name": str(PLAN_COMMAND["name"]), "id": "?"}]
    return [
        {"name": str(item.get("name", "?")), "id": str(item.get("id", "?"))}
        for item in document
        if isinstance(item, dict)
    ]


def _scrub(text: str, token: str) -> str:
    return text.replace(token, MASK) if token else text
