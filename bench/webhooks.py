"""Benchmark ``POST /webhooks/github`` of ``facteur serve``: signed ``issue_comment`` deliveries.

Every row starts its own server process on a fresh database, warms it up, drives it with wrk at a bounded
connection count (saturation: deliveries accepted per second), then, on the same server, drives it open-loop
at a constant rate of half what it accepted (a Python client on a precomputed schedule, latency counted from
each request's scheduled time, as wrk2 does): p50/p99/max at half load. Rows:

* ``ceiling``: the bare Starlette app of bench/reference_apps.py (reads the body, answers 202 JSON);
* ``minimal insert``: the FastAPI handlers of bench/reference_apps.py doing ONE insert of the body
  (SQLite WAL + synchronous=NORMAL on a writer thread, or PostgreSQL through a psycopg 3 pool);
* ``facteur comment``: ``python -m facteur serve`` with ``issue_comment.created`` deliveries that are
  ordinary comments (no trigger login configured, no GitHub token, so no forge): each accepted delivery is
  one inbox row and one raw message in the outbox, committed before the 202;
* ``facteur execute plan``: ``execute plan`` comments from a trigger login (``CODEX_TRIGGER_LOGINS``): the
  full ingest path (idea, task, run, events, three outbox messages) for every delivery.

Bodies: the first ``issue_comment`` example of ../shared/fixtures/github/webhook-examples.json (compact
JSON, ~11 kB), a pool of distinct bodies (each its own comment id) signed with HMAC-SHA256; every request
carries its own ``X-GitHub-Delivery`` id (a header, which the signature does not cover).

Figures are printed and, for a full run, written into bench/README.md (between the ``webhooks`` result
markers) and bench/results/webhooks.json. Nothing here asserts on timings: the exit status is 0 unless a
server failed to start (1) or wrk is missing (2). All traffic goes to 127.0.0.1.

Usage: ``python bench/webhooks.py [--quick] [--duration N] [--only TEXT] [--no-postgres]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import gc
import hashlib
import hmac
import http.client
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import _harness as harness  # bench/ is not a package: the machinery the benchmark scripts share

SECTION = harness.Section("webhooks", "POST /webhooks/github")
#: ../shared beside the repository, as for the tests
FIXTURES = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "github" / "webhook-examples.json"
)

TARGET_SQLITE_RPS = 2000.0
TARGET_POSTGRES_RPS = 1500.0
TARGET_P99_MS = 20.0
SECRET = "bench-webhook-secret"
TRIGGER_LOGIN = "codertocat"
#: distinct signed bodies per row; requests cycle over them, each with its own delivery id
BODY_POOL = 256
#: the constant-rate client's connections (open-loop: a request waits for a free one, counted in its latency)
RATE_CONNECTIONS = 32
#: the constant-rate client cannot go much faster on one core; reference rows are measured at most at this
RATE_CAP = 3000.0
#: seconds to wait before measuring a disturbed row again
RETRY_PAUSE = 10.0
#: at most this long for the relay to publish the saturation run's backlog before the constant-rate run
SETTLE_TIMEOUT = 20.0

Kind = Literal["ceiling", "insert", "facteur"]
Payload = Literal["comment", "trigger"]

# The wrk script, written into the row's temporary directory. wrk has no HMAC, so the bodies are signed in
# Python and read from a file; request() cycles over them and gives every request its own delivery id.
LUA = r"""
local next_thread = 0
local threads = {}

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local path, tag, bodies, signatures, pool, counter, headers
-- globals, so that done() can read them from each thread (thread:get)
statuses, duplicates = {}, 0

function init(args)
  local pool_file, count = args[1], 0
  path, tag = args[2], args[3]
  bodies, signatures = {}, {}
  local f = assert(io.open(pool_file, "rb"))
  while true do
    local line = f:read("*l")
    if line == nil or line == "" then break end
    local signature, length = line:match("^(%S+) (%d+)$")
    count = count + 1
    signatures[count] = signature
    bodies[count] = f:read(tonumber(length))
  end
  f:close()
  pool, counter = count, 0
  headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = "GitHub-Hookshot/bench",
    ["X-GitHub-Event"] = "issue_comment",
    ["X-GitHub-Hook-ID"] = "4242",
  }
end

