"""One demo session: a temporary project on the local forge, an embedded Facteur serving it, one idea
carried through planning, three tasks and review, then a summary read back from the API, the forge and the
project's own tests.

Facteur runs in this process (SQLite, the local executor, the in-process bus); each stage run is a
``facteur stage`` subprocess that runs the example agent through the ``command`` backend and reports back
over HTTP, exactly as on a real installation. Nothing here takes a shortcut through the store: the idea is
submitted and watched through the REST API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from facteur.clock import parse_timestamp
from facteur.demo import project
from facteur.errors import ConfigError, FacteurError
from facteur.forge import local_git as git
from facteur.settings import ENV_PREFIX, load_settings

TERMINAL = frozenset({"completed", "failed", "cancelled"})


class DemoError(FacteurError):
    """The demo could not run."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoOptions:
    directory: Path | None = None
    timeout_seconds: float = 300.0
    agent_script: Path | None = None
    #: stage runs forked from the warm stage host (False: a new interpreter per run, for comparison)
    warm_stage_host: bool = True


@dataclass
class DemoSummary:
    directory: Path
    idea_id: str = ""
    state: str = ""
    elapsed_seconds: float = 0.0
    plan: list[dict[str, Any]] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    pull_requests: list[dict[str, Any]] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    last_branch: str | None = None
    commits: list[str] = field(default_factory=list)
    tests_passed: bool = False
    test_output: str = ""
    events: int = 0
    event_kinds: dict[str, int] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    overhead: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.state == "completed" and self.tests_passed

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "idea_id": self.idea_id,
            "state": self.state,
            "succeeded": self.succeeded,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "plan": self.plan,
            "runs": self.runs,
            "pull_requests": self.pull_requests,
            "branches": self.branches,
            "last_branch": self.last_branch,
            "commits": self.commits,
            "tests": {"passed": self.tests_passed, "output": self.test_output},
            "events": {"total": self.events, "by_kind": self.event_kinds},
            "cost": self.cost,
            "overhead": self.overhead,
        }


def find_example_agent() -> Path:
    """The example agent: shipped in the wheel as ``facteur/examples/script_agent.py``, or found in the
    source checkout at ``examples/agents/script_agent.py``."""
    shipped = resources.files("facteur") / "examples" / "script_agent.py"
    if shipped.is_file():
        return Path(str(shipped))
    checkout = Path(__file__).resolve().parents[3] / "examples" / "agents" / "script_agent.py"
    if checkout.is_file():
        return checkout
    raise DemoError("the example agent (examples/agents/script_agent.py) is not installed with this Facteur")


def prepare(directory: Path, agent_script: Path, port: int, *, warm_stage_host: bool = True) -> Path:
    """Write the project, put it on a new local forge, and write the configuration; return its path."""
    from facteur.forge.local import LocalForge

    source = project.write_project(directory / "project")
    forge = LocalForge(directory / "forge")
    forge.create_repository(project.REPOSITORY, source=source)
    config = {
        # the key of the runs' callback tokens is this demo's own (it lives and dies with the directory)
        "server": {"host": "127.0.0.1", "port": port, "callback_secret": secrets.token_hex(32)},
        "database": {"url": f"sqlite:///{directory / 'facteur.db'}"},
        "executor": {
            "kind": "local",
            "local": {
                "workdir": str(directory / "runs"),
                "max_concurrency": 3,
                "warm_stage_host": warm_stage_host,
            },
        },
        "forge": {"kind": "local", "local": {"root": str(directory / "forge")}},
        "agent": {
            "kind": "command",
            "command": shlex.join([sys.executable, str(agent_script)]),
            "idle_timeout_seconds": 120,
            "grace_seconds": 5,
            "timeout_seconds": 600,
        },
        "pipelines": {project.REPOSITORY: {"stages": ["review"]}},
        "scheduler": {
            "max_concurrent": 3,
            "max_per_repository": 3,
            "poll_seconds": 1,
            "reconcile_seconds": 5,
            "retry_backoff_seconds": 1,
        },
        "stage": {"resume_dir": str(directory / "resume"), "heartbeat_seconds": 5},
        "logging": {"level": "WARNING"},
    }
    path = directory / "facteur.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


