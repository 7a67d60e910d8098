"""``facteur discord-channel`` against a fake Discord guild (an ``httpx.MockTransport`` handler that keeps
channels and messages): the channel lands in the right category, the intro and the output follow in
order, rate limits and failures are waited out, and dry runs call nothing."""

from __future__ import annotations

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from facteur.cli import discord_channel as command
from facteur.domain import discord_channels as rules
from tests.support.discord import API, GUILD, TOKEN, FakeDiscord

ENV = {"DISCORD_BOT_TOKEN": TOKEN, "DISCORD_GUILD_ID": GUILD, "FACTEUR_DISCORD__API_URL": API}
ARGS = [
    "--repo",
    "proompteng/lab",
    "--issue",
    "1243",
    "--stage",
    "planning",
    "--timestamp",
    "2025-10-07T12:34:56Z",
    "--run-id",
    "channel-xyz123",
    "--title",
    "Add a cache",
    "--summary",
    "Plan the cache layer.",
]
NAME = "lab-issue-1243-planning-20251007t1234-channel-xyz123"


#: the command as ``facteur`` registers it (kept local so that this test does not depend on main's edits)
app = typer.Typer()
app.command("discord-channel")(command.discord_channel)


@app.callback()
def _facteur() -> None:
    """Stands for ``facteur``."""


@pytest.fixture
def discord(monkeypatch: pytest.MonkeyPatch) -> FakeDiscord:
    fake = FakeDiscord()
    monkeypatch.setattr(command, "transport", httpx.MockTransport(fake.handle))
    return fake


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(command, "sleep", slept.append)
    return slept


@pytest.fixture(autouse=True)
def _no_ambient_discord(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID", "DISCORD_CATEGORY_ID", "FACTEUR_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["discord-channel", *args], input=stdin, env={**ENV, **(env or {})})


def test_creates_the_channel_in_the_configured_category_then_posts_intro_and_output(
    discord: FakeDiscord, waits: list[float]
) -> None:
    discord.add_category("Codex Channel - Petit Colis")
    configured = discord.add_category("Runs", children=3)
    output = "".join(f"step {n}: " + "x" * 90 + "\n" for n in range(30)) + "done\\nall good\n"
    result = run(*ARGS, stdin=output, env={"DISCORD_CATEGORY_ID": configured})
    assert result.exit_code == 0, result.stderr
    channel = discord.channel(NAME)
    assert channel["parent_id"] == configured and channel["type"] == 0
    assert result.stdout.splitlines() == [
        f"channel_name={NAME}",
        f"channel_id={channel['id']}",
        f"channel_url=https://discord.com/channels/{GUILD}/{channel['id']}",
    ]
    intro, *chunks = discord.messages[channel["id"]]
    assert intro.startswith("**Codex Channel Started**") and f"**Channel:** {NAME}" in intro
    assert "[#1243](<https://github.com/proompteng/lab/issues/1243>)" in intro
    assert "Plan the cache layer." in intro
    assert len(chunks) > 1 and all(len(c) <= rules.MAX_CHUNK for c in chunks)
    assert "\n".join(chunks) == output.replace("\\n", "\n").rstrip("\n")
    assert waits == []


def test_a_named_category_with_room_is_used_when_none_is_configured(discord: FakeDiscord) -> None:
    discord.add_category("General", children=2)
    discord.add_category("Codex Channel - Grand Pigeon", children=50)
    roomy = discord.add_category("Codex Channel - Vieux Sac", children=10)
    result = run(*ARGS)
    assert result.exit_code == 0, result.stderr
    assert discord.channel(NAME)["parent_id"] == roomy
    assert len(discord.messages[discord.channel(NAME)["id"]]) == 1  # the intro; no output on stdin


def test_when_every_category_is_full_a_new_one_is_created(discord: FakeDiscord) -> None:
    full = discord.add_category("Codex Channel - Grand Pigeon", children=50)
    result = run(*ARGS, env={"DISCORD_CATEGORY_ID": full})
    assert result.exit_code == 0, result.stderr
    categories = [c for c in discord.channels if c["type"] == 4]
    assert len(categories) == 2
    new = categories[-1]
    assert new["name"].startswith("Codex Channel - ") and new["name"] != "Codex Channel - Grand Pigeon"
    assert discord.channel(NAME)["parent_id"] == new["id"]


