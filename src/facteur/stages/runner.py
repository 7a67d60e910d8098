"""``facteur stage <stage> --event FILE``: the frame every stage runs in.

It reads the event, sets up the stage's directories (``repo/`` checkout, ``logs/``, ``artifacts/``), opens
the forge and the agent, reports ``started``, sends a heartbeat every ``stage.heartbeat_seconds`` while the
stage works, reports usage after each agent run, and ends with ``completed`` (succeeded or failed, with the
summary, branch, pull request and artifacts). A failure is a :class:`StageFailed` whose message says why;
it is reported, printed and turned into exit status 1. Exit status 2 is a bad event file or bad settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facteur.agents.factory import build_agent
from facteur.agents.port import Agent, AgentEvent, AgentRequest, AgentResult, EventKind
from facteur.domain.stages import Stage
from facteur.errors import ConfigError, FacteurError
from facteur.settings import Settings
from facteur.stages.discord_stream import StageChannel
from facteur.stages.event import StageEvent
from facteur.stages.forges import StageForge, git_auth, open_forge
from facteur.stages.git import Git
from facteur.stages.reporter import Reporter

logger = logging.getLogger(__name__)

#: ``facteur stage`` accepts the issue's verbs as well as the stage names the executors use
STAGE_NAMES: Mapping[str, Stage] = {
    "plan": Stage.PLANNING,
    "planning": Stage.PLANNING,
    "implement": Stage.IMPLEMENTATION,
    "implementation": Stage.IMPLEMENTATION,
    "review": Stage.REVIEW,
}


class StageFailed(FacteurError):
    """The stage did not do its work; the message says why."""

    def __init__(self, message: str, *, artifacts: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.artifacts = artifacts or []


@dataclass(frozen=True, slots=True, kw_only=True)
class StageOutcome:
    summary: str
    branch: str | None = None
    pull_request: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Dirs:
    root: Path
    workspace: Path
    logs: Path
    artifacts: Path

    @classmethod
    def of(cls, settings: Settings, cwd: Path) -> Dirs:
        root = (settings.stage.output_dir or cwd).resolve()
        workspace = (settings.stage.workspace or root / "repo").resolve()
        dirs = cls(root, workspace, root / "logs", root / "artifacts")
        dirs.logs.mkdir(parents=True, exist_ok=True)
        dirs.artifacts.mkdir(parents=True, exist_ok=True)
        return dirs


@dataclass
class Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    agent_seconds: float = 0.0
    agent_runs: int = 0


class StageRun:
    """One stage run's means: settings, event, directories, reports, forge, git and agent."""

    def __init__(
        self,
        *,
        settings: Settings,
        event: StageEvent,
        dirs: Dirs,
        reporter: Reporter,
        forge: StageForge,
        agent: Agent,
        channel: StageChannel | None = None,
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.event = event
        self.dirs = dirs
        self.reporter = reporter
        self.forge = forge
        self.agent = agent
        self.totals = Totals()
        stage = settings.stage
        #: authenticated by :meth:`authenticate` (at the start, and before each push)
        self.git = Git(
            dirs.workspace,
            log_file=dirs.logs / "git.log",
            timeout_seconds=stage.git_timeout_seconds,
            user_name=stage.git_user_name,
            user_email=stage.git_user_email,
        )

    async def authenticate(self) -> None:
        """Give git the forge's credentials as they are now (a GitHub App's token is minted again when it is
        about to expire)."""
        self.git.authenticate(await git_auth(self.forge, self.event.repository))

    def artifact(self, name: str, data: bytes | str, kind: str) -> dict[str, Any]:
        path = self.dirs.artifacts / name
        if isinstance(data, str):  # git's non-UTF-8 bytes arrive as surrogates: written back as they were
            path.write_bytes(data.encode("utf-8", "surrogateescape"))
        else:
            path.write_bytes(data)
        return {"name": name, "kind": kind, "path": str(path), "bytes": path.stat().st_size}

    def context(self, **extra: Any) -> dict[str, Any]:
        """What a command agent reads from ``FACTEUR_AGENT_CONTEXT_FILE`` (docs/agents.md)."""
        event = self.event
        return {
            "stage": event.stage.value,
            "repository": event.repository,
            "base": event.base,
            "head": event.head,
            "idea": {
                "id": str(event.run.idea_id) if event.run.idea_id else None,
                "title": event.issue_title,
                # a Froussard-path run has an issue instead of a spec: its body is the idea's text
                "spec": dict(event.spec) or {"title": event.issue_title, "body": event.issue_body},
            },
            "task": event.task.to_json() if event.task else None,
            "plan": event.plan_markdown,
            "dependencies": [
                {"key": d.key, "title": d.title, "branch": d.branch, "summary": d.summary}
                for d in event.dependencies
            ],
            "planFile": "PLAN.md",
            "feedback": None,
            **extra,
        }

    async def run_agent(
        self,
        prompt: str,
        *,
        label: str,
        context: Mapping[str, Any],
        session_id: str | None = None,
        on_event: Callable[[AgentEvent], Awaitable[None]] | None = None,
    ) -> AgentResult:
        """Run the agent in the checkout; its transcript goes to ``logs/agent-<label>.jsonl`` and its usage
        is reported as soon as it ends."""
        context_file = self.dirs.root / f"agent-context-{label}.json"
        context_file.write_text(json.dumps(context, indent=2, ensure_ascii=False), encoding="utf-8")
        (self.dirs.logs / f"prompt-{label}.md").write_text(prompt, encoding="utf-8")
        request = AgentRequest(
            prompt=prompt,
            workdir=self.dirs.workspace,
            env={
                "FACTEUR_AGENT_STAGE": self.event.stage.value,
                "FACTEUR_AGENT_CONTEXT_FILE": str(context_file),
            },
            session_id=session_id if self.agent.supports_resume else None,
            transcript=self.dirs.logs / f"agent-{label}.jsonl",
        )

        async def forward(agent_event: AgentEvent) -> None:
            if agent_event.kind in {EventKind.MESSAGE, EventKind.TOOL_CALL, EventKind.ERROR}:
                logger.info("agent %s: %s", agent_event.kind.value, agent_event.text[:500])
            if self.channel is not None and agent_event.kind in _STREAMED:
                self.channel.feed(agent_event.text)
            if on_event is not None:
                await on_event(agent_event)

        started = time.monotonic()
        logger.info(
            "agent started: kind=%s label=%s resume=%s", self.agent.kind, label, bool(request.session_id)
        )
        result = await self.agent.run(request, forward)
        self.totals.agent_seconds += time.monotonic() - started
        self.totals.agent_runs += 1
        (self.dirs.logs / f"agent-{label}.stderr.log").write_text(result.stderr_tail, encoding="utf-8")
        usage = result.usage
        self.totals.input_tokens += usage.input_tokens
        self.totals.output_tokens += usage.output_tokens
        self.totals.cost_usd += usage.cost_usd
        self.reporter.usage(usage.input_tokens, usage.output_tokens, usage.cost_usd)
        logger.info(
            "agent ended: label=%s outcome=%s seconds=%.2f tokens_in=%s tokens_out=%s message=%s",
            label,
            result.outcome.value,
            result.duration_seconds,
            usage.input_tokens,
            usage.output_tokens,
            result.message,
        )
        return result


#: what a stage's Discord channel shows of its agent
_STREAMED = frozenset({EventKind.MESSAGE, EventKind.TOOL_CALL, EventKind.ERROR, EventKind.OUTPUT})

StageBody = Callable[[StageRun], Awaitable[StageOutcome]]


def stage_body(stage: Stage) -> StageBody:
    from facteur.stages import implementation, planning, review

    bodies: dict[Stage, StageBody] = {
        Stage.PLANNING: planning.run,
        Stage.IMPLEMENTATION: implementation.run,
        Stage.REVIEW: review.run,
    }
    try:
        return bodies[stage]
    except KeyError:
        raise ConfigError(
            f"no stage runner for {stage.value}: facteur stage runs planning, implementation and review"
        ) from None


async def run_stage(
    settings: Settings,
    event: StageEvent,
    *,
    cwd: Path,
    agent: Agent | None = None,
    forge: StageForge | None = None,
    reporter: Reporter | None = None,
    channel: StageChannel | None = None,
) -> tuple[bool, str]:
    """Run the event's stage; (succeeded, what to print). Raises :class:`ConfigError` for settings that
    cannot work (before anything is reported)."""
    body = stage_body(event.stage)
    dirs = Dirs.of(settings, cwd)
    handler = _log_to(dirs.logs / "stage.log")
    stage_settings = settings.stage
    reporter = reporter or Reporter(
        event.run,
        attempts=stage_settings.callback_attempts,
        timeout_seconds=stage_settings.callback_timeout_seconds,
    )
    channel = channel or StageChannel.configured(settings.discord, event)
    outcome_line: str | None = None
    try:
        forge = forge or open_forge(settings, event.repository)
        if channel is not None:
            channel.start()
        run = StageRun(
            settings=settings,
            event=event,
            dirs=dirs,
            reporter=reporter,
            forge=forge,
            agent=agent or build_agent(settings.agent),
            channel=channel,
        )
        started = time.monotonic()
        logger.info(
            "stage started: stage=%s run=%s repository=%s head=%s attempt=%s forge=%s",
            event.stage.value,
            event.run.run_id,
            event.repository,
            event.head,
            event.run.attempt,
            forge.kind,
        )
        reporter.started()
        try:
            await run.authenticate()
            async with reporter.heartbeats(stage_settings.heartbeat_seconds):
                outcome = await body(run)
        except FacteurError as exc:  # StageFailed, or what git, the forge or the agent could not do
            _record_timing(dirs, run, started, succeeded=False)
            logger.error("stage failed: %s", exc.message)
            outcome_line = f"{event.stage.value} failed: {exc.message}"
            artifacts = exc.artifacts if isinstance(exc, StageFailed) else []
            await reporter.completed(
                succeeded=False, summary=exc.message, artifacts=artifacts, branch=event.head
            )
            return False, exc.message
        _record_timing(dirs, run, started, succeeded=True)
        await reporter.completed(
            succeeded=True,
            summary=outcome.summary,
            artifacts=outcome.artifacts,
            pull_request=outcome.pull_request,
            branch=outcome.branch,
        )
        logger.info("stage succeeded: %s", outcome.summary.splitlines()[0] if outcome.summary else "")
        outcome_line = f"{event.stage.value} succeeded: {outcome.summary}"
        return True, outcome.summary
    finally:
        if channel is not None:
            await channel.close(outcome_line)
        if forge is not None:
            await forge.forge.close()
        await reporter.aclose()
        logging.getLogger().removeHandler(handler)
        handler.close()


def _record_timing(dirs: Dirs, run: StageRun, started: float, *, succeeded: bool) -> None:
    """``timing.json``: wall time, agent time and the difference (what Facteur itself cost)."""
    wall = time.monotonic() - started
    totals = run.totals
    data = {
        "stage": run.event.stage.value,
        "succeeded": succeeded,
        "wall_seconds": round(wall, 4),
        "agent_seconds": round(totals.agent_seconds, 4),
        "overhead_seconds": round(wall - totals.agent_seconds, 4),
        "agent_runs": totals.agent_runs,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": round(totals.cost_usd, 6),
    }
    (dirs.root / "timing.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
