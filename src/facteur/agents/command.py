"""The ``command`` backend: any executable. The prompt is on its stdin, its context in ``FACTEUR_AGENT_*``
variables, its exit status is the outcome and its standard output is the final message."""

from __future__ import annotations

from facteur.agents.base import ProcessAgent
from facteur.agents.port import AgentRequest, EventKind, Timeouts
from facteur.agents.process import ProcessEnd, child_env
from facteur.agents.results import Verdict, exit_verdict
from facteur.agents.stream import Transcript


class OutputTranscript(Transcript):
    """Plain text: every line is output, all of it the final message."""

    def __init__(self) -> None:
        super().__init__()
        self._lines: list[str] = []

    def read(self, line: str) -> None:
        self._lines.append(line)
        self.final_message = "\n".join(self._lines).strip("\n")
        if line.strip():
            self.emit(EventKind.OUTPUT, line)


class CommandAgent(ProcessAgent):
    kind = "command"
    supports_resume = False

    def argv(self, request: AgentRequest) -> list[str]:
        return [*self.program, *self.settings.extra_args]

    def env(self, request: AgentRequest) -> dict[str, str]:
        context = {"FACTEUR_AGENT_WORKDIR": str(request.workdir)}
        if self.settings.model:
            context["FACTEUR_AGENT_MODEL"] = self.settings.model
        if request.session_id is not None:
            context["FACTEUR_AGENT_SESSION_ID"] = request.session_id
        return child_env({**context, **request.env})

    def transcript(self) -> OutputTranscript:
        return OutputTranscript()

    def verdict(self, end: ProcessEnd, transcript: Transcript, timeouts: Timeouts) -> Verdict:
        return exit_verdict(end, timeouts)
