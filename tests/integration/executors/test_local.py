"""The local executor runs real subprocesses."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facteur.domain.runs import workflow_name
from facteur.domain.stages import Stage
from facteur.errors import ConfigError, ExecutorError
from facteur.executors.local import LocalExecutor, parse_command
from facteur.executors.port import WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus
from facteur.executors.processes import alive
from facteur.settings import LocalExecutorSettings
from tests.support.fakes import FakeClock

PY = shlex.quote(sys.executable)


def request(
    name_seed: int = 0, *, run_id: uuid.UUID | None = None, body: bytes = b'{"stage":"planning"}'
) -> WorkflowRequest:
    run_id = run_id or uuid.uuid4()
    created = datetime(2026, 11, 21, 12, 0, name_seed % 60, tzinfo=UTC)
    return WorkflowRequest(
        run_id=run_id,
        idea_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        stage=Stage.PLANNING,
        name=workflow_name(Stage.PLANNING, run_id, created),
        created_at=created,
        event_body=body,
        raw_event=b"\x08\x01",
        repository="acme/widgets",
        issue_number=7,
    )


def script(tmp_path: Path, name: str, code: str) -> str:
    path = tmp_path / name
    path.write_text(code)
    return f"{PY} {shlex.quote(str(path))}"


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, WorkflowPhase]] = []
        self.changed = asyncio.Event()

    async def __call__(self, run_id: str, status: WorkflowStatus) -> None:
        self.seen.append((run_id, status.phase))
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


ExecutorFactory = Callable[..., LocalExecutor]


@pytest.fixture
async def make_executor(tmp_path: Path, clock: FakeClock) -> AsyncIterator[ExecutorFactory]:
    created: list[LocalExecutor] = []

    def factory(command: str, *, concurrency: int = 2, recorder: Recorder | None = None) -> LocalExecutor:
        settings = LocalExecutorSettings(
            workdir=tmp_path / "runs", max_concurrency=concurrency, command=command
        )
        executor = LocalExecutor(settings, clock=clock, listener=recorder)
        created.append(executor)
        return executor

    yield factory
    for executor in created:
        await executor.aclose()


def phases(recorder: Recorder, run_id: uuid.UUID) -> list[WorkflowPhase]:
    return [phase for rid, phase in recorder.seen if rid == str(run_id)]


async def test_runs_the_command_with_the_event_and_records_the_outcome(
    tmp_path: Path, make_executor: ExecutorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACTEUR_SERVER__API_TOKEN", "super-secret-token")
    code = """
import json, os, sys
event = json.load(open(sys.argv[2]))
print("stage", sys.argv[1], "event", event["stage"], "run", os.environ["FACTEUR_RUN_ID"])
print("token", os.environ.get("FACTEUR_SERVER__API_TOKEN", "absent"))
print("cwd", os.getcwd())
"""
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "agent.py", code) + " {stage} {event_file}", recorder=recorder)
    await executor.start()
    req = request()
    submission = await executor.submit(req)
    assert submission.created
    assert submission.ref == WorkflowRef("local", "local", req.name)

    await recorder.wait_for(lambda: WorkflowPhase.SUCCEEDED in phases(recorder, req.run_id))
    assert phases(recorder, req.run_id) == [WorkflowPhase.RUNNING, WorkflowPhase.SUCCEEDED]
    status = await executor.status(submission.ref)
    assert status.phase is WorkflowPhase.SUCCEEDED
    assert status.details["exit_code"] == "0"
    assert status.started_at is not None and status.finished_at is not None
    log = executor.log_file(req.name).read_text()
    run_dir = tmp_path / "runs" / req.name
    assert f"stage planning event planning run {req.run_id}" in log
    assert "token absent" in log  # Facteur's own settings do not leak into stage processes
    assert f"cwd {run_dir}" in log
    assert json.loads((run_dir / "event.json").read_text()) == {"stage": "planning"}


async def test_a_failing_command_is_failed_with_its_exit_status(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "fail.py", "import sys; sys.exit(7)"), recorder=recorder)
    await executor.start()
    req = request()
    ref = (await executor.submit(req)).ref
    await recorder.wait_for(lambda: WorkflowPhase.FAILED in phases(recorder, req.run_id))
    status = await executor.status(ref)
    assert status.phase is WorkflowPhase.FAILED
    assert status.message == "exited with status 7"


async def test_a_missing_program_fails_the_run_clearly(make_executor: ExecutorFactory) -> None:
    recorder = Recorder()
    executor = make_executor("/nonexistent/agent {event_file}", recorder=recorder)
    await executor.start()
    req = request()
    ref = (await executor.submit(req)).ref
    await recorder.wait_for(lambda: WorkflowPhase.FAILED in phases(recorder, req.run_id))
    assert "cannot start /nonexistent/agent" in (await executor.status(ref)).message


async def test_concurrency_limit_and_submission_order(tmp_path: Path, make_executor: ExecutorFactory) -> None:
    journal = tmp_path / "journal.txt"
    code = f"""