function request()
  counter = counter + 1
  local index = counter % pool + 1
  headers["X-GitHub-Delivery"] = "bench-" .. tag .. "-" .. thread_id .. "-" .. counter
  headers["X-Hub-Signature-256"] = signatures[index]
  return wrk.format("POST", path, headers, bodies[index])
end

function response(status, _headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if body and string.find(body, '"status":"duplicate"', 1, true) then duplicates = duplicates + 1 end
end

function done(summary, latency, requests)
  local by_status, dup = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do by_status[status] = (by_status[status] or 0) + n end
    dup = dup + thread:get("duplicates")
  end
  local parts = {}
  for status, n in pairs(by_status) do parts[#parts + 1] = string.format('"%d":%d', status, n) end
  local errors = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
      .. '"timeout_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"duplicates":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, dup, table.concat(parts, ",")
  ))
end
"""


# --- the deliveries --------------------------------------------------------------------------------------


def signature_of(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def example_comment() -> dict[str, Any]:
    """The first ``issue_comment`` example of the GitHub fixtures."""
    groups = json.loads(FIXTURES.read_text(encoding="utf-8"))
    for group in groups:
        if group.get("name") == "issue_comment" and group.get("examples"):
            example: dict[str, Any] = group["examples"][0]
            if example.get("action") != "created":
                raise RuntimeError("the first issue_comment example is not issue_comment.created")
            return example
    raise RuntimeError(f"no issue_comment example in {FIXTURES}")


def body_pool(payload: Payload, count: int) -> list[tuple[bytes, str]]:
    """``count`` distinct signed bodies: the example with its own comment id each; for ``trigger`` the
    comment says ``execute plan``."""
    example = example_comment()
    pool = []
    for index in range(count):
        document = copy.deepcopy(example)
        comment = document["comment"]
        comment["id"] = int(comment["id"]) + index
        comment["html_url"] = f"{document['issue']['html_url']}#issuecomment-{comment['id']}"
        if payload == "trigger":
            comment["body"] = "execute plan"
        body = json.dumps(document, separators=(",", ":")).encode()
        pool.append((body, signature_of(body)))
    return pool


def write_pool(pool: Sequence[tuple[bytes, str]], path: Path) -> None:
    with path.open("wb") as out:
        for body, signature in pool:
            out.write(f"{signature} {len(body)}\n".encode() + body)


# --- wrk: saturation -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Saturated:
    requests: int
    seconds: float
    errors: int
    statuses: dict[str, int]
    duplicates: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def accepted(self) -> int:
        return self.statuses.get("202", 0) - self.duplicates

    @property
    def rps(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0


def run_wrk(
    port: int,
    *,
    path: str,
    script: Path,
    pool: Path,
    tag: str,
    seconds: int,
    connections: int,
    cpus: str | None,
) -> Saturated:
    data = harness.wrk(
        port,
        path=path,
        script=script,
        script_args=[str(pool), path, tag],
        seconds=seconds,
        connections=connections,
        cpus=cpus,
    )
    return Saturated(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        errors=harness.socket_errors(data),
        statuses={str(k): int(v) for k, v in sorted(data["statuses"].items())},
        duplicates=int(data["duplicates"]),
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


# --- the constant-rate client: latency at half load ------------------------------------------------------


@dataclass
class Paced:
    rate: float  # scheduled requests per second
    achieved: float  # answers per second over the run
    sent: int
    statuses: dict[str, int]
    #: 202 answers whose body did not say what this row expects ("ignored" or "accepted")
    unexpected: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: latency from the moment the request was written, not from its scheduled time
    p99_from_send_ms: float
    #: p99 of scheduled time to write: the sender's lateness, or a wait for a free connection
    send_lag_p99_ms: float
    accepted_ids: list[str] = field(default_factory=list, repr=False)


async def _paced(
    port: int,
    path: str,
    pool: Sequence[tuple[bytes, str]],
    *,
    tag: str,
    rate: float,
    seconds: float,
    connections: int,
    expect: bytes,
) -> Paced:
    count = max(1, int(rate * seconds))
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
    clock = time.perf_counter
    samples: list[tuple[float, float, float]] = []  # scheduled, sent, answered
    statuses: Counter[str] = Counter()
    accepted: list[str] = []
    unexpected = 0
    errors = 0

    def request_bytes(index: int) -> tuple[bytes, str]:
        body, signature = pool[index % len(pool)]
        delivery = f"bench-{tag}-{index}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: GitHub-Hookshot/bench\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-GitHub-Event: issue_comment\r\nX-GitHub-Delivery: {delivery}\r\nX-GitHub-Hook-ID: 4242\r\n"
            f"X-Hub-Signature-256: {signature}\r\n\r\n"
        )
        return head.encode() + body, delivery

    async def worker() -> None:
        nonlocal unexpected, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (item := await queue.get()) is not None:
                index, scheduled = item
                data, delivery = request_bytes(index)
                sent = clock()
                try:
                    writer.write(data)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        if line[:15].lower() == b"content-length:":
                            length = int(line[15:])
                    answer = await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    errors += 1
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                answered = clock()
                status = head[9:12].decode()
                statuses[status] += 1
                if status == "202":
                    if expect and expect not in answer:
                        unexpected += 1
                    else:
                        accepted.append(delivery)
                samples.append((scheduled, sent, answered))
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open
    start = clock() + 0.05
    for index in range(count):
        scheduled = start + index / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((index, scheduled))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = max(answered for _, _, answered in samples) - start if samples else 0.0
    latency = sorted(answered - scheduled for scheduled, _, answered in samples)
    from_send = sorted(answered - sent for _, sent, answered in samples)
    lag = sorted(sent - scheduled for scheduled, sent, _ in samples)
    return Paced(
        rate=rate,
        achieved=len(samples) / elapsed if elapsed else 0.0,
        sent=count,
        statuses=dict(sorted(statuses.items())),
        unexpected=unexpected,
        errors=errors,
        p50_ms=1000 * harness.percentile(latency, 0.50),
        p99_ms=1000 * harness.percentile(latency, 0.99),
        max_ms=1000 * (latency[-1] if latency else 0.0),
        p99_from_send_ms=1000 * harness.percentile(from_send, 0.99),
        send_lag_p99_ms=1000 * harness.percentile(lag, 0.99),
        accepted_ids=accepted,
    )


def run_paced(
    port: int,
    path: str,
    pool: Sequence[tuple[bytes, str]],
    *,
    tag: str,
    rate: float,
    seconds: float,
    expect: bytes,
    cpus: str | None,
) -> Paced:
    """The constant-rate run on uvloop, in this process, pinned to wrk's CPU when pinning; no GC meanwhile."""
    import uvloop

    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    gc.collect()
    gc.disable()
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(
                _paced(
                    port,
                    path,
                    pool,
                    tag=tag,
                    rate=rate,
                    seconds=seconds,
                    connections=RATE_CONNECTIONS,
                    expect=expect,
                )
            )
    finally:
        gc.enable()
        os.sched_setaffinity(0, previous)


