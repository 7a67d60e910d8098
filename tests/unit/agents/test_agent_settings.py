"""``agent.*`` settings: defaults, file and environment, clear errors; the factory builds each kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from facteur.agents.claude import ClaudeAgent
from facteur.agents.codex import CodexAgent
from facteur.agents.command import CommandAgent
from facteur.agents.factory import build_agent
from facteur.agents.port import Timeouts
from facteur.errors import ConfigError
from facteur.settings import AgentSettings, load_settings


def test_defaults() -> None:
    settings = load_settings(environ={}).agent
    assert settings.kind == "codex"
    assert settings.command is None
    assert settings.sandbox == "workspace-write"
    assert settings.approval_policy == "never"
    assert settings.permission_mode == "acceptEdits"
    assert settings.idle_timeout_seconds == 1800
    assert settings.grace_seconds == 120
    assert settings.prices == {}
    agent = build_agent(settings)
    assert isinstance(agent, CodexAgent)
    assert agent.program == ["codex"]
    assert agent.timeouts == Timeouts(
        idle_seconds=1800, grace_seconds=120, total_seconds=14_400, terminate_seconds=5
    )


def test_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text(
        """
agent:
  kind: claude
  command: npx --yes claude
  allowed_tools: [Read, Edit, "Bash(git diff:*)"]
  prices:
    claude-sonnet-4-5: {input_usd_per_million: 3, output_usd_per_million: 15}
"""
    )
    settings = load_settings(
        config,
        environ={
            "FACTEUR_AGENT__MODEL": "claude-sonnet-4-5",
            "FACTEUR_AGENT__EXTRA_ARGS": "--max-turns 40 --append-system-prompt 'Be brief.'",
            "FACTEUR_AGENT__IDLE_TIMEOUT_SECONDS": "600",
        },
    ).agent
    assert settings.kind == "claude"
    assert settings.extra_args == ["--max-turns", "40", "--append-system-prompt", "Be brief."]
    assert settings.allowed_tools == ["Read", "Edit", "Bash(git diff:*)"]
    assert settings.idle_timeout_seconds == 600
    assert settings.prices["claude-sonnet-4-5"].output_usd_per_million == 15
    agent = build_agent(settings)
    assert isinstance(agent, ClaudeAgent)
    assert agent.program == ["npx", "--yes", "claude"]

    tools = load_settings(environ={"FACTEUR_AGENT__ALLOWED_TOOLS": "Read, Edit"}).agent.allowed_tools
    assert tools == ["Read", "Edit"]
    command = load_settings(
        environ={"FACTEUR_AGENT__KIND": "command", "FACTEUR_AGENT__COMMAND": "./agent.sh --fast"}
    ).agent
    assert isinstance(build_agent(command), CommandAgent)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"FACTEUR_AGENT__KIND": "command"},
            "invalid setting agent: agent.command is required when agent.kind is command: the program to run "
            "(from env FACTEUR_AGENT__KIND)",
        ),
        (
            {"FACTEUR_AGENT__KIND": "aider"},
            "invalid setting agent.kind: Input should be 'codex', 'claude' or 'command'",
        ),
        ({"FACTEUR_AGENT__SANDBOX": "none"}, "invalid setting agent.sandbox: Input should be 'read-only'"),
        ({"FACTEUR_AGENT__COMMAND": "  "}, "invalid setting agent.command: Value error, is empty"),
        ({"FACTEUR_AGENT__COMMAND": "codex 'unclosed"}, "cannot be split like a shell line"),
        (
            {"FACTEUR_AGENT__EXTRA_ARGS": "--json --model=x"},
            "invalid setting agent: agent.extra_args repeats --json: "
            "Facteur passes them itself for kind codex",
        ),
        (
            {"FACTEUR_AGENT__KIND": "claude", "FACTEUR_AGENT__EXTRA_ARGS": "--output-format=json"},
            "agent.extra_args repeats --output-format=json",
        ),
        ({"FACTEUR_AGENT__GRACE_SECONDS": "-1"}, "invalid setting agent.grace_seconds"),
        ({"FACTEUR_AGENT__MODEL": "--evil"}, "invalid setting agent.model: String should match pattern"),
        ({"FACTEUR_AGENT__ALLOWED_TOOLS": "Read,--all"}, "not tool names: '--all'"),
        (
            {"FACTEUR_AGENT__PRICES": '{"gpt-5": {"input_usd_per_million": 1}}'},
            "invalid setting agent.prices.gpt-5.output_usd_per_million: Field required",
        ),
        (
            {"FACTEUR_AGENT__PRICES": '{"o3": {"input_usd_per_million": -1, "output_usd_per_million": 0}}'},
            "invalid setting agent.prices.o3.input_usd_per_million: Input should be greater than or equal",
        ),
    ],
)
def test_invalid_settings_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ)
    assert message in str(caught.value)


def test_kind_specific_flags_do_not_bother_other_kinds() -> None:
    # -c is codex's --config and claude's --continue: only claude refuses it
    assert AgentSettings(kind="codex", extra_args=["-c", "model_reasoning_effort=high"]).extra_args
    with pytest.raises(ValueError, match="repeats -c"):
        AgentSettings(kind="claude", extra_args=["-c"])