async def run_demo(options: DemoOptions, say: Callable[[str], None]) -> DemoSummary:
    directory = (options.directory or Path(tempfile.mkdtemp(prefix="facteur-demo-"))).resolve()
    if directory.exists() and not directory.is_dir():
        raise DemoError(f"{directory} is not a directory: give --dir a new or empty directory")
    if directory.exists() and any(directory.iterdir()):
        raise DemoError(f"{directory} is not empty: give --dir a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    agent = (options.agent_script or find_example_agent()).resolve()
    port = _free_port()
    say(f"demo directory: {directory}")
    config_path = prepare(directory, agent, port, warm_stage_host=options.warm_stage_host)
    say(f"project {project.REPOSITORY} on the local forge ({directory / 'forge'}), its tests failing")
    # the demo's settings are its file alone (the stage runs it starts inherit this environment, and read
    # the same file)
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        del os.environ[name]
    try:
        settings = load_settings(config_path, environ={})
    except ConfigError as exc:
        raise DemoError(f"the demo's settings are invalid: {exc.message}") from None
    summary = DemoSummary(directory=directory)
    async with (
        _serving(settings, config_path) as base_url,
        httpx.AsyncClient(base_url=base_url, timeout=30) as client,
    ):
        say(f"Facteur is serving at {base_url} (SQLite, local executor, local forge, example agent)")
        started = time.monotonic()
        response = await client.post(
            "/api/v1/ideas",
            json={
                "title": project.TITLE,
                "goal": project.GOAL,
                "constraints": project.CONSTRAINTS,
                "success_metrics": project.SUCCESS_METRICS,
                "repository": project.REPOSITORY,
            },
        )
        if response.status_code != 201:
            raise DemoError(f"the idea was refused: HTTP {response.status_code} {response.text[:500]}")
        idea_id = response.json()["id"]
        summary.idea_id = idea_id
        say(f"idea {idea_id} submitted: {project.TITLE!r}")
        detail = await _watch(
            client, idea_id, options.timeout_seconds, started, say, kinds=summary.event_kinds
        )
        summary.elapsed_seconds = time.monotonic() - started
        summary.state = detail["state"]
        summary.cost = detail.get("cost", {})
        summary.plan = [
            {"key": t["key"], "title": t["title"], "depends_on": t["depends_on"], "state": t["state"]}
            for t in detail["tasks"]
            if t["key"] not in {"planning", "review"}
        ]
        summary.runs = _runs(detail, directory / "runs")
        summary.overhead = _overhead(summary.runs)
        summary.events = sum(summary.event_kinds.values())
    await _forge_facts(summary, directory / "forge")
    return summary


@contextlib.asynccontextmanager
async def _serving(settings: Any, config_path: Path) -> Any:
    import uvicorn

    from facteur.app import create_app

    app = create_app(settings, config_path=config_path)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve(), name="facteur-demo-server")
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            server.should_exit = True
            raise DemoError("the embedded Facteur did not start (see the messages above)")
        await asyncio.sleep(0.05)
    from facteur.executors.local import LocalExecutor

    executor = app.state.runtime.executor
    if isinstance(executor, LocalExecutor):
        # a server is up long before its first idea: wait, as it would have, for the warm stage host
        await executor.warmed()
    try:
        yield f"http://{settings.server.host}:{settings.server.port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _watch(
    client: httpx.AsyncClient,
    idea_id: str,
    limit: float,
    started: float,
    say: Callable[[str], None],
    *,
    kinds: dict[str, int],
) -> dict[str, Any]:
    """Follow the idea's audit log, print each step (transitions, runs, plans) as it is recorded and count
    the events by kind, until the idea ends; then return the idea as the API shows it."""
    deadline = time.monotonic() + limit
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if after is not None:
            params["after"] = after
        response = await client.get(f"/api/v1/ideas/{idea_id}/events", params=params)
        response.raise_for_status()
        page = response.json()
        ended = False
        for event in page["items"]:
            after = event["seq"]
            kinds[event["kind"]] = kinds.get(event["kind"], 0) + 1
            line = describe(event)
            if line:
                say(f"{time.monotonic() - started:6.1f}s  {line}")
            payload = event.get("payload") or {}
            ended = ended or (event["kind"] == "idea.transition" and payload.get("to") in TERMINAL)
        if ended:
            detail = await client.get(f"/api/v1/ideas/{idea_id}")
            detail.raise_for_status()
            result: dict[str, Any] = detail.json()
            return result
        if time.monotonic() > deadline:
            raise DemoError(f"the idea did not finish within {limit:.0f} s (see the steps above)")
        if page.get("next_after") is None:
            await asyncio.sleep(0.2)