import os, sys, time
with open({str(journal)!r}, "a") as f:
    f.write("start " + os.environ["FACTEUR_RUN_ID"] + "\\n")
time.sleep(0.15)
with open({str(journal)!r}, "a") as f:
    f.write("end " + os.environ["FACTEUR_RUN_ID"] + "\\n")
"""
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "slow.py", code), concurrency=1, recorder=recorder)
    await executor.start()
    requests = [request(n) for n in range(4)]
    for req in requests:
        await executor.submit(req)
    await recorder.wait_for(
        lambda: all(WorkflowPhase.SUCCEEDED in phases(recorder, r.run_id) for r in requests)
    )
    expected = []
    for req in requests:
        expected += [f"start {req.run_id}", f"end {req.run_id}"]
    assert journal.read_text().splitlines() == expected


async def test_two_at_once_when_allowed(tmp_path: Path, make_executor: ExecutorFactory) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    code = f"""
import os, time, pathlib
d = pathlib.Path({str(barrier)!r})
(d / os.environ["FACTEUR_RUN_ID"]).touch()
deadline = time.time() + 10
while len(list(d.iterdir())) < 2 and time.time() < deadline:
    time.sleep(0.01)
raise SystemExit(0 if len(list(d.iterdir())) >= 2 else 1)
"""
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "pair.py", code), concurrency=2, recorder=recorder)
    await executor.start()
    first, second = request(1), request(2)
    await executor.submit(first)
    await executor.submit(second)
    await recorder.wait_for(
        lambda: all(
            any(p in phases(recorder, r.run_id) for p in (WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED))
            for r in (first, second)
        )
    )
    assert WorkflowPhase.SUCCEEDED in phases(recorder, first.run_id)
    assert WorkflowPhase.SUCCEEDED in phases(recorder, second.run_id)


async def test_resubmission_is_the_same_workflow(tmp_path: Path, make_executor: ExecutorFactory) -> None:
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "ok.py", "pass"), recorder=recorder)
    await executor.start()
    req = request()
    assert (await executor.submit(req)).created
    again = await executor.submit(req)
    assert not again.created
    await recorder.wait_for(lambda: WorkflowPhase.SUCCEEDED in phases(recorder, req.run_id))
    assert phases(recorder, req.run_id).count(WorkflowPhase.RUNNING) == 1
    imposter = dataclasses.replace(req, run_id=uuid.uuid4())
    with pytest.raises(ExecutorError, match="belongs to run"):
        await executor.submit(imposter)


async def test_cancel_a_running_workflow_kills_its_process_group(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    pid_file = tmp_path / "child.pid"
    code = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(60)
"""
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "hang.py", code), recorder=recorder)
    await executor.start()
    req = request()
    ref = (await executor.submit(req)).ref
    await recorder.wait_for(lambda: WorkflowPhase.RUNNING in phases(recorder, req.run_id))
    async with asyncio.timeout(10):
        while not pid_file.exists() or not pid_file.read_text():
            await asyncio.sleep(0.02)
    child_pid = int(pid_file.read_text())
    await executor.cancel(ref)
    await recorder.wait_for(lambda: WorkflowPhase.CANCELLED in phases(recorder, req.run_id))
    assert (await executor.status(ref)).phase is WorkflowPhase.CANCELLED
    async with asyncio.timeout(5):
        while alive(child_pid):
            await asyncio.sleep(0.02)


