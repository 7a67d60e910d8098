"""The seeds' canary (seed 000's runbook) against `facteur serve` started as its own process."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.services import free_port, shared_path, unavailable

pytestmark = pytest.mark.acceptance


@contextmanager
def serve(
    workdir: Path, port: int, log: Path, extra_env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`facteur serve` with no configuration at all, but the port (and ``extra_env``), in a fresh working
    directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    env["FACTEUR_SERVER__PORT"] = str(port)
    env.update(extra_env or {})
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "facteur", "serve"], cwd=workdir, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"facteur serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"facteur serve did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def curl_post(port: int, payload: Path) -> dict[str, Any]:
    """As the runbook does: curl --data-binary @file -H 'Content-Type: application/x-protobuf'."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"http://127.0.0.1:{port}/codex/tasks",
            "--data-binary",
            f"@{payload}",
            "-H",
            "Content-Type: application/x-protobuf",
            "-w",
            "\n%{http_code}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "202", f"expected 202, got {status}: {body}"
    document: dict[str, Any] = json.loads(body)
    return document


def test_canary_against_a_fresh_server_survives_a_restart(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        unavailable("curl is not installed")
    payload = tmp_path / "codex-planning.bin"
    payload.write_bytes(
        base64.b64decode(shared_path("fixtures", "codex-task", "dry-run-0001.b64").read_text())
    )
    workdir = tmp_path / "facteur"
    workdir.mkdir()
    log = tmp_path / "serve.log"
    port = free_port()

    with serve(workdir, port, log):
        first = curl_post(port, payload)
        second = curl_post(port, payload)
    assert first["duplicate"] is False
    assert first["stage"] == "planning"
    assert first["workflowName"].startswith("codex-planning-")
    assert second == {**first, "duplicate": True}

    with serve(workdir, port, log):
        third = curl_post(port, payload)
    assert third == {**first, "duplicate": True}

    output = log.read_text()
    assert (
        "codex task received: stage=CODEX_TASK_STAGE_PLANNING repo=proompteng/lab issue=999 "
        "delivery=dry-run-0001" in output
    )
    assert (
        f"workflow submitted: stage=PLANNING repo=proompteng/lab issue=999 workflow={first['workflowName']}"
        in output
    )
    assert output.count("workflow submitted:") == 1
    assert (workdir / ".facteur" / "facteur.db").exists()
    assert (workdir / ".facteur" / "runs" / first["workflowName"] / "event.json").exists()