# --- rows ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    kind: Kind
    database: str  # "-", "sqlite", "postgresql"
    payload: Payload

    @property
    def label(self) -> str:
        if self.kind in harness.REFERENCE_LABELS:
            return harness.REFERENCE_LABELS[self.kind]
        return "facteur comment" if self.payload == "comment" else "facteur execute plan"

    @property
    def path(self) -> str:
        # the reference apps route /codex/tasks only; they read the body and nothing else
        return "/webhooks/github" if self.kind == "facteur" else "/codex/tasks"


@dataclass
class Measurement(harness.RowResult[Variant]):
    saturated: Saturated | None = None
    paced: Paced | None = None


@dataclass(frozen=True)
class Plan:
    warmup: int
    duration: int
    paced: int
    connections: int
    server_cpus: str | None
    wrk_cpus: str | None
    retries: int


def variants(with_postgres: bool) -> list[Variant]:
    databases = ("sqlite", "postgresql") if with_postgres else ("sqlite",)
    rows = [Variant("ceiling", "-", "comment")]
    rows += [Variant("insert", database, "comment") for database in databases]
    rows += [Variant("facteur", database, "comment") for database in databases]
    rows += [Variant("facteur", database, "trigger") for database in databases]
    return rows


def server_for(variant: Variant, *, url: str, port: int, workdir: Path, cpus: str | None) -> harness.Server:
    if variant.kind != "facteur":
        return harness.reference_server(variant, url=url, port=port, workdir=workdir, cpus=cpus)
    extra = {"GITHUB_WEBHOOK_SECRET": SECRET}
    if variant.payload == "trigger":
        extra["CODEX_TRIGGER_LOGINS"] = TRIGGER_LOGIN
    env = harness.facteur_env(
        port=port,
        database_url=url,
        executor="none",
        log_level="WARNING",
        dropped=("FACTEUR_", "GITHUB_", "CODEX_", "DISCORD_"),
        **extra,
    )
    return harness.facteur_server(env, port=port, workdir=workdir, cpus=cpus)


