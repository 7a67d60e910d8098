"""Stage runs end to end on the local forge, with the example agent run through the ``command`` backend
(a real subprocess) and the run's reports caught at the HTTP layer: planning publishes and sends the plan,
implementation pushes a branch built on its dependencies and keeps a draft pull request and the progress
comment, a failed attempt leaves a resume archive the next one restores, review posts its verdict."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support.discord import API, GUILD, TOKEN, FakeDiscord

from facteur.agents.port import (
    AgentEvent,
    AgentOutcome,
    AgentRequest,
    AgentResult,
    CostSource,
    EventCallback,
    EventKind,
    StreamStats,
    Usage,
)
from facteur.demo import project
from facteur.domain.plans import parse_plan
from facteur.domain.untrusted import PLAN_MARKER, PROGRESS_MARKER, REVIEW_MARKER
from facteur.errors import ForgeError
from facteur.forge.local import LocalForge
from facteur.forge.port import PullRequest
from facteur.settings import Settings, load_settings
from facteur.stages.discord_stream import StageChannel
from facteur.stages.event import StageEvent, parse_event
from facteur.stages.forges import StageForge
from facteur.stages.reporter import Reporter
from facteur.stages.runner import run_stage

AGENT = Path(__file__).resolve().parents[3] / "examples" / "agents" / "script_agent.py"
REPO = project.REPOSITORY


class Calls:
    """The run's reports, as Facteur's endpoint would receive them."""

    def __init__(self, answers: dict[str, int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.answers = answers or {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        status = self.answers.get(body["type"], 202)
        return httpx.Response(status, json={"problems": ["refused here"]} if status == 422 else {})

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["type"] == kind]


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.forge = LocalForge(root / "forge")
        self.forge.create_repository(REPO, source=project.write_project(root / "source"))
        self.issue = 0
        self.runs = 0
        self.idea = str(uuid.uuid4())

    def settings(self, **env: str) -> Settings:
        return load_settings(
            None,
            environ={
                "FACTEUR_FORGE__KIND": "local",
                "FACTEUR_FORGE__LOCAL__ROOT": str(self.root / "forge"),
                "FACTEUR_AGENT__KIND": "command",
                "FACTEUR_AGENT__COMMAND": f"{sys.executable} {AGENT}",
                "FACTEUR_AGENT__IDLE_TIMEOUT_SECONDS": "60",
                "FACTEUR_STAGE__RESUME_DIR": str(self.root / "resume"),
                "FACTEUR_STAGE__PULL_REQUEST_BACKOFF_SECONDS": "0",
                **env,
            },
        )

    def event(self, stage: str, head: str, **facteur: Any) -> StageEvent:
        return parse_event(self.document(stage, head, **facteur))

    def document(self, stage: str, head: str, **facteur: Any) -> dict[str, Any]:
        """The event file's JSON, as the orchestrator writes it."""
        return dict(
            {
                "stage": stage,
                "repository": REPO,
                "base": "main",
                "head": head,
                "issueNumber": self.issue,
                "issueTitle": project.TITLE,
                "facteur": {
                    "runId": str(uuid.uuid4()),
                    "ideaId": self.idea,
                    "attempt": 1,
                    "callbackUrl": "http://facteur.test/api/v1/runs/x/events",
                    "callbackToken": "t",
                    "spec": {"goal": project.GOAL, "constraints": project.CONSTRAINTS},
                    **facteur,
                },
            }
        )

    def task(self, key: str) -> dict[str, Any]:
        plan = parse_plan(self.plan_markdown())
        task = plan.task(key)
        return {
            "key": task.key,
            "title": task.title,
            "description": task.description,
            "acceptanceCriteria": list(task.acceptance_criteria),
            "paths": list(task.paths),
            "dependsOn": list(task.depends_on),
        }

    def plan_markdown(self) -> str:
        path = self.root / "plan.md"
        if not path.exists():
            raise AssertionError("run the planning stage first")
        return path.read_text()

    async def run(
        self,
        event: StageEvent,
        calls: Calls | None = None,
        *,
        settings: Settings | None = None,
        forge: LocalForge | None = None,
    ) -> tuple[bool, str, Calls, Path]:
        calls = calls or Calls()
        self.runs += 1
        cwd = self.root / f"run-{self.runs}"
        cwd.mkdir()
        reporter = Reporter(event.run, attempts=1, transport=httpx.MockTransport(calls.handle))
        stage_forge = None
        if forge is not None:
            stage_forge = StageForge(forge, "local", str(forge.repository_path(REPO)))
        ok, message = await run_stage(
            settings or self.settings(), event, cwd=cwd, reporter=reporter, forge=stage_forge
        )
        return ok, message, calls, cwd


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    monkeypatch.setenv("EXAMPLE_AGENT_STATE_DIR", str(tmp_path / "agent-state"))
    return Bench(tmp_path)


