"""The warm stage host: Facteur's own ``facteur stage`` runs are forked from a preloaded interpreter. A run
ends with the stage's exit status and its output in the run's log, as a subprocess would; stopping a run
stops its agent too; a host that dies is started again for the next run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facteur.demo import project
from facteur.domain.runs import workflow_name
from facteur.domain.stages import Stage
from facteur.executors.local import LocalExecutor
from facteur.executors.port import WorkflowPhase, WorkflowRef, WorkflowRequest
from facteur.executors.processes import alive
from facteur.forge.local import LocalForge
from facteur.settings import LocalExecutorSettings
from tests.integration.executors.test_local import Recorder
from tests.support.fakes import FakeClock

COMMAND = "facteur stage {stage} --event {event_file}"


def request(body: dict[str, object]) -> WorkflowRequest:
    run_id = uuid.uuid4()
    created = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    return WorkflowRequest(
        run_id=run_id,
        idea_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        stage=Stage.PLANNING,
        name=workflow_name(Stage.PLANNING, run_id, created),
        created_at=created,
        event_body=json.dumps(body).encode(),
        raw_event=b"",
        repository=project.REPOSITORY,
        issue_number=0,
    )


@pytest.fixture
async def world(
    tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[Path, Recorder, list[LocalExecutor]]]:
    made: list[LocalExecutor] = []
    yield tmp_path, Recorder(), made
    for executor in made:
        await executor.aclose()


async def start(
    tmp_path: Path,
    clock: FakeClock,
    recorder: Recorder,
    made: list[LocalExecutor],
    *,
    warm: bool = True,
    terminate_seconds: float = 5.0,
    **env: str,
) -> LocalExecutor:
    settings = LocalExecutorSettings(workdir=tmp_path / "runs", command=COMMAND, warm_stage_host=warm)
    executor = LocalExecutor(
        settings, clock=clock, listener=recorder, stage_env=env, terminate_seconds=terminate_seconds
    )
    made.append(executor)
    await executor.start()
    await executor.warmed()
    return executor


async def finished(executor: LocalExecutor, recorder: Recorder, name: str) -> dict[str, object]:
    ref = WorkflowRef("local", "local", name)
    await recorder.wait_for(
        lambda: any(
            p in {WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED, WorkflowPhase.CANCELLED}
            for _, p in recorder.seen[-1:]
        ),
        60,
    )
    status = await executor.status(ref)
    return {"phase": status.phase, **status.details, "message": status.message}


@pytest.mark.parametrize("warm", [True, False])
async def test_a_bad_event_ends_the_run_with_the_stage_exit_status_and_its_message(
    world: tuple[Path, Recorder, list[LocalExecutor]], clock: FakeClock, warm: bool
) -> None:
    tmp_path, recorder, made = world
    executor = await start(tmp_path, clock, recorder, made, warm=warm)
    sent = request({"stage": "planning", "repository": "nope"})
    await executor.submit(sent)
    result = await finished(executor, recorder, sent.name)
    assert result["phase"] is WorkflowPhase.FAILED and result["exit_code"] == "2"
    log = (tmp_path / "runs" / sent.name / "run.log").read_text()
    assert "error: field 'repository' must be owner/name, not 'nope'" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    "agent",
    [
        "sleep 60",
        # an agent that ignores SIGTERM: the stage kills its group after agent.terminate_seconds, before the
        # executor's own grace for the stage (agent.terminate_seconds + 5 s, as the runtime sets it) is over
        "sh -c 'trap \"\" TERM; sleep 60'",
    ],
)
async def test_stopping_a_hosted_run_stops_its_agent(
    world: tuple[Path, Recorder, list[LocalExecutor]], clock: FakeClock, agent: str
) -> None:
    tmp_path, recorder, made = world
    forge = LocalForge(tmp_path / "forge")
    forge.create_repository(project.REPOSITORY, source=project.write_project(tmp_path / "source"))
    executor = await start(
        tmp_path,
        clock,
        recorder,
        made,
        FACTEUR_FORGE__KIND="local",
        FACTEUR_FORGE__LOCAL__ROOT=str(tmp_path / "forge"),
        terminate_seconds=1.0 + 5.0,
        FACTEUR_AGENT__KIND="command",
        FACTEUR_AGENT__COMMAND=agent,
        FACTEUR_AGENT__TERMINATE_SECONDS="1",
    )
    sent = request(
        {"stage": "planning", "repository": project.REPOSITORY, "head": "main", "facteur": {"spec": {}}}
    )
    await executor.submit(sent)
    stage_log = tmp_path / "runs" / sent.name / "logs" / "stage.log"
    agent_pid = None
    async with asyncio.timeout(30):
        while agent_pid is None:
            found = re.search(
                r"agent_started: pid=(\d+)", stage_log.read_text() if stage_log.exists() else ""
            )
            agent_pid = int(found.group(1)) if found else None
            await asyncio.sleep(0.05)
    await executor.cancel(WorkflowRef("local", "local", sent.name))
    result = await finished(executor, recorder, sent.name)
    assert result["phase"] is WorkflowPhase.CANCELLED
    async with asyncio.timeout(10):
        while alive(agent_pid):
            await asyncio.sleep(0.05)
    assert "planning stopped: SIGTERM" in (tmp_path / "runs" / sent.name / "run.log").read_text()


async def test_a_host_that_died_is_started_again(
    world: tuple[Path, Recorder, list[LocalExecutor]], clock: FakeClock
) -> None:
    tmp_path, recorder, made = world
    executor = await start(tmp_path, clock, recorder, made)
    host = executor._host
    assert host is not None and host._process is not None
    os.kill(host._process.pid, signal.SIGKILL)
    await host._process.wait()
    sent = request({"stage": "planning", "repository": "nope"})
    await executor.submit(sent)
    result = await finished(executor, recorder, sent.name)
    assert result["exit_code"] == "2"
    assert host._process is not None and host._process.returncode is None


#: a process that acts as PID 1 does in a container (it inherits orphans), runs a stage through the host,
#: kills the host, and says how the run ended
SUBREAPER = """
import asyncio, ctypes, os, signal, sys, tempfile
from pathlib import Path
from facteur.executors.stage_host import StageHost

async def main() -> None:
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    host = StageHost()
    where = Path(tempfile.mkdtemp())
    # the run waits on its settings file (a FIFO) until the host is gone
    settings = where / "settings.yaml"
    os.mkfifo(settings)
    env = {**os.environ, "FACTEUR_CONFIG_FILE": str(settings)}
    event = where / "event.json"
    event.write_text('{"stage": "planning", "repository": "nope"}')
    argv = ["stage", "planning", "--event", str(event)]
    run = await host.start(argv, cwd=where, env=env, log=where / "log")
    assert host._process is not None
    os.kill(host._process.pid, signal.SIGKILL)
    await host._process.wait()
    with open(settings, "w") as feed:  # now the run reads its settings, then refuses its event
        feed.write("logging: {level: INFO}")
    code = await asyncio.wait_for(run.wait(), 20)
    await host.aclose()
    left = [t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    print(f"ended {code} left {left}")

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's")
async def test_a_run_whose_host_died_is_reaped_when_facteur_inherits_it() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SUBREAPER, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    # the run (a bad event: exit status 2) was re-parented here and reaped, its status kept
    assert out.decode().strip() == "ended 2 left []"
