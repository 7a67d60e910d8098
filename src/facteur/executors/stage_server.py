"""The warm stage host's server process: ``python -m facteur.executors.stage_server``.

It imports the stage runner once, then forks one child per request. It speaks JSON lines: requests on its
stdin (``{"id", "argv", "cwd", "env", "log"}``), answers on its stdout (``{"ready": true}`` once warm,
``{"id", "pid"}`` or ``{"id", "error"}`` per request, ``{"pid", "exit"}`` when a child ends; ``exit`` is the
exit status, or minus the signal that killed it). It exits when its stdin closes; children it started go
on (each leads its own session) and are watched by the executor through their pids.

A child becomes a session leader, takes the run's log as stdout and stderr and ``/dev/null`` as stdin,
moves to the run's directory, replaces its environment with the run's, and runs
:func:`facteur.stages.main.main` on what follows ``stage`` in ``argv``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from typing import Any

#: imported once here, shared by every run forked from this process
PRELOAD = (
    "facteur.stages.main",
    "facteur.stages.planning",
    "facteur.stages.implementation",
    "facteur.stages.review",
    "facteur.agents.factory",
    "facteur.forge.local",
    "facteur.forge.github",
    # what httpx loads on its first request (the run's first report)
    "httpcore",
    "h11",
    "anyio._backends._asyncio",
    "anyio.streams.tls",
    "certifi",
    "queue",
)


_OWN_FDS: list[int] = []


def serve() -> None:
    for name in PRELOAD:
        __import__(name)
    wake_r, wake_w = os.pipe()
    _OWN_FDS.extend((wake_r, wake_w))
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    stdin = sys.stdin.buffer
    requests = stdin.fileno()
    _say({"ready": True})
    pending = b""
    while True:
        readable, _, _ = select.select([requests, wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        _reap()
        if requests not in readable:
            continue
        chunk = os.read(requests, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                _start(json.loads(line))


def _start(request: dict[str, Any]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as exc:
        _say({"id": request["id"], "error": f"fork failed: {exc.strerror}"})
        return
    if pid == 0:  # the child never returns to the loop, whatever happens
        code = 1
        try:
            code = _child(request)
        finally:
            os._exit(code)
    _say({"id": request["id"], "pid": pid})


def _child(request: dict[str, Any]) -> int:
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in _OWN_FDS:
            os.close(fd)
        os.setsid()
        output = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        os.close(nothing)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv: list[str] = request["argv"]
        sys.argv = ["facteur", *argv]
        if not argv or argv[0] != "stage":
            print(f"error: the warm stage host runs `facteur stage …`, not {argv[:1]}", file=sys.stderr)
            return 2
        from facteur.stages.main import main

        code = main(argv[1:])
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception:  # noqa: BLE001 - the run ends with a status, and the traceback goes to its log
        import traceback

        traceback.print_exc()
        print("error: the stage run crashed (the traceback is above)", file=sys.stderr)
        code = 1
    finally:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say({"pid": pid, "exit": os.waitstatus_to_exitcode(status)})


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    serve()