async def plan_it(bench: Bench) -> str:
    ok, message, calls, _ = await bench.run(bench.event("planning", "facteur/plan"))
    assert ok, message
    markdown = str(calls.of("plan")[0]["markdown"])
    (bench.root / "plan.md").write_text(markdown)
    return markdown


async def implement(bench: Bench, key: str, deps: tuple[str, ...] = ()) -> tuple[bool, str, Calls, Path]:
    dependencies = [{"key": d, "title": d, "branch": f"facteur/{d}", "summary": f"{d} done"} for d in deps]
    event = bench.event(
        "implementation",
        f"facteur/{key}",
        task=bench.task(key),
        plan={"version": 1, "markdown": bench.plan_markdown()},
        dependencies=dependencies,
    )
    return await bench.run(event)


async def test_planning_publishes_the_plan_comment_and_sends_the_plan(bench: Bench) -> None:
    issue = await bench.forge.create_issue(REPO, _draft("Give calc add, multiply and dot"))
    bench.issue = issue.number
    ok, message, calls, cwd = await bench.run(bench.event("planning", "facteur/plan"))
    assert ok, message
    assert message.startswith("plan with 3 task(s): add, multiply, dot")
    assert [b["type"] for b in calls.bodies] == ["started", "plan", "completed"]
    plan = parse_plan(calls.of("plan")[0]["markdown"])
    assert [(t.key, t.depends_on) for t in plan.tasks] == [
        ("add", ()), ("multiply", ()), ("dot", ("add", "multiply")),
    ]  # fmt: skip
    comment = await bench.forge.latest_comment_with(REPO, issue.number, PLAN_MARKER)
    assert comment is not None and "#### dot" in comment.body
    assert calls.of("completed")[0]["outcome"] == "succeeded"
    for name in (
        "logs/stage.log",
        "logs/git.log",
        "logs/agent-plan-1.jsonl",
        "logs/prompt-plan-1.md",
        "timing.json",
    ):
        assert (cwd / name).is_file(), name
    timing = json.loads((cwd / "timing.json").read_text())
    assert timing["agent_runs"] == 1 and timing["overhead_seconds"] >= 0
    # the planning prompt fences the idea and names the plan file
    prompt = (cwd / "logs/prompt-plan-1.md").read_text()
    assert "PLAN.md" in prompt and "calc/dot.py" in prompt
    # a second planning run updates the one plan comment
    ok, _, _, _ = await bench.run(bench.event("planning", "facteur/plan"))
    assert ok
    assert len([c for c in await bench.forge.list_comments(REPO, issue.number) if PLAN_MARKER in c.body]) == 1