async def test_cancel_a_queued_workflow_means_it_never_runs(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    marker = tmp_path / "ran"
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "touch.py", f"open({str(marker)!r}, 'w')"), recorder=recorder)
    req = request()
    ref = (await executor.submit(req)).ref  # workers not started yet: it waits in the queue
    assert (await executor.status(ref)).phase is WorkflowPhase.PENDING
    await executor.cancel(ref)
    await executor.start()
    await asyncio.sleep(0.3)
    assert (await executor.status(ref)).phase is WorkflowPhase.CANCELLED
    assert not marker.exists()
    assert phases(recorder, req.run_id) == [WorkflowPhase.CANCELLED]
    await executor.cancel(WorkflowRef("local", "local", "unknown-workflow"))  # not an error


async def test_a_restart_runs_what_was_queued_and_marks_vanished_processes_lost(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    command = script(tmp_path, "ok.py", "pass")
    first = make_executor(command)
    queued = request(1)
    await first.submit(queued)  # never started: Facteur "stopped" before running it
    await first.aclose()

    running = request(2)
    await first.submit(running)
    state_file = tmp_path / "runs" / running.name / "state.json"
    state = json.loads(state_file.read_text())
    state.update(state="running", pid=2**22 + 12345)  # a pid that does not exist
    state_file.write_text(json.dumps(state))

    recorder = Recorder()
    second = make_executor(command, recorder=recorder)
    await second.start()
    await recorder.wait_for(lambda: WorkflowPhase.SUCCEEDED in phases(recorder, queued.run_id))
    lost = await second.status(WorkflowRef("local", "local", running.name))
    assert lost.phase is WorkflowPhase.LOST
    assert await second.status(WorkflowRef("local", "local", "nope")) == WorkflowStatus(
        phase=WorkflowPhase.NOT_FOUND
    )


async def test_stopping_facteur_marks_running_workflows_lost(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    recorder = Recorder()
    executor = make_executor(script(tmp_path, "hang.py", "import time; time.sleep(60)"), recorder=recorder)
    await executor.start()
    req = request()
    ref = (await executor.submit(req)).ref
    await recorder.wait_for(lambda: WorkflowPhase.RUNNING in phases(recorder, req.run_id))
    await executor.aclose()
    assert (await executor.status(ref)).phase is WorkflowPhase.LOST


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        ("", "it is empty"),
        ("agent 'unclosed", "No closing quotation"),
        ("agent {nope}", "bad placeholder"),
        ("agent {0}", "bad placeholder"),
    ],
)
def test_bad_command_templates_are_config_errors(command: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"executor.local.command: .*{problem}"):
        parse_command(command)


def test_placeholders_fill_single_arguments_only() -> None:
    assert parse_command("agent --event={event_file} '{stage} x'") == [
        "agent",
        "--event={event_file}",
        "{stage} x",
    ]


async def test_instant_processes_are_reported_running_then_succeeded(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    recorder = Recorder()
    executor = make_executor("true", concurrency=4, recorder=recorder)
    await executor.start()
    requests = [request(n) for n in range(20)]
    for req in requests:
        await executor.submit(req)
    await recorder.wait_for(
        lambda: all(WorkflowPhase.SUCCEEDED in phases(recorder, r.run_id) for r in requests)
    )
    for req in requests:
        assert phases(recorder, req.run_id) == [WorkflowPhase.RUNNING, WorkflowPhase.SUCCEEDED]


async def test_status_details_name_the_pid_exit_code_and_log(
    tmp_path: Path, make_executor: ExecutorFactory
) -> None:
    recorder = Recorder()
    executor = make_executor("true", recorder=recorder)
    await executor.start()
    req = request()
    ref = (await executor.submit(req)).ref
    await recorder.wait_for(lambda: WorkflowPhase.SUCCEEDED in phases(recorder, req.run_id))
    details = (await executor.status(ref)).details
    assert details["log"] == str(tmp_path / "runs" / req.name / "run.log")
    assert details["exit_code"] == "0"
    assert int(details["pid"]) > 0
