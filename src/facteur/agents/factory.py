"""The agent that ``agent.kind`` names."""

from __future__ import annotations

from facteur.agents.base import ProcessAgent
from facteur.agents.claude import ClaudeAgent
from facteur.agents.codex import CodexAgent
from facteur.agents.command import CommandAgent
from facteur.agents.port import Agent
from facteur.settings import AgentSettings

_BACKENDS: dict[str, type[ProcessAgent]] = {
    CodexAgent.kind: CodexAgent,
    ClaudeAgent.kind: ClaudeAgent,
    CommandAgent.kind: CommandAgent,
}


def build_agent(settings: AgentSettings) -> Agent:
    return _BACKENDS[settings.kind](settings)
