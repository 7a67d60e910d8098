"""A fake agent executable that replays a recorded stream, and helpers to drive the backends with it.

The fake is a small Python script written into the test's tmp_path and configured as ``agent.command``.
It reads the prompt on stdin, records what it was given (argv, prompt, environment, working directory),
optionally checks its arguments, then prints the recorded stream line by line with a small delay, and
finally exits, hangs, or keeps printing, as the test asks through ``FAKE_*`` variables.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facteur.agents.port import AgentEvent, AgentRequest, Timeouts
from facteur.executors.processes import alive
from facteur.settings import AgentSettings
from tests.support.services import REPO_ROOT

STREAMS = REPO_ROOT / "tests" / "support" / "agent_streams"

FAKE_AGENT = r"""
import json, os, signal, subprocess, sys, time

env = os.environ
if env.get("FAKE_IGNORE_TERM") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
prompt = sys.stdin.read()
pids = [os.getpid()]
if env.get("FAKE_CHILD"):
    # a grandchild in the same process group; "hold" keeps our stdout open after we exit
    out = None if env["FAKE_CHILD"] == "hold" else subprocess.DEVNULL
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    child = subprocess.Popen(sleeper, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    pids.append(child.pid)
if env.get("FAKE_RECORD"):
    with open(env["FAKE_RECORD"], "w") as record:
        json.dump({
            "argv": sys.argv[1:],
            "prompt": prompt,
            "cwd": os.getcwd(),
            "pids": pids,
            "env": {k: v for k, v in env.items() if k.startswith(("FACTEUR_", "FAKE_", "EXTRA_"))},
        }, record)
expected = json.loads(env.get("FAKE_EXPECT_ARGS", "[]"))
missing = [arg for arg in expected if arg not in sys.argv[1:]]
if missing:
    sys.stderr.write("fake agent: missing arguments %s\n" % missing)
    sys.exit(64)
delay = float(env.get("FAKE_DELAY", "0.002"))
if env.get("FAKE_STREAM"):
    with open(env["FAKE_STREAM"]) as stream:
        for line in stream.read().splitlines(keepends=True):
            sys.stdout.write(line)
            sys.stdout.flush()
            time.sleep(delay)
if env.get("FAKE_STDERR"):
    sys.stderr.write(env["FAKE_STDERR"] + "\n")
    sys.stderr.flush()
after = env.get("FAKE_AFTER", "exit:0")
if after == "hang":
    time.sleep(60)
elif after == "tick":
    while True:
        sys.stdout.write('{"type":"tick"}\n')
        sys.stdout.flush()
        time.sleep(0.05)
elif after == "signal":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(int(after.split(":")[1]))
"""

#: generous for runs that end by themselves: a loaded machine must not make them time out
RELAXED = Timeouts(idle_seconds=20.0, grace_seconds=10.0, total_seconds=60.0, terminate_seconds=2.0)


@dataclass
class FakeAgent:
    script: Path
    tmp_path: Path

    @property
    def record_file(self) -> Path:
        return self.tmp_path / "record.json"

    @property
    def workdir(self) -> Path:
        path = self.tmp_path / "work"
        path.mkdir(exist_ok=True)
        return path

    def settings(self, kind: str, **overrides: Any) -> AgentSettings:
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(self.script))}"
        return AgentSettings.model_validate({"kind": kind, "command": command, **overrides})

    def request(
        self,
        stream: str | Path | None = None,
        *,
        timeouts: Timeouts = RELAXED,
        prompt: str = "Fix the failing test in calc.py.",
        session_id: str | None = None,
        env: dict[str, str] | None = None,
        transcript: Path | None = None,
        **fake: str,
    ) -> AgentRequest:
        """A request to run the fake: ``stream`` names a file of tests/support/agent_streams (or is a
        path), ``fake`` sets ``FAKE_<NAME>`` variables."""
        variables = {f"FAKE_{key.upper()}": value for key, value in fake.items()}
        variables["FAKE_RECORD"] = str(self.record_file)
        if stream is not None:
            variables["FAKE_STREAM"] = str(stream if isinstance(stream, Path) else STREAMS / stream)
        return AgentRequest(
            prompt=prompt,
            workdir=self.workdir,
            env={**variables, **(env or {})},
            session_id=session_id,
            timeouts=timeouts,
            transcript=transcript,
        )

    def stream(self, name: str, lines: list[str]) -> Path:
        """A stream made by the test (from recorded lines), as a file."""
        path = self.tmp_path / name
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.record_file.read_text())
        return data


@pytest.fixture
def fake_agent(tmp_path: Path) -> FakeAgent:
    script = tmp_path / "fake_agent.py"
    script.write_text(FAKE_AGENT)
    return FakeAgent(script=script, tmp_path=tmp_path)


class Events:
    """An event callback that keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[AgentEvent] = []

    async def __call__(self, event: AgentEvent) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [event.kind.value for event in self.seen]


def gone(pid: int) -> bool:
    """Whether a process no longer runs (a zombie nobody reaped yet counts as gone)."""
    return not alive(pid)


def same_dir(a: str | Path, b: str | Path) -> bool:
    return os.path.samefile(a, b)


def load_stream(name: str) -> list[str]:
    return (STREAMS / name).read_text().splitlines()