def outbox_backlog(port: int) -> int | None:
    with contextlib.suppress(OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        status, answer = harness.http_request(port, "GET", "/readyz", b"", timeout=5.0)
        if status == 200:
            return int(json.loads(answer)["outbox"]["backlog"])
    return None


def settle(port: int) -> str:
    """Wait (up to SETTLE_TIMEOUT) for the relay to publish what the saturation run left in the outbox."""
    started = time.monotonic()
    backlog = outbox_backlog(port)
    first = backlog
    while backlog and time.monotonic() - started < SETTLE_TIMEOUT:
        time.sleep(0.25)
        backlog = outbox_backlog(port)
    time.sleep(1.0)
    return (
        f"outbox backlog after the saturation run {first}, {backlog} after {time.monotonic() - started:.1f} s"
    )


def check_facteur(
    variant: Variant,
    target: str,
    postgres: harness.Postgres | None,
    *,
    accepted: int,
    in_flight: int,
    paced_ids: Sequence[str],
    tag: str,
) -> list[str]:
    """Durability: inbox rows against 202 answers, every paced 202's id present, outbox and runs."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return harness.query(variant.database, target, postgres, sql)

    recorded = int(rows("SELECT count(*) FROM deliveries WHERE source = 'github'")[0][0])
    stored = {
        str(row[0])
        for row in rows(
            f"SELECT delivery_id FROM deliveries WHERE source = 'github' AND delivery_id LIKE 'bench-{tag}-%'"
        )
    }
    missing = [delivery for delivery in paced_ids if delivery not in stored]
    outbox = rows(
        "SELECT topic, count(*), sum(CASE WHEN published_at IS NULL THEN 0 ELSE 1 END) "
        "FROM outbox GROUP BY topic"
    )
    runs = int(rows("SELECT count(*) FROM runs")[0][0])
    events = int(rows("SELECT count(*) FROM events")[0][0])
    extra = recorded - accepted
    verdict = (
        "every accepted delivery recorded"
        if 0 <= extra <= in_flight
        else "**MISMATCH**: fewer rows than 202s"
        if extra < 0
        else f"**MISMATCH**: {extra} rows beyond the 202s, more than the {in_flight} that can be in flight"
    )
    topics = ", ".join(
        f"{topic} {int(n):,} ({int(published or 0):,} published)" for topic, n, published in sorted(outbox)
    )
    return [
        f"{recorded:,} deliveries recorded (inbox rows) for {accepted:,} 202 answers "
        f"(+{max(0, extra)} answered after wrk stopped, at most {in_flight} in flight): {verdict}",
        f"constant-rate run: {len(paced_ids) - len(missing):,} of {len(paced_ids):,} accepted delivery ids "
        "found in the inbox" + (f" — **{len(missing)} MISSING** (e.g. {missing[:3]})" if missing else ""),
        f"outbox by topic: {topics or 'empty'}; runs {runs:,}; audit events {events:,}",
    ]


def measure(variant: Variant, plan: Plan, postgres: harness.Postgres | None) -> Measurement:
    result = Measurement(variant, notes=harness.busy_notes())
    pool = body_pool(variant.payload, BODY_POOL)
    expect = (
        b""
        if variant.kind != "facteur"
        else (b'"status":"ignored"' if variant.payload == "comment" else b'"status":"accepted"')
    )
    tag = f"{os.getpid()}{int(time.time()) % 100000}"
    with tempfile.TemporaryDirectory(prefix="facteur-bench-webhooks-") as tmp:
        workdir = Path(tmp)
        script, pool_file = workdir / "webhooks.lua", workdir / "pool.bin"
        script.write_text(LUA, encoding="utf-8")
        write_pool(pool, pool_file)
        with harness.database_for(variant, workdir, postgres) as (url, target):
            server = server_for(
                variant, url=url, port=harness.free_port(), workdir=workdir, cpus=plan.server_cpus
            )
            with harness.running(server):
                common: dict[str, Any] = {
                    "path": variant.path,
                    "script": script,
                    "pool": pool_file,
                    "connections": plan.connections,
                    "cpus": plan.wrk_cpus,
                }
                warm = run_wrk(server.port, tag=f"w{tag}", seconds=plan.warmup, **common)
                processes = harness.cpu_by_process()
                loaded = run_wrk(server.port, tag=f"m{tag}", seconds=plan.duration, **common)
                result.foreign, notes = harness.disturbance(
                    processes, server, loaded.seconds, "the saturation run"
                )
                result.notes += notes
                result.saturated = loaded
                if variant.kind == "facteur":
                    result.notes.append(settle(server.port))
                else:
                    time.sleep(1.0)
                rate = loaded.rps / 2
                if variant.kind != "facteur" and rate > RATE_CAP:
                    result.notes.append(
                        f"constant rate capped at {RATE_CAP:,.0f}/s (half the saturated rate is "
                        f"{rate:,.0f}/s, beyond what the Python client sustains)"
                    )
                    rate = RATE_CAP
                paced = run_paced(
                    server.port,
                    variant.path,
                    pool,
                    tag=f"c{tag}",
                    rate=max(rate, 1.0),
                    seconds=plan.paced,
                    expect=expect,
                    cpus=plan.wrk_cpus,
                )
                result.paced = paced
            for name, run in (("warm-up", warm), ("saturation", loaded)):
                other = {k: v for k, v in run.statuses.items() if k != "202"}
                if other or run.errors or run.duplicates:
                    result.notes.append(
                        f"{name}: answers by status {run.statuses}, {run.duplicates} answered as duplicates, "
                        f"{run.errors} socket errors/timeouts"
                    )
            result.notes.append(
                f"answers by status: warm-up {warm.statuses}, saturation {loaded.statuses}, "
                f"constant rate {paced.statuses}"
                + (f"; {paced.unexpected} 202s not answered {expect.decode()}" if paced.unexpected else "")
                + (f"; {paced.errors} socket errors in the constant-rate run" if paced.errors else "")
            )
            if variant.kind == "facteur":
                result.notes += check_facteur(
                    variant,
                    target,
                    postgres,
                    accepted=warm.accepted + loaded.accepted + len(paced.accepted_ids),
                    in_flight=2 * plan.connections,
                    paced_ids=paced.accepted_ids,
                    tag=f"c{tag}",
                )
    return result


# --- reporting -------------------------------------------------------------------------------------------


def table(results: Sequence[Measurement], connections: int) -> str:
    ceiling = next((m.saturated.rps for m in results if m.variant.kind == "ceiling" and m.saturated), 0.0)
    lines = [
        f"| variant | database | deliveries/s ({connections} conn) | p50 ms | p99 ms | % of ceiling "
        "| constant rate /s | p50 ms | p99 ms | max ms |",
        "|---|---|" + "---:|" * 8,
    ]
    for m in results:
        cells = [m.variant.label, m.variant.database]
        s, p = m.saturated, m.paced
        if s is None or p is None:
            cells += ["failed", "", "", "", "", "", "", ""]
        else:
            cells += [
                harness.num(s.rps, 0),
                harness.num(s.p50_ms),
                harness.num(s.p99_ms),
                harness.ceiling_share(s.rps, ceiling),
                harness.num(p.rate, 0),
                harness.num(p.p50_ms),
                harness.num(p.p99_ms),
                harness.num(p.max_ms),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(results: Sequence[Measurement]) -> list[str]:
    targets = {"sqlite": TARGET_SQLITE_RPS, "postgresql": TARGET_POSTGRES_RPS}
    lines = []
    for m in results:
        v = m.variant
        if v.kind != "facteur" or m.saturated is None or m.paced is None:
            continue
        target, rps = targets[v.database], m.saturated.rps
        state = (
            f"**met** ({rps:,.0f}/s)"
            if rps >= target
            else f"**not met**: {rps:,.0f}/s, short by {target - rps:,.0f}/s "
            f"({100 * (1 - rps / target):.0f} %)"
        )
        p99 = m.paced.p99_ms
        latency = "**met**" if p99 <= TARGET_P99_MS else f"**not met** (by {p99 - TARGET_P99_MS:.1f} ms)"
        what = "ordinary comments" if v.payload == "comment" else "`execute plan` triggers (full ingest path)"
        lines.append(
            f"- {what} on {v.database}: throughput target ≥ {target:,.0f}/s — {state}; p99 at half load "
            f"({m.paced.rate:,.0f}/s) target ≤ {TARGET_P99_MS:g} ms — {p99:.2f} ms: {latency}"
        )
    return lines


def report(results: Sequence[Measurement], plan: Plan, info: dict[str, str]) -> str:
    pinning = (
        f"server pinned to CPU {plan.server_cpus}, wrk and the constant-rate client to CPU {plan.wrk_cpus} "
        "(taskset / sched_setaffinity); PostgreSQL unpinned"
        if plan.server_cpus
        else "no CPU pinning"
    )
    run = (
        f"{harness.run_of()}: wrk, 1 thread, {plan.connections} keep-alive connections, {plan.warmup} s "
        f"warm-up then {plan.duration} s measured; then {plan.paced} s open-loop at half the accepted rate "
        f"({RATE_CONNECTIONS} connections, latency from each request's scheduled time); {pinning}; a fresh "
        f"server process and database per row; {harness.retry_policy(plan.retries)}"
    )
    lines = harness.report_lines(run, info, table(results, plan.connections), verdicts(results))
    client = [
        f"- {m.variant.label} / {m.variant.database}: constant-rate client answered "
        f"{m.paced.achieved:,.0f}/s of {m.paced.rate:,.0f}/s scheduled; p99 from the moment a request was "
        f"written {m.paced.p99_from_send_ms:.2f} ms; p99 from scheduled time to write (the sender's "
        f"lateness, or every connection busy) {m.paced.send_lag_p99_ms:.2f} ms"
        for m in results
        if m.paced is not None
    ]
    notes = [f"- {m.variant.label} / {m.variant.database}: {n}" for m in results for n in m.notes]
    failures = [f"- {m.variant.label} / {m.variant.database}: {m.failed}" for m in results if m.failed]
    lines += ["", "Checks:", "", *failures, *notes, *client]
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return harness.server_bench_args(
        argv,
        description="Benchmark POST /webhooks/github (see bench/README.md).",
        duration_help="seconds of each measured run (default 10)",
        connections_help="wrk's keep-alive connections (default 32)",
        retries=1,
        retries_help="measure a disturbed row again (up to N times)",
        pin_help="do not pin server and clients to separate CPUs",
        only_help="run only rows whose label or database contain this text",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if harness.wrk_missing():
        return 2
    duration = args.duration or (2 if args.quick else 10)
    server_cpus, wrk_cpus = harness.cpu_pinning(args.no_pin)
    plan = Plan(
        warmup=args.warmup if args.warmup is not None else (1 if args.quick else 2),
        duration=duration,
        paced=duration,
        connections=args.connections,
        server_cpus=server_cpus,
        wrk_cpus=wrk_cpus,
        retries=args.retries,
    )
    return harness.run_server_bench(
        args,
        section=SECTION,
        plan=plan,
        rows=variants,
        describe=lambda v: f"{v.label} {v.database}",
        result=Measurement,
        measure=lambda v, postgres: measure(v, plan, postgres),
        pause=RETRY_PAUSE,
        progress=show_progress,
        report=lambda results, info: report(results, plan, info),
        figures=lambda m: {
            "saturated": asdict(m.saturated) if m.saturated else None,
            "paced": {k: v for k, v in asdict(m.paced).items() if k != "accepted_ids"} if m.paced else None,
        },
        settings="executor none, logging WARNING, outbox relay enabled on the memory bus (defaults), no "
        f"GitHub token (no forge), CODEX_TRIGGER_LOGINS={TRIGGER_LOGIN} for the execute-plan rows only",
    )


def show_progress(measurement: Measurement) -> None:
    s, p = measurement.saturated, measurement.paced
    if s and p:
        print(
            f"  {s.rps:,.0f}/s (p99 {s.p99_ms:.2f} ms); at {p.rate:,.0f}/s p50 {p.p50_ms:.2f} ms, "
            f"p99 {p.p99_ms:.2f} ms, max {p.max_ms:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
    for note in measurement.notes:
        print(f"  {note}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