def describe(event: Mapping[str, Any]) -> str | None:
    """One line for an audit event worth showing live, else None."""
    kind = event["kind"]
    payload = event.get("payload") or {}
    if kind == "idea.transition":
        skipped = payload.get("skipped") or []
        note = f" (skipped: {', '.join(skipped)})" if skipped else ""
        return f"idea: {payload.get('from')} -> {payload.get('to')}{note}"
    if kind == "task.transition":
        reason = payload.get("reason")
        note = f" ({str(reason).splitlines()[0][:120]})" if reason else ""
        return f"task {payload.get('key')}: {payload.get('from')} -> {payload.get('to')}{note}"
    if kind == "plan.received":
        return f"plan v{payload.get('plan_version')} received: {payload.get('tasks')} task(s)"
    if kind == "run.submitted":
        return f"run submitted: {payload.get('workflow')}"
    if kind == "run.completed":
        summary = str(payload.get("summary") or "").strip().splitlines()
        where = payload.get("pull_request") or payload.get("branch") or ""
        text = f" {summary[0][:100]}" if summary else ""
        return f"run {payload.get('outcome')}:{text}{f' [{where}]' if where else ''}"
    return None


def _runs(detail: Mapping[str, Any], runs_dir: Path) -> list[dict[str, Any]]:
    keys = {t["id"]: t["key"] for t in detail["tasks"]}
    rows = []
    for run in sorted(detail["runs"], key=lambda r: r["created_at"]):
        timing = _timing(runs_dir / str(run["workflow_name"]) / "timing.json")
        created, finished = parse_timestamp(run.get("created_at")), parse_timestamp(run.get("finished_at"))
        seconds = (finished - created).total_seconds() if created and finished else None
        agent = timing.get("agent_seconds")
        rows.append(
            {
                "stage": run["stage"],
                "task": keys.get(run["task_id"], "?"),
                "attempt": run["attempt"],
                "status": run["status"],
                "branch": run.get("branch"),
                "pull_request": run.get("pull_request"),
                "summary": (run.get("summary") or "").splitlines()[0:1],
                "seconds": seconds,
                "agent_seconds": agent,
                "stage_seconds": timing.get("wall_seconds"),
                # what Facteur itself took: the run's recorded time minus its agent's
                "overhead_seconds": None if seconds is None or agent is None else seconds - agent,
            }
        )
    return rows


def _overhead(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage: the runs' overhead (recorded time minus agent time), mean and worst, in milliseconds."""
    by_stage: dict[str, list[float]] = {}
    for run in runs:
        if run["overhead_seconds"] is not None:
            by_stage.setdefault(run["stage"], []).append(run["overhead_seconds"])
    return {
        stage: {
            "runs": len(values),
            "mean_ms": round(1000 * sum(values) / len(values)),
            "max_ms": round(1000 * max(values)),
        }
        for stage, values in by_stage.items()
    }


async def _forge_facts(summary: DemoSummary, forge_root: Path) -> None:
    from facteur.forge.local import LocalForge

    forge = LocalForge(forge_root)
    try:
        pulls = forge.list_pulls(project.REPOSITORY)
        summary.pull_requests = [
            {
                "number": p.number,
                "title": p.title,
                "head": p.head_ref,
                "draft": p.draft,
                "state": p.state,
                "url": p.url,
            }
            for p in pulls
        ]
        bare = forge.repository_path(project.REPOSITORY)
    finally:
        await forge.close()
    refs = git.run(bare, "for-each-ref", "--format=%(refname:short) %(objectname:short)", "refs/heads")
    refs_lines = refs.stdout.splitlines()
    summary.branches = dict(line.split(" ", 1) for line in refs_lines if " " in line)
    sinks = [t for t in summary.plan if not any(t["key"] in o["depends_on"] for o in summary.plan)]
    last = sinks[-1]["key"] if sinks else None
    branch = next((r["branch"] for r in reversed(summary.runs) if r["task"] == last and r["branch"]), None)
    summary.last_branch = branch
    if branch is None or branch not in summary.branches:
        summary.test_output = "no branch of the last task to test"
        return
    summary.commits = git.run(bare, "log", "--format=%h %s", f"main..{branch}").stdout.splitlines()
    summary.tests_passed, summary.test_output = await asyncio.to_thread(_run_tests, bare, branch)


def _run_tests(bare: Path, branch: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="facteur-demo-check-") as scratch:
        checkout = Path(scratch) / "calc"
        git.run(None, "clone", "--quiet", "--branch", branch, str(bare), str(checkout))
        result = subprocess.run(
            [sys.executable, "-m", "unittest", "discover", "-s", "tests", "-t", ".", "-v"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            check=False,
        )
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, "\n".join(output.splitlines()[-30:])


def _timing(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