def test_a_rate_limit_is_waited_out_then_retried(discord: FakeDiscord, waits: list[float]) -> None:
    discord.add_category("Codex Channel - Bon Cachet")
    limited = httpx.Response(429, json={"message": "You are being rate limited.", "retry_after": 0.25})
    discord.fail_next = [lambda _r: limited, lambda _r: limited]
    result = run(*ARGS, stdin="hello\n")
    assert result.exit_code == 0, result.stderr
    assert waits == [0.25, 0.25]
    assert discord.messages[discord.channel(NAME)["id"]][1:] == ["hello"]


def test_server_errors_are_retried_with_backoff(discord: FakeDiscord, waits: list[float]) -> None:
    discord.fail_next = [lambda _r: httpx.Response(502), lambda _r: httpx.Response(503)]
    result = run(*ARGS)
    assert result.exit_code == 0, result.stderr
    assert waits == [0.5, 1.0]
    assert discord.channel(NAME)


def test_transport_errors_are_retried(discord: FakeDiscord, waits: list[float]) -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    discord.fail_next = [refused]
    result = run(*ARGS)
    assert result.exit_code == 0, result.stderr
    assert waits == [0.5]


def test_it_gives_up_after_five_failed_attempts(discord: FakeDiscord, waits: list[float]) -> None:
    discord.fail_next = [lambda _r: httpx.Response(500)] * 6
    result = run(*ARGS)
    assert result.exit_code == 1
    assert f"GET /guilds/{GUILD}/channels failed 5 times; the last: HTTP 500" in result.stderr
    assert len(discord.requests) == 5 and waits == [0.5, 1.0, 2.0, 4.0]
    assert TOKEN not in result.stderr + result.stdout


def test_a_refusal_is_named(discord: FakeDiscord, waits: list[float]) -> None:
    result = run(*ARGS, env={"DISCORD_BOT_TOKEN": "wrong-token"})
    assert result.exit_code == 1
    assert "Discord refused the request (HTTP 401): 401: Unauthorized" in result.stderr
    assert len(discord.requests) == 1 and waits == []


def test_dry_run_prints_what_it_would_do_and_calls_nothing(discord: FakeDiscord) -> None:
    output = "first line\\nsecond\n" + "y" * 2500 + "\n"
    result = run(*ARGS, "--dry-run", stdin=output, env={"DISCORD_BOT_TOKEN": "", "DISCORD_GUILD_ID": ""})
    assert result.exit_code == 0, result.stderr
    assert discord.requests == []
    lines = result.stderr.splitlines()
    assert lines[0] == f"would create channel {NAME} in guild dry-run-guild"
    assert lines[1] == "**Codex Channel Started**"
    dry = [line for line in lines if line.startswith("[dry-run] ")]
    assert dry[0] == "[dry-run] first line"
    messages = rules.messages_of([output])
    assert len(messages) == 2 and len(messages[0]) == rules.MAX_CHUNK
    assert result.stderr.endswith("".join(f"[dry-run] {m}\n" for m in messages))
    named = run(*ARGS, "--dry-run")
    assert named.exit_code == 0 and f"in guild {GUILD}" in named.stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DISCORD_BOT_TOKEN": ""}, "no Discord bot token"),
        ({"DISCORD_GUILD_ID": ""}, "no Discord guild"),
    ],
)
def test_missing_credentials_exit_2(discord: FakeDiscord, env: dict[str, str], message: str) -> None:
    result = run(*ARGS, env=env)
    assert result.exit_code == 2 and message in result.stderr
    assert discord.requests == []


def test_a_bad_timestamp_exits_1(discord: FakeDiscord) -> None:
    result = run("--repo", "acme/lab", "--timestamp", "yesterday")
    assert result.exit_code == 1 and "--timestamp" in result.stderr and "ISO 8601" in result.stderr
    assert discord.requests == []


def test_without_a_run_id_the_name_ends_in_4_random_characters(discord: FakeDiscord) -> None:
    result = run(
        "--repo", "acme/lab", "--issue", "5", "--stage", "review", "--timestamp", "2025-01-02T03:04Z"
    )
    assert result.exit_code == 0, result.stderr
    name = result.stdout.splitlines()[0].removeprefix("channel_name=")
    assert name.startswith("lab-issue-5-review-20250102t0304-") and len(name.rsplit("-", 1)[1]) == 4
    intro = discord.messages[discord.channel(name)["id"]][0]
    assert "**Pull Request:** [#5](<https://github.com/acme/lab/pull/5>)" in intro
