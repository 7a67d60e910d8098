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
import http.client
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import _harness as harness  # bench/ is not a package: the machinery the benchmark scripts share

LUA_SCRIPT = harness.BENCH_DIR / "codex_tasks.lua"
SECTION = harness.Section("codex_tasks", "POST /codex/tasks")
RESULTS_JSON = SECTION.results_json

TARGET_SQLITE_RPS = 2000.0
TARGET_POSTGRES_RPS = 1500.0
TARGET_REPLAY_P50_MS = 1.0
#: delivery ids that a replay measurement records first, then posts again and again
REPLAY_POOL = 64
#: at most this many replays after a restart are timed one by one for the 1-connection figures
COLD_PROBE_COUNT = 2000
#: seconds to wait before measuring a disturbed row again
RETRY_PAUSE = 15.0

Kind = Literal["ceiling", "insert", "facteur"]
Mode = Literal["unique", "issues", "replay", "cold-replay"]
#: the modes of bench/codex_tasks.lua
WrkMode = Literal["unique", "issues", "replay"]


# --- the request body ------------------------------------------------------------------------------------


def task_prefix() -> bytes:
    """A realistic planning ``CodexTask`` serialised without its delivery id (field 15 is appended by wrk)."""
    sys.path.insert(0, str(harness.REPO_ROOT / "src"))
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
    data = harness.wrk(
        port,
        path="/codex/tasks",
        script=LUA_SCRIPT,
        script_args=[mode, tag, prefix_hex, str(pool)],
        seconds=seconds,
        connections=connections,
        cpus=cpus,
    )
    return WrkResult(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=harness.socket_errors(data),
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
    return WrkResult(
        requests=len(latencies),
        seconds=elapsed,
        errors=0,
        status_errors=status_errors,
        p50_ms=1000 * harness.percentile(ordered, 0.50),
        p90_ms=1000 * harness.percentile(ordered, 0.90),
        p99_ms=1000 * harness.percentile(ordered, 0.99),
        max_ms=1000 * ordered[-1],
    )


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
        if self.kind in harness.REFERENCE_LABELS:
            return harness.REFERENCE_LABELS[self.kind]
        if self.mode == "issues":
            return "facteur unique, new issue each"
        if self.mode == "cold-replay":
            return "facteur replay after restart"
        return f"facteur {self.mode}"


@dataclass
class Measurement(harness.RowResult[Variant]):
    loaded: WrkResult | None = None
    unloaded: WrkResult | None = None


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
    return harness.facteur_env(
        port=port,
        database_url=database_url,
        executor=variant.executor,
        log_level=variant.log_level,
        FACTEUR_EXECUTOR__LOCAL__COMMAND="true",
        FACTEUR_EXECUTOR__LOCAL__WORKDIR=str(workdir / "runs"),
    )


def server_for(variant: Variant, *, url: str, port: int, workdir: Path, cpus: str | None) -> harness.Server:
    if variant.kind == "facteur":
        env = facteur_env(variant, port=port, database_url=url, workdir=workdir)
        return harness.facteur_server(env, port=port, workdir=workdir, cpus=cpus)
    return harness.reference_server(variant, url=url, port=port, workdir=workdir, cpus=cpus)


def seed_replays(port: int, prefix: bytes) -> None:
    """Record the replay pool once (sequentially, over fresh connections)."""
    for index in range(REPLAY_POOL):
        status, answer = harness.http_request(
            port, "POST", "/codex/tasks", task_body(prefix, f"bench-replay-{index}"), timeout=10.0
        )
        if status != 202:
            raise RuntimeError(f"seeding replay {index}: HTTP {status} {answer[:200]!r}")
    status, answer = harness.http_request(
        port, "POST", "/codex/tasks", task_body(prefix, "bench-replay-0"), 10.0
    )
    if status != 202 or not json.loads(answer).get("duplicate"):
        raise RuntimeError(f"a replay was not answered as a duplicate: HTTP {status} {answer[:200]!r}")


def count_facteur_rows(
    variant: Variant, target: str, postgres: harness.Postgres | None
) -> tuple[int, dict[str, int]]:
    """(deliveries recorded, runs by status) in a facteur database."""
    recorded = int(harness.query(variant.database, target, postgres, "SELECT count(*) FROM deliveries")[0][0])
    runs = harness.query(
        variant.database, target, postgres, "SELECT status, count(*) FROM runs GROUP BY status"
    )
    return recorded, {str(s): int(n) for s, n in runs}


def measure(variant: Variant, plan: Plan, prefix: bytes, postgres: harness.Postgres | None) -> Measurement:
    result = Measurement(variant, notes=harness.busy_notes())
    with tempfile.TemporaryDirectory(prefix="facteur-bench-") as tmp:
        workdir = Path(tmp)
        with harness.database_for(variant, workdir, postgres) as (url, target):
            server = server_for(
                variant, url=url, port=harness.free_port(), workdir=workdir, cpus=plan.server_cpus
            )
            with harness.running(server):
                if variant.mode == "cold-replay":
                    accepted = measure_cold_replays(variant, plan, prefix, server, result)
                else:
                    accepted = measure_loaded(variant, plan, prefix, server, result)
            if variant.kind == "facteur":
                recorded, runs = count_facteur_rows(variant, target, postgres)
                result.notes.append(
                    f"{recorded} deliveries recorded for {accepted} accepted requests; runs by status: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(runs.items()))
                )
    return result


def measure_loaded(
    variant: Variant, plan: Plan, prefix: bytes, server: harness.Server, result: Measurement
) -> int:
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
    processes = harness.cpu_by_process()
    loaded = run_wrk(server.port, tag="m", seconds=plan.duration, connections=plan.connections, **common)
    result.foreign, notes = harness.disturbance(processes, server, loaded.seconds, "the measured run")
    result.notes += notes
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
    variant: Variant, plan: Plan, prefix: bytes, server: harness.Server, result: Measurement
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
    processes = harness.cpu_by_process()
    probe = replay_sequentially(
        server.port,
        [task_body(prefix, f"bench-s-0-{index}") for index in range(2, count + 2)],
        budget=max(5.0, 2.0 * plan.probe),
    )
    result.foreign, notes = harness.disturbance(processes, server, probe.seconds, "the replays")
    result.notes += notes
    result.unloaded = probe
    result.notes.append(
        f"{seeded.ok} deliveries recorded (one connection, {plan.seed} s), server restarted on the same "
        f"database, then {probe.requests} of them replayed once each over one connection (Python client)"
        + (f"; {probe.status_errors} were not answered as duplicates" if probe.status_errors else "")
    )
    return seeded.ok


# --- reporting -------------------------------------------------------------------------------------------


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
            cells += [
                "n/a",
                "n/a",
                "n/a",
                "n/a",
                harness.num(m.unloaded.p50_ms, 3),
                harness.num(m.unloaded.p99_ms, 3),
            ]
        elif m.loaded is None or m.unloaded is None:
            cells += ["failed", "", "", "", "", ""]
        else:
            cells += [
                harness.num(m.loaded.rps, 0),
                harness.num(m.loaded.p50_ms),
                harness.num(m.loaded.p99_ms),
                harness.ceiling_share(m.loaded.rps, ceiling),
                harness.num(m.unloaded.p50_ms, 3),
                harness.num(m.unloaded.p99_ms, 3),
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


def report(results: Sequence[Measurement], plan: Plan, info: dict[str, str]) -> str:
    pinning = (
        f"server pinned to CPU {plan.server_cpus}, wrk to CPU {plan.wrk_cpus} (taskset); PostgreSQL unpinned"
        if plan.server_cpus
        else "no CPU pinning"
    )
    run = (
        f"{harness.run_of()}: wrk, 1 thread, {plan.connections} keep-alive connections, {plan.warmup} s "
        f"warm-up then {plan.duration} s measured, then {plan.probe} s with 1 connection; {pinning}; a fresh "
        f"server process and database per row; {harness.retry_policy(plan.retries, 'times')}"
    )
    lines = harness.report_lines(
        run, info, table(results, plan.connections), verdicts(results, plan.connections)
    )
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


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return harness.server_bench_args(
        argv,
        description="Benchmark POST /codex/tasks (see bench/README.md).",
        duration_help="seconds measured per row (default 10)",
        connections_help="keep-alive connections (default 32)",
        retries=2,
        retries_help="measure a row again (up to N times) when other processes used >10%% of a CPU meanwhile",
        pin_help="do not pin server and wrk to separate CPUs",
        only_help="run only rows whose label/db/executor contain this text",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if harness.wrk_missing():
        return 2
    duration = args.duration or (2 if args.quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    probe = 1 if args.quick else max(2, duration // 2)
    server_cpus, wrk_cpus = harness.cpu_pinning(args.no_pin)
    plan = Plan(
        warmup=warmup,
        duration=duration,
        probe=probe,
        connections=args.connections,
        server_cpus=server_cpus,
        wrk_cpus=wrk_cpus,
        retries=args.retries,
        seed=3 if args.quick else max(5, duration),
    )
    prefix = task_prefix()
    return harness.run_server_bench(
        args,
        section=SECTION,
        plan=plan,
        rows=variants,
        describe=lambda v: f"{v.label} {v.database} {v.executor} {v.log_level}",
        result=Measurement,
        measure=lambda v, postgres: measure(v, plan, prefix, postgres),
        pause=RETRY_PAUSE,
        progress=show_progress,
        report=lambda results, info: report(results, plan, info),
        figures=lambda m: {
            "loaded": asdict(m.loaded) if m.loaded else None,
            "unloaded": asdict(m.unloaded) if m.unloaded else None,
        },
    )


def show_progress(measurement: Measurement) -> None:
    loaded, probe = measurement.loaded, measurement.unloaded
    if loaded or probe:
        figures = f"{loaded.rps:,.0f} req/s, p50 {loaded.p50_ms:.2f} ms, " if loaded else ""
        print(f"  {figures}1-conn p50 {probe.p50_ms if probe else 0:.3f} ms", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