async def test_a_plan_not_in_the_format_is_fed_back_once(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_AGENT_BAD_PLAN_ONCE", "1")
    ok, message, calls, cwd = await bench.run(bench.event("planning", "facteur/plan"))
    assert ok, message
    retry = (cwd / "logs/prompt-plan-2.md").read_text()
    assert "was refused" in retry and "- the plan has no tasks" in retry
    assert len(calls.of("plan")) == 1


async def test_a_plan_never_in_the_format_fails_clearly(bench: Bench) -> None:
    settings = bench.settings(FACTEUR_AGENT__COMMAND="sh -c 'echo not a plan > PLAN.md'")
    ok, message, calls, _ = await bench.run(bench.event("planning", "facteur/plan"), settings=settings)
    assert not ok
    assert "not in the plan format after 2 attempt(s)" in message
    assert calls.of("plan") == []
    completed = calls.of("completed")[0]
    assert completed["outcome"] == "failed" and "plan format" in completed["summary"]
    assert [a["name"] for a in completed["artifacts"]] == ["plan-refused.md"]


async def test_a_plan_facteur_refuses_fails_the_run(bench: Bench) -> None:
    ok, message, _, _ = await bench.run(bench.event("planning", "facteur/plan"), Calls({"plan": 422}))
    assert not ok and "Facteur did not take the plan (HTTP 422): refused here" in message


async def test_tasks_build_on_their_dependencies_with_draft_pulls_and_progress(bench: Bench) -> None:
    issue = await bench.forge.create_issue(REPO, _draft("calc"))
    bench.issue = issue.number
    await plan_it(bench)
    for key in ("add", "multiply"):
        ok, message, calls, cwd = await implement(bench, key)
        assert ok, message
        completed = calls.of("completed")[0]
        assert completed["branch"] == f"facteur/{key}"
        assert completed["pull_request"].startswith("local://")
        assert {a["name"] for a in completed["artifacts"]} == {
            "changes.patch",
            "git-status.txt",
            "changes.tar.gz",
        }
        assert f"calc/{key}.py" in (cwd / "artifacts/changes.patch").read_text()
    ok, message, calls, _ = await implement(bench, "dot", ("add", "multiply"))
    assert ok, message
    pulls = {p.head_ref: p for p in bench.forge.list_pulls(REPO)}
    assert set(pulls) == {"facteur/add", "facteur/multiply", "facteur/dot"}
    assert all(p.draft and p.base_ref == "main" for p in pulls.values())
    # dot's branch carries its dependencies' work, and its commit references the issue
    files = _git(bench, "ls-tree", "-r", "--name-only", "facteur/dot").split()
    assert {"calc/add.py", "calc/multiply.py", "calc/dot.py"} <= set(files)
    assert f"Refs #{issue.number}" in _git(bench, "log", "-1", "--format=%B", "facteur/dot")
    # one progress comment per task, ticked at the end
    progress = [
        c.body for c in await bench.forge.list_comments(REPO, issue.number) if PROGRESS_MARKER in c.body
    ]
    assert len(progress) == 3
    dot = next(body for body in progress if "<!-- facteur:task:dot -->" in body)
    assert "**Status:** done" in dot and "- [x] vectors of different lengths raise `ValueError`" in dot
    # running a task again finds its pull request instead of opening another
    ok, _, _, _ = await implement(bench, "dot", ("add", "multiply"))
    assert ok
    assert len(bench.forge.list_pulls(REPO)) == 3


async def test_a_failed_attempt_is_resumed_by_the_next(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    await plan_it(bench)
    monkeypatch.setenv("EXAMPLE_AGENT_FAIL_ONCE", "add")
    ok, message, calls, cwd = await implement(bench, "add")
    assert not ok
    assert "the agent failed" in message and "resume archive" in message
    archive = bench.root / "resume" / bench.idea / "add"
    assert (archive / "changes.patch").read_text().count("calc/add.py") >= 1
    assert calls.of("completed")[0]["outcome"] == "failed"
    assert _git(bench, "branch", "--list", "facteur/add") == ""  # nothing pushed
    ok, message, _, cwd = await implement(bench, "add")
    assert ok, message
    assert (
        "Resumed attempt 1" in (cwd / "logs/stage.log").read_text()
        or "resumed" in (cwd / "logs/stage.log").read_text()
    )
    assert not archive.exists()


async def test_an_agent_that_changes_nothing_fails_the_run(bench: Bench) -> None:
    await plan_it(bench)
    settings = bench.settings(FACTEUR_AGENT__COMMAND="true")
    event = bench.event("implementation", "facteur/add", task=bench.task("add"))
    ok, message, _, _ = await bench.run(event, settings=settings)
    assert not ok and "the agent changed nothing" in message


class RefusingForge(LocalForge):
    """The local forge, refusing to open the first ``refusals`` pull requests."""

    refusals = 0

    async def create_draft_pull(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        if RefusingForge.refusals > 0:
            RefusingForge.refusals -= 1
            raise ForgeError("pull request creation is down")
        return await super().create_draft_pull(repo, head=head, base=base, title=title, body=body)


@pytest.mark.parametrize(("refusals", "opened"), [(2, True), (3, False)])
async def test_the_draft_pull_request_is_retried_a_bounded_number_of_times(
    bench: Bench, refusals: int, opened: bool
) -> None:
    await plan_it(bench)
    RefusingForge.refusals = refusals
    event = bench.event("implementation", "facteur/add", task=bench.task("add"))
    ok, message, _, _ = await bench.run(event, forge=RefusingForge(bench.root / "forge"))
    assert ok is opened
    if not opened:
        assert "no pull request for facteur/add into main in demo/calc after 3 attempt(s)" in message
        assert "pull request creation is down" in message


async def test_review_approves_marks_ready_and_a_thread_holds_it_back(bench: Bench) -> None:
    await plan_it(bench)
    for key, deps in (("add", ()), ("multiply", ()), ("dot", ("add", "multiply"))):
        ok, message, _, _ = await implement(bench, key, deps)
        assert ok, message
    [dot] = bench.forge.list_pulls(REPO, head="facteur/dot")
    targets = [{"key": "dot", "title": "dot", "branch": "facteur/dot", "pullRequest": dot.url}]
    event = bench.event(
        "review", "facteur/dot", targets=targets, plan={"version": 1, "markdown": bench.plan_markdown()}
    )
    ok, message, calls, _ = await bench.run(event)
    assert ok, message
    assert message.splitlines()[0] == "APPROVED"
    [dot] = bench.forge.list_pulls(REPO, head="facteur/dot")
    assert not dot.draft
    verdict = await bench.forge.latest_comment_with(REPO, dot.number, REVIEW_MARKER)
    assert verdict is not None and "Review: approved" in verdict.body
    assert calls.of("completed")[0]["pull_request"] == dot.url


async def test_review_requests_changes_when_the_tests_fail(bench: Bench) -> None:
    await plan_it(bench)
    ok, message, _, _ = await implement(bench, "add")
    assert ok, message
    [add] = bench.forge.list_pulls(REPO, head="facteur/add")
    bench.forge.add_review_thread(REPO, add.number, "Please handle floats", path="calc/add.py")
    targets = [{"key": "add", "title": "add", "branch": "facteur/add", "pullRequest": add.url}]
    ok, message, calls, cwd = await bench.run(bench.event("review", "facteur/add", targets=targets))
    assert not ok
    assert message.splitlines()[0] == "CHANGES REQUESTED"
    assert "Please handle floats" in (cwd / "logs/prompt-review-1.md").read_text()
    [add] = bench.forge.list_pulls(REPO, head="facteur/add")
    assert add.draft
    verdict = await bench.forge.latest_comment_with(REPO, add.number, REVIEW_MARKER)
    assert verdict is not None and "changes requested" in verdict.body
    assert calls.of("completed")[0]["outcome"] == "failed"


async def test_heartbeats_are_sent_while_the_agent_works(bench: Bench) -> None:
    settings = bench.settings(
        FACTEUR_STAGE__HEARTBEAT_SECONDS="0.05",
        FACTEUR_AGENT__COMMAND=f"sh -c 'sleep 0.6; exec {sys.executable} {AGENT}'",
    )
    ok, message, calls, _ = await bench.run(bench.event("planning", "facteur/plan"), settings=settings)
    assert ok, message
    beats = calls.of("heartbeat")
    assert len(beats) >= 3
    assert [b["id"] for b in beats[:3]] == ["heartbeat-1", "heartbeat-2", "heartbeat-3"]


async def test_a_missing_base_branch_fails_with_its_name(bench: Bench) -> None:
    event = parse_event({**bench.document("planning", "facteur/plan"), "base": "trunk"})
    ok, message, calls, _ = await bench.run(event)
    assert not ok and "trunk" in message
    assert calls.of("completed")[0]["outcome"] == "failed"


def _draft(title: str) -> Any:
    from facteur.forge.port import IssueDraft

    return IssueDraft(title=title, body="")


def _git(bench: Bench, *args: str) -> str:
    import subprocess

    return subprocess.run(
        ["git", *args], cwd=bench.forge.repository_path(REPO), capture_output=True, text=True, check=True
    ).stdout.strip()


async def test_a_failed_attempt_on_a_file_that_is_not_utf8_keeps_its_bytes(bench: Bench) -> None:
    await plan_it(bench)
    script = bench.root / "latin1-agent.sh"
    script.write_text("#!/bin/sh\nprintf 'caf\\351\\n' > notes.txt\nexit 1\n")
    script.chmod(0o755)
    settings = bench.settings(FACTEUR_AGENT__COMMAND=str(script))
    event = bench.event("implementation", "facteur/add", task=bench.task("add"))
    ok, message, _, cwd = await bench.run(event, settings=settings)
    assert not ok and "resume archive" in message
    patch = (bench.root / "resume" / bench.idea / "add" / "changes.patch").read_bytes()
    assert b"caf\xe9" in patch
    assert b"caf\xe9" in (cwd / "artifacts" / "changes.patch").read_bytes()


async def test_the_stage_streams_into_its_discord_channel_when_discord_is_configured(bench: Bench) -> None:
    discord = FakeDiscord()
    settings = bench.settings(DISCORD_BOT_TOKEN=TOKEN, DISCORD_GUILD_ID=GUILD, FACTEUR_DISCORD__API_URL=API)
    event = bench.event("planning", "facteur/plan")
    channel = StageChannel(settings.discord, event, transport=httpx.MockTransport(discord.handle))
    calls = Calls()
    bench.runs += 1
    cwd = bench.root / f"run-{bench.runs}"
    cwd.mkdir()
    reporter = Reporter(event.run, attempts=1, transport=httpx.MockTransport(calls.handle))
    ok, message = await run_stage(settings, event, cwd=cwd, reporter=reporter, channel=channel)
    assert ok, message
    [text] = [c for c in discord.channels if c["type"] == 0]
    assert text["name"].startswith("calc-planning-") and text["name"].endswith(str(event.run.run_id)[:8])
    assert next(c["name"] for c in discord.channels if c["type"] == 4).startswith("Codex Channel - ")
    posted = discord.messages[text["id"]]
    assert "demo/calc" in posted[0]  # the intro
    streamed = "\n".join(posted[1:])
    assert "planned 3 tasks: add, multiply, dot" in streamed
    assert "planning succeeded: plan with 3 task(s)" in streamed


async def test_a_discord_that_refuses_never_fails_the_stage(bench: Bench) -> None:
    discord = FakeDiscord()
    settings = bench.settings(DISCORD_BOT_TOKEN="wrong", DISCORD_GUILD_ID=GUILD, FACTEUR_DISCORD__API_URL=API)
    event = bench.event("planning", "facteur/plan")
    channel = StageChannel(settings.discord, event, transport=httpx.MockTransport(discord.handle))
    bench.runs += 1
    cwd = bench.root / f"run-{bench.runs}"
    cwd.mkdir()
    reporter = Reporter(event.run, attempts=1, transport=httpx.MockTransport(Calls().handle))
    ok, message = await run_stage(settings, event, cwd=cwd, reporter=reporter, channel=channel)
    assert ok, message
    assert channel.failed and discord.messages == {}
    assert "discord stream stopped" in (cwd / "logs" / "stage.log").read_text()


async def test_a_froussard_planning_run_keeps_intakes_prompt_and_gives_the_agent_the_issue(
    bench: Bench,
) -> None:
    issue = await bench.forge.create_issue(REPO, _draft(project.TITLE))
    event = parse_event(
        {
            "stage": "planning",
            "prompt": "Plan the issue below (intake's prompt).",
            "repository": REPO,
            "base": "main",
            "head": "codex/issue-1",
            "issueNumber": issue.number,
            "issueTitle": project.TITLE,
            "issueBody": project.GOAL,
        }
    )
    ok, message, calls, cwd = await bench.run(event)
    assert ok, message
    assert (cwd / "logs/prompt-plan-1.md").read_text() == "Plan the issue below (intake's prompt)."
    context = json.loads((cwd / "agent-context-plan-1.json").read_text())
    assert context["idea"]["spec"] == {"title": project.TITLE, "body": project.GOAL}
    assert await bench.forge.latest_comment_with(REPO, issue.number, PLAN_MARKER) is not None
    assert calls.bodies == []  # no callback URL: the reports stay in the log


async def test_review_names_a_conflict_with_the_base(bench: Bench) -> None:
    await plan_it(bench)
    ok, message, _, _ = await implement(bench, "add")
    assert ok, message
    # someone changes calc/add.py on main meanwhile
    scratch = bench.root / "scratch"
    _git(bench, "clone", "--quiet", str(bench.forge.repository_path(REPO)), str(scratch))
    (scratch / "calc" / "add.py").parent.mkdir(exist_ok=True)
    (scratch / "calc" / "add.py").write_text("def add(a, b):\n    return b + a\n")
    for args in (("add", "."), ("commit", "-qm", "add on main"), ("push", "-q", "origin", "HEAD:main")):
        _git(bench, "-C", str(scratch), "-c", "user.name=x", "-c", "user.email=x@x", *args)
    [pull] = bench.forge.list_pulls(REPO, head="facteur/add")
    assert pull.draft  # a draft reports no mergeable state: the stage finds the conflict itself
    targets = [{"key": "add", "title": "add", "branch": "facteur/add", "pullRequest": pull.url}]
    _, _, _, cwd = await bench.run(bench.event("review", "facteur/add", targets=targets))
    assert "facteur/add conflicts with main (calc/add.py)" in (cwd / "logs/prompt-review-1.md").read_text()


async def test_an_approval_from_an_agent_that_then_fails_does_not_count(bench: Bench) -> None:
    await plan_it(bench)
    ok, message, _, _ = await implement(bench, "add")
    assert ok, message
    [add] = bench.forge.list_pulls(REPO, head="facteur/add")
    settings = bench.settings(FACTEUR_AGENT__COMMAND="sh -c 'echo APPROVED; exit 3'")
    targets = [{"key": "add", "title": "add", "branch": "facteur/add", "pullRequest": add.url}]
    ok, message, _, _ = await bench.run(
        bench.event("review", "facteur/add", targets=targets), settings=settings
    )
    assert not ok and "said APPROVED for facteur/add but then failed" in message
    [add] = bench.forge.list_pulls(REPO, head="facteur/add")
    assert add.draft


async def test_a_task_built_on_its_dependencies_must_still_change_something(bench: Bench) -> None:
    await plan_it(bench)
    ok, message, _, _ = await implement(bench, "add")
    assert ok, message
    settings = bench.settings(FACTEUR_AGENT__COMMAND="true")
    event = bench.event(
        "implementation",
        "facteur/dot",
        task=bench.task("dot"),
        dependencies=[{"key": "add", "title": "add", "branch": "facteur/add", "summary": ""}],
    )
    ok, message, _, _ = await bench.run(event, settings=settings)
    assert (
        not ok
        and "the agent changed nothing: facteur/dot has no change beyond its dependencies' work" in message
    )
    assert bench.forge.list_pulls(REPO, head="facteur/dot") == []


async def test_each_review_target_gets_the_verdict_on_its_own_pull_request(bench: Bench) -> None:
    await plan_it(bench)
    for key in ("add", "multiply"):
        ok, message, _, _ = await implement(bench, key)
        assert ok, message
    pulls = {p.head_ref: p for p in bench.forge.list_pulls(REPO)}
    targets = [
        {"key": key, "title": key, "branch": f"facteur/{key}", "pullRequest": pulls[f"facteur/{key}"].url}
        for key in ("add", "multiply")
    ]
    # a pullNumber in the event (the Froussard path's) must not send every verdict to one pull request
    event = bench.event("review", "facteur/add", targets=targets, pullNumber=pulls["facteur/add"].number)
    _, message, _, _ = await bench.run(event)  # each branch alone fails the suite: changes requested
    assert message.splitlines()[1:] == [
        f"changes requested: facteur/{key} ({pulls[f'facteur/{key}'].url})" for key in ("add", "multiply")
    ]
    for key in ("add", "multiply"):
        number = pulls[f"facteur/{key}"].number
        assert await bench.forge.latest_comment_with(REPO, number, REVIEW_MARKER) is not None, key


def test_facteur_stage_bootstrap_prepares_the_checkout_alone(bench: Bench, tmp_path: Path) -> None:
    import subprocess

    # the add branch exists on the forge: a task depending on it starts from it
    scratch = tmp_path / "scratch"
    _git(bench, "clone", "--quiet", str(bench.forge.repository_path(REPO)), str(scratch))
    (scratch / "calc" / "add.py").write_text("def add(a, b):\n    return a + b\n")
    for args in (
        ("add", "."),
        ("commit", "-qm", "add"),
        ("push", "-q", "origin", "HEAD:refs/heads/facteur/add"),
    ):
        _git(bench, "-C", str(scratch), "-c", "user.name=x", "-c", "user.email=x@x", *args)
    event = bench.document("implementation", "facteur/dot")
    event["facteur"] = {
        "dependencies": [{"key": "add", "title": "add", "branch": "facteur/add", "summary": ""}]
    }
    where = tmp_path / "run"
    where.mkdir()
    (where / "event.json").write_text(json.dumps(event))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")},
        "FACTEUR_FORGE__KIND": "local",
        "FACTEUR_FORGE__LOCAL__ROOT": str(bench.root / "forge"),
    }
    run = [sys.executable, "-m", "facteur", "stage", "bootstrap", "--event", "event.json", "--json"]
    done = subprocess.run(run, cwd=where, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    checkout = json.loads(done.stdout)
    assert (checkout["head"], checkout["started_from"], checkout["merged"]) == (
        "facteur/dot", "dependencies", ["facteur/add"],
    )  # fmt: skip
    assert (where / "repo" / "calc" / "add.py").is_file()
    assert not (where / "logs").exists()  # nothing else: no agent, no reports
    event["base"] = "trunk"
    (where / "event.json").write_text(json.dumps(event))
    done = subprocess.run(run, cwd=where, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "bootstrap failed:" in done.stderr and "trunk" in done.stderr
    assert "Traceback" not in done.stderr


class StubAgent:
    """An agent that resumes sessions, reports usage and a to-do list, and does what the test says: write
    files, then succeed or fail. It records the requests it was given."""

    kind = "stub"
    supports_resume = True

    def __init__(
        self, *, files: dict[str, str] | None = None, fail: bool = False, final: str = "done"
    ) -> None:
        self.files = files or {}
        self.fail = fail
        self.requests: list[AgentRequest] = []

    async def run(self, request: AgentRequest, on_event: EventCallback | None = None) -> AgentResult:
        self.requests.append(request)
        for name, text in self.files.items():
            (request.workdir / name).parent.mkdir(parents=True, exist_ok=True)
            (request.workdir / name).write_text(text)
        events = [
            AgentEvent(kind=EventKind.SESSION, text="s-1"),
            AgentEvent(kind=EventKind.TODO_LIST, detail={"items": [{"text": "write add", "done": True}]}),
        ]
        for event in events:
            if on_event is not None:
                await on_event(event)
        return AgentResult(
            outcome=AgentOutcome.FAILED if self.fail else AgentOutcome.SUCCEEDED,
            message="it broke" if self.fail else "",
            final_message="done",
            session_id="s-1",
            model=None,
            tool_calls=0,
            usage=Usage(input_tokens=120, output_tokens=30, cost_usd=0.25, cost_source=CostSource.REPORTED),
            events=tuple(events),
            stream=StreamStats(),
            exit_code=1 if self.fail else 0,
            duration_seconds=0.01,
        )


async def stub_run(bench: Bench, event: StageEvent, agent: StubAgent) -> tuple[bool, str, Calls]:
    calls = Calls()
    bench.runs += 1
    cwd = bench.root / f"run-{bench.runs}"
    cwd.mkdir()
    reporter = Reporter(event.run, attempts=1, transport=httpx.MockTransport(calls.handle))
    ok, message = await run_stage(bench.settings(), event, cwd=cwd, reporter=reporter, agent=agent)
    return ok, message, calls


async def test_the_next_attempt_restores_the_work_and_resumes_the_session(bench: Bench) -> None:
    issue = await bench.forge.create_issue(REPO, _draft("calc"))
    bench.issue = issue.number
    await plan_it(bench)
    event = bench.event("implementation", "facteur/add", task=bench.task("add"))
    first = StubAgent(files={"calc/add.py": "def add(a, b):\n    return a + b\n"}, fail=True)
    ok, message, calls = await stub_run(bench, event, first)
    assert not ok and "it broke" in message
    assert first.requests[0].session_id is None
    # usage is reported as soon as the agent ends, before the outcome
    assert [b["type"] for b in calls.bodies][-2:] == ["usage", "completed"]
    assert calls.of("usage")[0] | {"id": ""} == {
        "id": "", "type": "usage", "input_tokens": 120, "output_tokens": 30, "cost_usd": 0.25,
    }  # fmt: skip
    # the second attempt's agent writes nothing: the branch's work can only come from the archive
    second = StubAgent()
    ok, message, _ = await stub_run(
        bench, bench.event("implementation", "facteur/add", task=bench.task("add")), second
    )
    assert ok, message
    assert second.requests[0].session_id == "s-1"
    assert "def add" in _git(bench, "show", "facteur/add:calc/add.py")
    progress = await bench.forge.latest_comment_with(REPO, issue.number, "<!-- facteur:task:add -->")
    assert progress is not None
    assert "Resumed attempt 1's work (patch restored)." in progress.body
    assert "The agent's to-do list:" in progress.body and "- [x] write add" in progress.body


async def test_an_open_thread_keeps_an_approved_pull_request_in_draft(bench: Bench) -> None:
    await plan_it(bench)
    for key, deps in (("add", ()), ("multiply", ()), ("dot", ("add", "multiply"))):
        ok, message, _, _ = await implement(bench, key, deps)
        assert ok, message
    [dot] = bench.forge.list_pulls(REPO, head="facteur/dot")
    bench.forge.add_review_thread(REPO, dot.number, "Name the vectors xs and ys", path="calc/dot.py")
    targets = [{"key": "dot", "title": "dot", "branch": "facteur/dot", "pullRequest": dot.url}]
    ok, message, _, cwd = await bench.run(bench.event("review", "facteur/dot", targets=targets))
    assert ok and message.splitlines()[0] == "APPROVED"  # the tests pass
    [dot] = bench.forge.list_pulls(REPO, head="facteur/dot")
    assert dot.draft  # but a thread is open: not ready
    assert "Name the vectors xs and ys" in (cwd / "logs/prompt-review-1.md").read_text()


async def test_a_review_of_a_branch_origin_does_not_have_fails(bench: Bench) -> None:
    targets = [{"key": "ghost", "title": "ghost", "branch": "facteur/ghost", "pullRequest": None}]
    ok, message, _, _ = await bench.run(bench.event("review", "facteur/ghost", targets=targets))
    assert not ok and "facteur/ghost does not exist in demo/calc: there is nothing to review" in message
    assert _git(bench, "branch", "--list", "facteur/ghost") == ""
