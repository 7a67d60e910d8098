"""``facteur discord register-commands`` against a fake Discord API (an ``httpx.MockTransport``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from facteur.cli import discord as discord_cli
from facteur.cli.main import app

TOKEN = "bot-token-0123456789-very-secret"
PLAN = {
    "name": "plan",
    "type": 1,
    "description": "Request a planning run: describe the work in the form that opens.",
}


class FakeDiscord:
    """Answers each request with the next queued response and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[Callable[[httpx.Request], httpx.Response]] = []
        self.waits: list[float] = []

    def answer(self, status: int, document: Any, headers: dict[str, str] | None = None) -> None:
        self.answers.append(lambda _request: httpx.Response(status, json=document, headers=headers))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.answers, f"unexpected request {request.method} {request.url}"
        return self.answers.pop(0)(request)


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeDiscord:
    for name in list(os.environ):
        if name.startswith(("FACTEUR_", "DISCORD_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    fake = FakeDiscord()
    monkeypatch.setattr(discord_cli, "transport", httpx.MockTransport(fake.handle))
    monkeypatch.setattr(discord_cli, "sleep", fake.waits.append)
    return fake


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["discord", "register-commands", *args], env=env)


def configured(guild: bool = True) -> dict[str, str]:
    env = {"DISCORD_APPLICATION_ID": "456", "DISCORD_BOT_TOKEN": TOKEN}
    if guild:
        env["DISCORD_GUILD_ID"] = "789"
    return env


def assert_no_token(result: Result) -> None:
    assert TOKEN not in result.stdout
    assert TOKEN not in result.stderr


def test_registers_plan_in_the_configured_guild(discord: FakeDiscord) -> None:
    discord.answer(200, [{"id": "999", "name": "plan", "type": 1, "application_id": "456"}])
    result = run(env=configured())
    assert result.exit_code == 0, result.stderr
    [request] = discord.requests
    assert request.method == "PUT"
    assert str(request.url) == "https://discord.com/api/v10/applications/456/guilds/789/commands"
    assert request.headers["authorization"] == f"Bot {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("DiscordBot (")
    assert json.loads(request.content) == [PLAN]
    assert result.stdout.strip() == "registered /plan (id 999) in guild 789 of application 456"
    assert_no_token(result)


def test_registers_globally_without_a_guild_and_says_so(discord: FakeDiscord) -> None:
    discord.answer(200, [{"id": "999", "name": "plan"}])
    result = run("--json", env=configured(guild=False))
    assert result.exit_code == 0, result.stderr
    assert discord.requests[0].url.path == "/api/v10/applications/456/commands"
    assert json.loads(result.stdout) == {
        "application_id": "456",
        "scope": "global",
        "guild_id": None,
        "url": "https://discord.com/api/v10/applications/456/commands",
        "commands": [{"name": "plan", "id": "999"}],
    }
    discord.answer(200, [{"id": "9", "name": "plan"}])
    text = run(env=configured(guild=False))
    assert "globally for application 456" in text.stdout
    assert "discord.guild_id is not set" in text.stdout


def test_settings_come_from_the_config_file(discord: FakeDiscord, tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text(
        "discord:\n"
        "  application_id: '11'\n"
        "  guild_id: '22'\n"
        f"  bot_token: {TOKEN}\n"
        "  api_url: http://discord.test/api/v10/\n"
    )
    discord.answer(200, [{"id": "1", "name": "plan"}])
    result = run("--config", str(config))
    assert result.exit_code == 0, result.stderr
    assert str(discord.requests[0].url) == "http://discord.test/api/v10/applications/11/guilds/22/commands"
    assert_no_token(result)


def test_dry_run_sends_nothing_and_masks_the_token(discord: FakeDiscord) -> None:
    result = run("--dry-run", env=configured())
    assert result.exit_code == 0, result.stderr
    assert discord.requests == []
    assert "PUT https://discord.com/api/v10/applications/456/guilds/789/commands" in result.stdout
    assert "Authorization: Bot ********" in result.stdout
    assert '"name": "plan"' in result.stdout
    assert_no_token(result)

    as_json = run("--dry-run", "--json", env=configured())
    document = json.loads(as_json.stdout)
    assert document["dry_run"] is True
    assert document["method"] == "PUT"
    assert document["url"] == "https://discord.com/api/v10/applications/456/guilds/789/commands"
    assert document["headers"]["Authorization"] == "Bot ********"
    assert document["body"] == [PLAN]
    assert discord.requests == []
    assert_no_token(as_json)


def test_dry_run_needs_no_token(discord: FakeDiscord) -> None:
    result = run("--dry-run", env={"DISCORD_APPLICATION_ID": "456"})
    assert result.exit_code == 0, result.stderr
    assert discord.requests == []


@pytest.mark.parametrize(
    ("env", "setting", "variable"),
    [
        ({"DISCORD_BOT_TOKEN": TOKEN}, "discord.application_id", "DISCORD_APPLICATION_ID"),
        ({"DISCORD_APPLICATION_ID": "456"}, "discord.bot_token", "DISCORD_BOT_TOKEN"),
    ],
)
def test_a_missing_setting_exits_2_naming_it(
    discord: FakeDiscord, env: dict[str, str], setting: str, variable: str
) -> None:
    result = run(env=env)
    assert result.exit_code == 2
    assert discord.requests == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert setting in lines[0]
    assert variable in lines[0]
    assert_no_token(result)


def test_an_invalid_setting_exits_2(discord: FakeDiscord) -> None:
    result = run(env={"DISCORD_APPLICATION_ID": "not-a-snowflake", "DISCORD_BOT_TOKEN": TOKEN})
    assert result.exit_code == 2
    assert "discord.application_id" in result.stderr
    assert discord.requests == []


def test_a_refusal_is_one_line_with_discords_message(discord: FakeDiscord) -> None:
    discord.answer(401, {"message": "401: Unauthorized", "code": 0})
    result = run(env=configured())
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Discord refused the request (HTTP 401): 401: Unauthorized"

    discord.answer(400, {"message": f"Invalid Form Body [{TOKEN}]", "code": 50035, "errors": {}})
    result = run(env=configured())
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == "error: Discord refused the request (HTTP 400, code 50035): Invalid Form Body [********]"
    )
    assert_no_token(result)


def test_a_rate_limit_is_waited_out_once(discord: FakeDiscord) -> None:
    discord.answer(429, {"message": "You are being rate limited.", "retry_after": 0.25, "global": False})
    discord.answer(200, [{"id": "999", "name": "plan"}])
    result = run(env=configured())
    assert result.exit_code == 0, result.stderr
    assert len(discord.requests) == 2
    assert discord.waits == [0.25]
    assert json.loads(discord.requests[1].content) == [PLAN]


def test_a_second_rate_limit_gives_up(discord: FakeDiscord) -> None:
    discord.answer(429, {"message": "You are being rate limited."}, headers={"Retry-After": "2"})
    discord.answer(429, {"message": "You are being rate limited.", "retry_after": 2})
    result = run(env=configured())
    assert result.exit_code == 1
    assert len(discord.requests) == 2
    assert discord.waits == [2.0]
    assert "rate-limited" in result.stderr


def test_an_unreachable_api_exits_1(discord: FakeDiscord) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    discord.answers.append(refuse)
    result = run(env=configured())
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot reach Discord at https://discord.com/api/v10/")
    assert_no_token(result)


def test_the_installed_command_names_a_missing_application_id(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACTEUR_", "DISCORD_"))}
    env["DISCORD_BOT_TOKEN"] = TOKEN
    result = subprocess.run(
        [sys.executable, "-m", "facteur", "discord", "register-commands"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: discord.application_id is not set (env DISCORD_APPLICATION_ID)"
    assert TOKEN not in result.stdout + result.stderr
