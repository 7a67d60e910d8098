"""What the three backends share: settings to timeouts and prices, and one way to run the process."""

from __future__ import annotations

import shlex
from typing import ClassVar

from facteur.agents.port import AgentRequest, AgentResult, EventCallback, Timeouts
from facteur.agents.pricing import ModelPrice, PriceTable
from facteur.agents.process import ProcessEnd, check_workdir, child_env, supervise
from facteur.agents.results import Verdict, build_result, event_verdict
from facteur.agents.stream import Transcript
from facteur.errors import ConfigError
from facteur.settings import AgentSettings


def timeouts_from(settings: AgentSettings) -> Timeouts:
    return Timeouts(
        idle_seconds=settings.idle_timeout_seconds,
        grace_seconds=settings.grace_seconds,
        total_seconds=settings.timeout_seconds,
        terminate_seconds=settings.terminate_seconds,
    )


def prices_from(settings: AgentSettings) -> PriceTable:
    return PriceTable(
        {
            name: ModelPrice(
                input_usd_per_million=price.input_usd_per_million,
                output_usd_per_million=price.output_usd_per_million,
                cached_input_usd_per_million=price.cached_input_usd_per_million,
            )
            for name, price in settings.prices.items()
        }
    )


def program_from(settings: AgentSettings, default: str) -> list[str]:
    try:
        argv = shlex.split(settings.command) if settings.command is not None else [default]
    except ValueError as exc:
        raise ConfigError(f"invalid setting agent.command: {exc}") from None
    if not argv:
        raise ConfigError("invalid setting agent.command: it is empty")
    return argv


class ProcessAgent:
    """An agent that is a child process reading its prompt on stdin."""

    kind: ClassVar[str]
    supports_resume: ClassVar[bool]
    #: the program when ``agent.command`` is unset
    default_program: ClassVar[str] = ""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.program = program_from(settings, self.default_program)
        self.timeouts = timeouts_from(settings)
        self.prices = prices_from(settings)

    def argv(self, request: AgentRequest) -> list[str]:
        raise NotImplementedError

    def env(self, request: AgentRequest) -> dict[str, str]:
        return child_env(request.env)

    def transcript(self) -> Transcript:
        raise NotImplementedError

    def verdict(self, end: ProcessEnd, transcript: Transcript, timeouts: Timeouts) -> Verdict:
        return event_verdict(end, transcript, timeouts)

    async def run(self, request: AgentRequest, on_event: EventCallback | None = None) -> AgentResult:
        workdir = check_workdir(request.workdir)
        transcript = self.transcript()
        timeouts = request.timeouts or self.timeouts
        end = await supervise(
            self.argv(request),
            cwd=workdir,
            env=self.env(request),
            stdin=request.prompt.encode("utf-8"),
            transcript=transcript,
            timeouts=timeouts,
            on_event=on_event,
            stdout_log=request.transcript,
        )
        return build_result(
            verdict=self.verdict(end, transcript, timeouts),
            transcript=transcript,
            end=end,
            prices=self.prices,
            model=self.settings.model,
            session_id=request.session_id if self.supports_resume else None,
        )
