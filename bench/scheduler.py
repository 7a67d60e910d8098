"""Benchmark the scheduler: how long a scheduling pass takes with ~100,000 tasks in the database, whether that
time follows what changed rather than how many tasks there are, and how long a task's completion takes to
reach its dependents' dispatch.

Everything runs in this process (uvloop), wired by ``facteur.runtime.build_runtime`` as ``facteur serve``
wires it (store, dispatcher, lifecycle driver, scheduler, run reports) around an in-process executor that
records every submission with its time and answers at once. Per database (a new SQLite file, or a new
database on one durable embedded PostgreSQL 18):

* ideas are created with ``store.create_idea`` (approved, ``awaiting_dependencies``, 10 tasks each whose
  dependencies are a random DAG: each task depends on 0-2 earlier tasks of its idea; seeded RNG), spread
  over 50 repositories, first a tenth of them (~10,000 tasks), then the rest (~100,000 tasks); on
  PostgreSQL each bulk creation is followed by VACUUM ANALYZE and a CHECKPOINT;
* at both sizes, in the steady state: between passes 1-5 in-flight runs complete (a ``completed`` run
  report through ``RunReports.receive``, which applies it with ``Driver.run_changed``: dependents become
  ready, slots free up), then one ``Scheduler.pass_once`` is timed (claim transaction + submissions);
  passes with no free slot and passes with nothing ready are timed too;
* at ~100,000 tasks, with ``Scheduler.run`` as an asyncio task woken by the driver: the time from a run's
  ``completed`` report to the submission of the task it released (probe ideas of priority 0 whose tasks form
  a chain, so that the released task is next in line), one completion at a time, then with other runs
  completing at a steady rate beside them.

Figures are printed and, for a full run, written into bench/README.md (between the ``scheduler`` result
markers) and bench/results/scheduler.json. A row during which other processes used more than 10 % of a CPU
is measured again (``--retries``). Nothing here asserts on timings: the exit status is 0 unless
PostgreSQL, when asked for, failed to start (1).

Usage: ``python bench/scheduler.py [--quick] [--database sqlite|postgresql|both] [--ideas N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import math
import os
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _harness as harness  # bench/ is not a package: the machinery the benchmark scripts share

for _path in (harness.REPO_ROOT / "src", harness.REPO_ROOT, harness.BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SECTION = harness.Section("scheduler", "scheduling passes and dispatch latency")

TARGET_PASS_MS = 50.0
TARGET_DISPATCH_P99_MS = 100.0
#: pass time at ~100,000 tasks over pass time at ~10,000 tasks: "near 1" up to this
TARGET_RATIO = 1.5
TASKS_PER_IDEA = 10
REPOSITORIES = 50
MAX_CONCURRENT = 50
MAX_PER_REPOSITORY = 10
MAX_HEAVY = 5
#: share of heavy tasks (the heavy limit is a tenth of the global one)
HEAVY_SHARE = 0.05
#: priorities of the ideas (0 is the highest; the latency probes use it alone)
PRIORITIES = ((1, 0.2), (2, 0.6), (3, 0.2))
#: create_idea calls in flight at once (the writer commits them in batches)
CREATE_CONCURRENCY = 128
#: runs completed between two timed passes in the steady state: 1 to this many
MAX_COMPLETIONS_PER_PASS = 5
#: timed passes with no free slot, and with nothing ready
IDLE_PASSES = 100
#: seconds to wait before measuring a disturbed row again
RETRY_PAUSE = 10.0
#: seconds to wait for a released task's submission before counting it lost
DISPATCH_TIMEOUT = 10.0


# --- the data set ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskMeta:
    idea_id: uuid.UUID
    repository: str
    heavy: bool
    probe: bool
    #: the next task of a probe's chain
    successor: uuid.UUID | None = None


def repository(index: int) -> str:
    return f"bench-org/repo-{index:02d}"


def plan_markdown(title: str, keys: Sequence[str], deps: Sequence[Sequence[str]]) -> str:
    lines = ["<!-- codex:plan -->", f"# {title}", "", "## Tasks", ""]
    for key, depends in zip(keys, deps, strict=True):
        after = f" (after {', '.join(depends)})" if depends else ""
        lines.append(f"- [ ] **{key}** — change the {key} module and its tests{after}")
        lines.append("  Acceptance: the tests of the module pass; the public behaviour is unchanged.")
    return "\n".join(lines) + "\n"


def new_uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def idea_creation(
    rng: random.Random, number: int, *, at: Any, probe: bool = False, repo: int | None = None
) -> tuple[Any, dict[uuid.UUID, TaskMeta]]:
    """One approved idea with 10 tasks: a random DAG (each task depends on 0-2 earlier ones), or for a
    probe a chain (each task depends on the one before) of priority 0 without heavy tasks."""
    from facteur.domain.ideas import IdeaSource, IdeaState
    from facteur.domain.tasks import TaskState
    from facteur.store.port import ApprovalDraft, IdeaCreation, IdeaDraft, PlanVersionDraft, TaskSpec

    idea_id = new_uuid(rng)
    repo_name = repository(rng.randrange(REPOSITORIES) if repo is None else repo)
    priority = 0 if probe else rng.choices([p for p, _ in PRIORITIES], [w for _, w in PRIORITIES])[0]
    keys = [f"t{i + 1:02d}" for i in range(TASKS_PER_IDEA)]
    deps: list[list[str]] = []
    for i in range(TASKS_PER_IDEA):
        if probe:
            deps.append([keys[i - 1]] if i else [])
        else:
            deps.append(sorted(keys[j] for j in rng.sample(range(i), rng.randint(0, min(2, i)))))
    ids = [new_uuid(rng) for _ in keys]
    heavy = [not probe and rng.random() < HEAVY_SHARE for _ in keys]
    title = f"{'Probe' if probe else 'Idea'} {number}: faster widgets"
    specs = [
        TaskSpec(
            id=ids[i],
            key=keys[i],
            title=f"Change the {keys[i]} module",
            description=f"Rework the {keys[i]} module of {repo_name} as the plan says.",
            depends_on=tuple(deps[i]),
            acceptance_criteria=("the module's tests pass", "no public behaviour changes"),
            paths=(f"src/{keys[i]}.py", f"tests/test_{keys[i]}.py"),
            heavy=heavy[i],
            state=TaskState.PENDING if deps[i] else TaskState.READY,
        )
        for i in range(TASKS_PER_IDEA)
    ]
    creation = IdeaCreation(
        idea=IdeaDraft(
            id=idea_id,
            source=IdeaSource.API,
            source_ref=f"bench:{idea_id}",
            repository=repo_name,
            title=title,
            initiator="bench",
            priority=priority,
            spec={"goal": "p99 halved", "repository": repo_name},
            state=IdeaState.AWAITING_DEPENDENCIES,
        ),
        at=at,
        plan=PlanVersionDraft(
            source="api",
            markdown=plan_markdown(title, keys, deps),
            document={"tasks": [{"key": k, "dependsOn": d} for k, d in zip(keys, deps, strict=True)]},
        ),
        approval=ApprovalDraft(
            id=new_uuid(rng), plan_version=1, decision="automatic", decided_by="bench", reason="benchmark"
        ),
        plan_version=1,
        tasks=specs,
    )
    metas = {
        ids[i]: TaskMeta(
            idea_id=idea_id,
            repository=repo_name,
            heavy=heavy[i],
            probe=probe,
            successor=ids[i + 1] if probe and i + 1 < TASKS_PER_IDEA else None,
        )
        for i in range(TASKS_PER_IDEA)
    }
    return creation, metas


# --- instrumentation (in this process only: nothing under src/ changes) ------------------------------------


@dataclass
class PassProbe:
    """What the writer thread did inside ``claim_tasks`` (the operation itself, without the batch around it:
    chain lock, audit events insert, commit)."""

    op_seconds: float = 0.0
    pages: int = 0
    rows: int = 0
    #: statement label -> [count, seconds]
    statements: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0, 0.0]))


class Instruments:
    """Wraps ``Orchestration.claim_tasks`` and ``orchestration._ready_page`` and listens to the writer
    engine's statements, to split a pass's time. Installed before the stores are opened."""

    def __init__(self) -> None:
        self.current = PassProbe()
        self._inside = threading.local()
        self.captured: dict[str, tuple[str, Any]] = {}

    def install(self) -> None:
        from facteur.store import orchestration

        claim = orchestration.Orchestration.claim_tasks
        page = orchestration._ready_page
        instruments = self

        def claim_tasks(self: Any, conn: Any, request: Any) -> Any:
            started = time.perf_counter()
            instruments._inside.on = True
            try:
                return claim(self, conn, request)
            finally:
                instruments._inside.on = False
                instruments.current.op_seconds += time.perf_counter() - started

        def ready_page(conn: Any, now: Any, after: Any, size: int) -> list[Any]:
            instruments._inside.size = size
            rows = page(conn, now, after, size)
            instruments.current.pages += 1
            instruments.current.rows += len(rows)
            return rows

        orchestration.Orchestration.claim_tasks = claim_tasks  # type: ignore[method-assign]
        orchestration._ready_page = ready_page

    def watch(self, engine: Any) -> None:
        import sqlalchemy as sa

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _before(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            conn.info["bench_started"] = time.perf_counter()

        @sa.event.listens_for(engine, "after_cursor_execute")
        def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            if not getattr(self._inside, "on", False):
                return
            label = statement_label(statement)
            if label == "ready page (first)" and getattr(self._inside, "size", 0) == 1:
                label = "ready page (LIMIT 1: anything left?)"
            entry = self.current.statements[label]
            entry[0] += 1
            entry[1] += time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())
            if label in PLANNED:
                self.captured[label] = (statement, parameters)

    def take(self) -> PassProbe:
        probe, self.current = self.current, PassProbe()
        return probe


#: the pass's statements over all tasks whose query plans the report shows
PLANNED = (
    "active runs",
    "ready page (first)",
    "ready page (next)",
    "ready page (LIMIT 1: anything left?)",
    "dependencies' runs",
)

_LABELS = (
    ("active runs", re.compile(r"^SELECT ideas\.repository, tasks\.heavy, count")),
    ("ready page (next)", re.compile(r"ORDER BY tasks\.priority.*", re.S), re.compile(r"\) > \(")),
    ("ready page (first)", re.compile(r"ORDER BY tasks\.priority.*", re.S)),
    ("idea", re.compile(r"^SELECT ideas\.id,.*FROM ideas\s+WHERE ideas\.id =", re.S)),
    ("plan markdown", re.compile(r"^SELECT plans\.markdown")),
    ("dependencies", re.compile(r"JOIN task_dependencies")),
    ("dependencies' runs", re.compile(r"^SELECT runs\.task_id, (runs\.status, )?runs\.branch")),
    ("task update", re.compile(r"^UPDATE tasks")),
    ("run insert", re.compile(r"^INSERT INTO runs")),
    ("idea update", re.compile(r"^UPDATE ideas")),
)


def statement_label(statement: str) -> str:
    for label, *patterns in _LABELS:
        if all(p.search(statement) for p in patterns):  # type: ignore[attr-defined]
            return label
    return " ".join(statement.split())[:48]


# --- the executor and the fleet of runs ------------------------------------------------------------------


class Fleet:
    """What the in-process executor saw: runs in flight (by repository, heavy), submission times, waiters."""

    def __init__(self, tasks: dict[uuid.UUID, TaskMeta]) -> None:
        self.tasks = tasks
        self.inflight: dict[uuid.UUID, uuid.UUID] = {}  # run -> task
        self.by_repository: Counter[str] = Counter()
        self.heavy = 0
        self.peak_total = 0
        self.peak_repository = 0
        self.peak_heavy = 0
        self.submitted = 0
        self.resubmitted = 0
        self.tasks_submitted: set[uuid.UUID] = set()
        self.twice: int = 0
        self.waiters: dict[uuid.UUID, asyncio.Future[float]] = {}

    def submitted_run(self, run_id: uuid.UUID, task_id: uuid.UUID, at: float) -> None:
        meta = self.tasks[task_id]
        self.submitted += 1
        if task_id in self.tasks_submitted:
            self.twice += 1
        self.tasks_submitted.add(task_id)
        self.inflight[run_id] = task_id
        self.by_repository[meta.repository] += 1
        self.heavy += meta.heavy
        self.peak_total = max(self.peak_total, len(self.inflight))
        self.peak_repository = max(self.peak_repository, self.by_repository[meta.repository])
        self.peak_heavy = max(self.peak_heavy, self.heavy)
        waiter = self.waiters.pop(task_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    def finished(self, run_id: uuid.UUID) -> TaskMeta:
        meta = self.tasks[self.inflight.pop(run_id)]
        self.by_repository[meta.repository] -= 1
        self.heavy -= meta.heavy
        return meta

    def regular(self) -> list[uuid.UUID]:
        return [run for run, task in self.inflight.items() if not self.tasks[task].probe]

    def probes(self, *, with_successor: bool) -> list[uuid.UUID]:
        return [
            run
            for run, task in self.inflight.items()
            if self.tasks[task].probe and (self.tasks[task].successor is not None) == with_successor
        ]


class BenchExecutor:
    """Records every submission (with ``time.perf_counter()``) and answers at once."""

    kind = "bench"
    namespace = "bench"

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._names: dict[str, uuid.UUID] = {}

    async def submit(self, request: Any) -> Any:
        from facteur.executors.port import Submission, WorkflowRef

        at = time.perf_counter()
        created = request.name not in self._names
        if created:
            self._names[request.name] = request.run_id
            self._fleet.submitted_run(request.run_id, request.task_id, at)
        else:
            self._fleet.resubmitted += 1
        return Submission(WorkflowRef(self.kind, self.namespace, request.name), created=created)

    async def status(self, ref: Any) -> Any:
        from facteur.executors.port import WorkflowPhase, WorkflowStatus

        return WorkflowStatus(phase=WorkflowPhase.PENDING)

    async def cancel(self, ref: Any) -> None:
        return None

    async def aclose(self) -> None:
        return None


class TimedStore:
    """The store, with ``claim_tasks`` timed as the scheduler awaits it (queue, operation, commit)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.claim_seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_tasks(self, request: Any) -> Any:
        started = time.perf_counter()
        try:
            return await self._store.claim_tasks(request)
        finally:
            self.claim_seconds += time.perf_counter() - started


class WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages[record.getMessage().split(":")[0][:80]] += 1


# --- rows ------------------------------------------------------------------------------------------------


@dataclass
class Row:
    database: str
    tasks: int
    name: str  # "steady state", "fill", "no free slot", "nothing ready", "completion → dispatch …"
    #: milliseconds per sample (a pass, or a completion's dispatch latency)
    samples: list[float] = field(default_factory=list, repr=False)
    #: per pass: the claim as the scheduler awaits it, and the operation in the writer thread (ms)
    claim_ms: list[float] = field(default_factory=list, repr=False)
    op_ms: list[float] = field(default_factory=list, repr=False)
    claimed: list[int] = field(default_factory=list, repr=False)
    pages: list[int] = field(default_factory=list, repr=False)
    rows_read: list[int] = field(default_factory=list, repr=False)
    #: statement label -> [count, seconds] over all passes of the row
    statements: dict[str, list[float]] = field(default_factory=dict)
    #: latency rows: completion → report applied (receive returned), ms
    settle_ms: list[float] = field(default_factory=list, repr=False)
    lost: int = 0
    #: CPU other processes used meanwhile (share of one core; PostgreSQL's own processes not counted)
    foreign: float = 0.0
    notes: list[str] = field(default_factory=list)

    def p(self, share: float, values: Sequence[float] | None = None) -> float:
        return harness.percentile(sorted(self.samples if values is None else values), share, empty=math.nan)

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan

    def summary(self) -> dict[str, Any]:
        def mean(values: Sequence[float]) -> float | None:
            return statistics.fmean(values) if values else None

        return {
            "database": self.database,
            "tasks": self.tasks,
            "name": self.name,
            "samples": len(self.samples),
            "p50_ms": self.p(0.5),
            "p99_ms": self.p(0.99),
            "max_ms": self.max,
            "claim_p50_ms": self.p(0.5, self.claim_ms) if self.claim_ms else None,
            "op_p50_ms": self.p(0.5, self.op_ms) if self.op_ms else None,
            "claimed_mean": mean(self.claimed),
            "rows_read_mean": mean(self.rows_read),
            "pages_mean": mean(self.pages),
            "settle_p50_ms": self.p(0.5, self.settle_ms) if self.settle_ms else None,
            "settle_p99_ms": self.p(0.99, self.settle_ms) if self.settle_ms else None,
            "statements": {k: {"count": v[0], "seconds": v[1]} for k, v in self.statements.items()},
            "lost": self.lost,
            "foreign_cpu": self.foreign,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Plan:
    ideas: int
    small_ideas: int
    passes: int
    warmup_passes: int
    completions: int
    load_rate: float
    seed: int
    retries: int


# --- one database ----------------------------------------------------------------------------------------


class Bench:
    """One database: the runtime around it, the data set, the measurements."""

    def __init__(self, database: str, url: str, raw: Callable[[], Any], plan: Plan, instruments: Instruments):
        self.database = database
        self.url = url
        self.raw = raw  # a new DB-API connection to the same database (for the bench's own statements)
        self.plan = plan
        self.instruments = instruments
        self.rng = random.Random(plan.seed)
        self.tasks: dict[uuid.UUID, TaskMeta] = {}
        self.fleet = Fleet(self.tasks)
        self.ideas = 0
        self.probe_ideas = 0
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.plans: dict[str, str] = {}
        self.plans_at = 0
        self.runtime: Any = None
        self.store: TimedStore | None = None
        self.warnings = WarningCounter()

    # --- set-up ----------------------------------------------------------------------------------------

    async def open(self) -> None:
        from facteur.clock import SystemClock
        from facteur.runtime import build_runtime
        from facteur.settings import (
            BusSettings,
            DatabaseSettings,
            OutboxSettings,
            SchedulerSettings,
            ServerSettings,
            Settings,
        )
        from facteur.store.sql import SqlStore

        settings = Settings(
            database=DatabaseSettings(url=self.url),
            server=ServerSettings(callback_secret="bench-callback-secret"),  # type: ignore[arg-type]
            bus=BusSettings(outbox=OutboxSettings(relay_enabled=False)),
            scheduler=SchedulerSettings(
                max_concurrent=MAX_CONCURRENT, max_per_repository=MAX_PER_REPOSITORY, max_heavy=MAX_HEAVY
            ),
        )
        clock = SystemClock()
        real = SqlStore.open(self.url, clock=clock, pool_size=settings.database.pool_size)
        await asyncio.to_thread(real.migrate)
        self.instruments.watch(real._writer)
        self.store = TimedStore(real)
        self.runtime = await build_runtime(
            settings, clock=clock, store=self.store, executor=BenchExecutor(self.fleet)
        )  # type: ignore[arg-type]
        logging.getLogger("facteur").addHandler(self.warnings)

    async def close(self) -> None:
        logging.getLogger("facteur").removeHandler(self.warnings)
        if self.runtime is not None:
            await self.runtime.close()

    async def create(self, count: int, *, probe: bool = False, label: str = "") -> float:
        """``count`` more ideas (10 tasks each), ``CREATE_CONCURRENCY`` calls in flight; progress shown."""
        from facteur.clock import SystemClock

        assert self.store is not None
        clock = SystemClock()
        started = time.perf_counter()
        step = max(1, count // 10)
        done = 0
        pending: set[asyncio.Task[Any]] = set()
        for n in range(count):
            number = self.probe_ideas if probe else self.ideas
            creation, metas = idea_creation(
                self.rng, number, at=clock.now(), probe=probe, repo=(number % REPOSITORIES) if probe else None
            )
            self.tasks.update(metas)
            if probe:
                self.probe_ideas += 1
            else:
                self.ideas += 1
            pending.add(asyncio.create_task(self.store.create_idea(creation)))
            if len(pending) >= CREATE_CONCURRENCY:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    task.result()
                done += len(finished)
            if not probe and (n + 1) % step == 0:
                rate = (n + 1) / max(time.perf_counter() - started, 1e-9)
                say(
                    f"  {label}{n + 1:,}/{count:,} ideas ({(n + 1) * TASKS_PER_IDEA:,} tasks), "
                    f"{rate:,.0f} ideas/s"
                )
        for task in await asyncio.gather(*pending, return_exceptions=True):
            if isinstance(task, BaseException):
                raise task
        return time.perf_counter() - started

    async def analyze(self) -> None:
        """PostgreSQL: VACUUM ANALYZE then CHECKPOINT after a bulk creation — what autovacuum and the
        checkpointer do within minutes of such a change, done before the measurements instead of during
        them (the planner needs the statistics: see bench/README.md)."""
        if self.database != "postgresql":
            return

        def run() -> None:
            with contextlib.closing(self.raw()) as conn:
                conn.autocommit = True
                conn.execute("VACUUM ANALYZE")
                conn.execute("CHECKPOINT")

        await asyncio.to_thread(run)

    @property
    def total_tasks(self) -> int:
        return len(self.tasks)

    # --- completing runs ------------------------------------------------------------------------------

    async def complete(self, run_id: uuid.UUID) -> float:
        """A ``completed`` (succeeded) report for the run, as its callback sends it; returns when it is
        applied (run report committed, then the driver's reaction committed). The time it returned."""
        from facteur.domain.run_reports import Outcome, ReportType, RunReportEvent

        meta = self.fleet.finished(run_id)
        event = RunReportEvent(
            id=f"completed-{run_id}",
            type=ReportType.COMPLETED,
            outcome=Outcome.SUCCEEDED,
            summary="Done: the module was reworked and its tests pass.",
            branch=f"facteur/{meta.idea_id.hex[:8]}",
        )
        await self.runtime.run_reports.receive(run_id, event)
        return time.perf_counter()

    # --- part 1: passes ---------------------------------------------------------------------------------

    async def timed_pass(self, row: Row) -> None:
        assert self.store is not None
        self.instruments.take()
        self.store.claim_seconds = 0.0
        result = await self.runtime.scheduler.pass_once()
        probe = self.instruments.take()
        row.samples.append(1000 * result.seconds)
        row.claim_ms.append(1000 * self.store.claim_seconds)
        row.op_ms.append(1000 * probe.op_seconds)
        row.claimed.append(result.claimed)
        row.pages.append(probe.pages)
        row.rows_read.append(probe.rows)
        for label, (count, seconds) in probe.statements.items():
            entry = row.statements.setdefault(label, [0, 0.0])
            entry[0] += count
            entry[1] += seconds

    async def passes(self) -> None:
        """The rows of one size: the fill, the steady state, no free slot, nothing ready."""
        if not self.fleet.inflight:
            fill = Row(self.database, self.total_tasks, "first pass (fills every slot)")
            await self.timed_pass(fill)
            self.rows.append(fill)
        for _ in range(self.plan.warmup_passes):
            await self.complete_some()
            await self.runtime.scheduler.pass_once()
        for measure in (self.steady, self.no_free_slot, self.nothing_ready):
            self.rows.append(await self.measured(measure))

    async def measured(self, measure: Callable[[], Awaitable[Row]]) -> Row:
        """A row, measured again (``plan.retries`` times at most, after a pause) while other processes used
        more than 10 % of a CPU meanwhile: the least disturbed measurement counts."""
        row = await measure()
        attempts = [row.foreign]
        for attempt in range(self.plan.retries):
            if row.foreign <= harness.DISTURBED:
                break
            harness.say_disturbed(row.foreign, attempt, self.plan.retries)
            await asyncio.sleep(RETRY_PAUSE)
            again = await measure()
            attempts.append(again.foreign)
            if again.foreign < row.foreign:
                row = again
        if len(attempts) > 1:
            shares = ", ".join(f"{100 * share:.0f} %" for share in attempts)
            row.notes.append(
                f"measured {len(attempts)} times (other processes' CPU: {shares}); the least disturbed counts"
            )
        return row

    async def steady(self) -> Row:
        row = Row(self.database, self.total_tasks, "steady state")
        with self.accounted(row):
            for _ in range(self.plan.passes):
                await self.complete_some()
                await self.timed_pass(row)
        return row

    async def no_free_slot(self) -> Row:
        row = Row(self.database, self.total_tasks, "no free slot")
        if len(self.fleet.inflight) < MAX_CONCURRENT:
            row.notes.append(f"only {len(self.fleet.inflight)} runs in flight (limits held back the rest)")
        with self.accounted(row):
            for _ in range(IDLE_PASSES):
                await self.timed_pass(row)
        return row

    async def nothing_ready(self) -> Row:
        """10 slots free, every ready task set aside (pending) meanwhile, then put back."""
        row = Row(self.database, self.total_tasks, "nothing ready (10 free slots)")
        picked = self.rng.sample(sorted(self.fleet.inflight), min(10, len(self.fleet.inflight)))
        await asyncio.gather(*(self.complete(run) for run in picked))
        held = await asyncio.to_thread(self.hold_ready)
        try:
            with self.accounted(row):
                for _ in range(IDLE_PASSES):
                    await self.timed_pass(row)
        finally:
            await asyncio.to_thread(self.release_ready, held)
        row.notes.append(f"{len(held):,} ready tasks set aside meanwhile")
        await self.runtime.scheduler.pass_once()  # refill
        return row

    async def complete_some(self) -> None:
        """1 to ``MAX_COMPLETIONS_PER_PASS`` runs in flight, at random, complete (at once)."""
        k = min(len(self.fleet.inflight), self.rng.randint(1, MAX_COMPLETIONS_PER_PASS))
        picked = self.rng.sample(sorted(self.fleet.inflight), k)
        await asyncio.gather(*(self.complete(run) for run in picked))

    @contextlib.contextmanager
    def accounted(self, row: Row) -> Iterator[None]:
        """Note in ``row`` what else used the machine meanwhile: other processes' CPU; on PostgreSQL,
        autovacuum/autoanalyze runs and checkpoints."""
        before = harness.cpu_by_process()
        activity = self.server_activity()
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        row.foreign, top = harness.foreign_cpu(before, harness.cpu_by_process(), {os.getpid()}, seconds)
        if row.foreign > harness.DISTURBED:
            row.notes.append(
                f"other processes used {100 * row.foreign:.0f} % of a CPU meanwhile (mostly {top})"
            )
        after = self.server_activity()
        if activity and after:
            moved = [f"{after[k] - v} {k}" for k, v in activity.items() if after[k] != v]
            if moved:
                row.notes.append("PostgreSQL meanwhile: " + ", ".join(moved))

    def server_activity(self) -> dict[str, int]:
        """PostgreSQL: autovacuum and autoanalyze runs so far (this database), checkpoints (the server)."""
        if self.database != "postgresql":
            return {}
        with contextlib.closing(self.raw()) as conn:
            cursor = conn.cursor()
            cursor.execute(
                "SELECT coalesce(sum(autovacuum_count), 0), coalesce(sum(autoanalyze_count), 0) "
                "FROM pg_stat_user_tables"
            )
            vacuums, analyzes = cursor.fetchone()
            cursor.execute("SELECT num_timed + num_requested FROM pg_stat_checkpointer")
            (checkpoints,) = cursor.fetchone()
        return {"autovacuum": int(vacuums), "autoanalyze": int(analyzes), "checkpoints": int(checkpoints)}

    def hold_ready(self) -> list[Any]:
        with contextlib.closing(self.raw()) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT id FROM tasks WHERE state = 'ready'")
            ids = [row[0] for row in cursor.fetchall()]
            cursor.execute("UPDATE tasks SET state = 'pending' WHERE state = 'ready'")
            conn.commit()
        return ids

    def release_ready(self, ids: Sequence[Any]) -> None:
        mark = "?" if self.database == "sqlite" else "%s"
        with contextlib.closing(self.raw()) as conn:
            cursor = conn.cursor()
            cursor.executemany(f"UPDATE tasks SET state = 'ready' WHERE id = {mark}", [(i,) for i in ids])
            conn.commit()

    # --- part 2: completion → dispatch ---------------------------------------------------------------------

    async def latency(self, load_rate: float) -> Row:
        """Probe ideas (priority 0, chains) brought in flight, then ``completions`` of their runs, one at a
        time, each timed from its report to the submission of the task it released; other runs complete at
        ``load_rate`` per second meanwhile (0: none)."""
        name = (
            "completion → dependent dispatched, one at a time"
            if not load_rate
            else f"completion → dependent dispatched, {load_rate:g} other completions/s"
        )
        row = Row(self.database, self.total_tasks, name)
        per_probe = TASKS_PER_IDEA - 1
        probes = math.ceil(self.plan.completions / per_probe) + 2
        probes = min(probes, MAX_CONCURRENT - 10)
        await self.create(probes, probe=True)
        scheduler = asyncio.create_task(self.runtime.scheduler.run(), name="bench-scheduler")
        background: asyncio.Task[None] | None = None
        try:
            await self.bring_probes_in(probes, row)
            if load_rate:
                background = asyncio.create_task(self.steady_completions(load_rate))
            with self.accounted(row):
                await self.probe_completions(row)
            for ended in self.fleet.probes(with_successor=True) + self.fleet.probes(with_successor=False):
                await self.complete(ended)  # the probes end: their slots go back to the other ideas
        finally:
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
            # let the last passes end (a pass cancelled half-way would leave claimed runs unsubmitted)
            await asyncio.sleep(0.5)
            scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scheduler
        return row

    async def probe_completions(self, row: Row) -> None:
        """The timed completions of probes' runs, one at a time."""
        while len(row.samples) + row.lost < self.plan.completions:
            candidates = self.fleet.probes(with_successor=True)
            for ended in self.fleet.probes(with_successor=False):
                await self.complete(ended)  # the chain's last task: releases nothing
            if not candidates:
                row.notes.append("the probes ran out of tasks before the planned number of completions")
                break
            run_id = self.rng.choice(candidates)
            successor = self.tasks[self.fleet.inflight[run_id]].successor
            assert successor is not None
            waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.fleet.waiters[successor] = waiter
            started = time.perf_counter()
            settled = await self.complete(run_id)
            try:
                submitted = await asyncio.wait_for(waiter, DISPATCH_TIMEOUT)
            except TimeoutError:
                row.lost += 1
                self.fleet.waiters.pop(successor, None)
                continue
            row.samples.append(1000 * (submitted - started))
            row.settle_ms.append(1000 * (settled - started))
            await asyncio.sleep(self.rng.uniform(0.0, 0.02))  # completions arrive independently

    async def bring_probes_in(self, probes: int, row: Row) -> None:
        """Complete other runs until the first task of every probe is in flight (the probes come first:
        priority 0; a probe waits while its repository is at its limit)."""
        deadline = time.monotonic() + 120
        completed = 0
        while len(self.fleet.probes(with_successor=True)) < probes and time.monotonic() < deadline:
            regular = self.fleet.regular()
            if not regular:
                await asyncio.sleep(0.01)
                continue
            await self.complete(self.rng.choice(regular))
            completed += 1
            await asyncio.sleep(0.005)
        row.notes.append(
            f"{probes} probe ideas (chains of {TASKS_PER_IDEA} tasks, priority 0); {completed} other runs "
            "completed to bring their first tasks in flight"
        )

    async def steady_completions(self, rate: float) -> None:
        """Other (non-probe) runs completing at ``rate`` per second (Poisson arrivals)."""
        pending: set[asyncio.Task[float]] = set()
        try:
            while True:
                await asyncio.sleep(self.rng.expovariate(rate))
                regular = self.fleet.regular()
                if regular:
                    task = asyncio.create_task(self.complete(self.rng.choice(regular)))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
        finally:
            for task in list(pending):
                with contextlib.suppress(Exception):
                    await task

    # --- query plans ---------------------------------------------------------------------------------

    def explain(self) -> None:
        """The plans of the pass's two reads over all tasks, with the parameters of the last pass."""
        self.plans_at = self.total_tasks
        for label in PLANNED:
            captured = self.instruments.captured.get(label)
            if captured is None:
                continue
            statement, parameters = captured
            with contextlib.closing(self.raw()) as conn:
                cursor = conn.cursor()
                if self.database == "sqlite":
                    cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                    text = "\n".join(str(row[-1]) for row in cursor.fetchall())
                else:
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters)
                    text = "\n".join(str(row[0]) for row in cursor.fetchall())
                    conn.rollback()
            self.plans[label] = text

    def census(self) -> list[str]:
        with contextlib.closing(self.raw()) as conn:
            cursor = conn.cursor()
            cursor.execute("SELECT state, count(*) FROM tasks GROUP BY state ORDER BY state")
            tasks = ", ".join(f"{state} {count:,}" for state, count in cursor.fetchall())
            cursor.execute("SELECT count(*) FROM runs")
            runs = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM events")
            events = cursor.fetchone()[0]
        return [f"tasks by state at the end: {tasks}; {runs:,} runs; {events:,} audit events"]


# --- the run ---------------------------------------------------------------------------------------------


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def show(row: Row) -> None:
    extra = ""
    if row.claim_ms:
        extra = (
            f"; claim p50 {row.p(0.5, row.claim_ms):.2f} ms, {statistics.fmean(row.claimed):.1f} claimed, "
            f"{statistics.fmean(row.rows_read):.1f} ready rows read per pass"
        )
    if row.settle_ms:
        extra = f"; report applied p50 {row.p(0.5, row.settle_ms):.2f} ms"
    say(
        f"  {row.name} @ {row.tasks:,} tasks: n={len(row.samples)}, p50 {row.p(0.5):.2f} ms, "
        f"p99 {row.p(0.99):.2f} ms, max {row.max:.2f} ms{extra}"
    )


@contextlib.contextmanager
def database_of(
    name: str, postgres: harness.Postgres | None, workdir: Path
) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(the URL for the store, a factory of raw DB-API connections) of a fresh database."""
    if name == "sqlite":
        path = workdir / "scheduler.db"
        yield f"sqlite:///{path}", lambda: sqlite3.connect(path, timeout=30)
        return
    assert postgres is not None
    import psycopg

    database = postgres.new_database()
    url = postgres.url(database)
    try:
        yield url, lambda: psycopg.connect(url)
    finally:
        postgres.drop(database)


async def bench_database(
    name: str, url: str, raw: Callable[[], Any], plan: Plan, instruments: Instruments
) -> Bench:
    bench = Bench(name, url, raw, plan, instruments)
    await bench.open()
    try:
        say(f"… {name}: creating {plan.small_ideas:,} ideas")
        seconds = await bench.create(plan.small_ideas, label="")
        bench.notes.append(
            f"{plan.small_ideas:,} ideas ({plan.small_ideas * TASKS_PER_IDEA:,} tasks) created in "
            f"{seconds:.1f} s"
        )
        await bench.analyze()
        gc.collect()
        gc.freeze()
        say(f"… {name}: passes at {bench.total_tasks:,} tasks")
        await bench.passes()
        for row in bench.rows:
            show(row)
        more = plan.ideas - plan.small_ideas
        say(f"… {name}: creating {more:,} more ideas")
        seconds = await bench.create(more, label="")
        bench.notes.append(
            f"{more:,} more ideas ({more * TASKS_PER_IDEA:,} tasks) created in {seconds:.1f} s"
        )
        await bench.analyze()
        gc.collect()
        gc.freeze()
        say(f"… {name}: passes at {bench.total_tasks:,} tasks")
        shown = len(bench.rows)
        await bench.passes()
        for row in bench.rows[shown:]:
            show(row)
        await asyncio.to_thread(bench.explain)
        for rate in (0.0, plan.load_rate):
            say(
                f"… {name}: completion → dispatch latency"
                + (f", {rate:g} other completions/s" if rate else "")
            )
            row = await bench.measured(functools.partial(bench.latency, rate))
            bench.rows.append(row)
            show(row)
        bench.notes += await asyncio.to_thread(bench.census)
        fleet = bench.fleet
        bench.notes.append(
            f"limits held: at most {fleet.peak_total} runs in flight (limit {MAX_CONCURRENT}), "
            f"{fleet.peak_repository} in one repository ({MAX_PER_REPOSITORY}), {fleet.peak_heavy} heavy "
            f"({MAX_HEAVY}); {fleet.submitted:,} submissions, {fleet.twice} tasks submitted twice, "
            f"{fleet.resubmitted} resubmissions of a known workflow"
        )
        if bench.warnings.messages:
            bench.notes.append(
                "warnings logged: "
                + "; ".join(f"{m} x{n}" for m, n in bench.warnings.messages.most_common(5))
            )
    finally:
        await bench.close()
        gc.unfreeze()
    return bench


async def run_all(plan: Plan, databases: Sequence[str], postgres: harness.Postgres | None) -> list[Bench]:
    instruments = Instruments()
    instruments.install()
    done: list[Bench] = []
    with tempfile.TemporaryDirectory(prefix="facteur-bench-scheduler-") as workdir:
        for name in databases:
            with database_of(name, postgres, Path(workdir)) as (url, raw):
                done.append(await bench_database(name, url, raw, plan, instruments))
    return done


# --- the report ------------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def table(benches: Sequence[Bench]) -> str:
    lines = [
        "| database | tasks | measurement | n | p50 ms | p99 ms | max ms | claim p50 ms | claim op p50 ms "
        "| claimed / pass | ready rows read / pass |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in benches:
        for row in bench.rows:
            if row.settle_ms:
                continue
            lines.append(
                f"| {row.database} | {row.tasks:,} | {row.name} | {len(row.samples)} | {_num(row.p(0.5))} | "
                f"{_num(row.p(0.99))} | {_num(row.max)} | {_num(row.p(0.5, row.claim_ms))} | "
                f"{_num(row.p(0.5, row.op_ms))} | {statistics.fmean(row.claimed):.1f} | "
                f"{statistics.fmean(row.rows_read):.1f} |"
            )
    lines += [
        "",
        "| database | tasks | measurement | n | p50 ms | p99 ms | max ms | report applied p50 ms | "
        "report applied p99 ms | lost |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for bench in benches:
        for row in bench.rows:
            if not row.settle_ms and not row.lost:
                continue
            lines.append(
                f"| {row.database} | {row.tasks:,} | {row.name} | {len(row.samples)} | {_num(row.p(0.5))} | "
                f"{_num(row.p(0.99))} | {_num(row.max)} | {_num(row.p(0.5, row.settle_ms))} | "
                f"{_num(row.p(0.99, row.settle_ms))} | {row.lost} |"
            )
    return "\n".join(lines)


def steady_rows(bench: Bench) -> tuple[Row | None, Row | None]:
    steady = [row for row in bench.rows if row.name == "steady state"]
    if len(steady) < 2:
        return None, (steady[0] if steady else None)
    return steady[0], steady[-1]


def verdicts(benches: Sequence[Bench]) -> list[str]:
    lines = []
    for bench in benches:
        small, large = steady_rows(bench)
        if large is not None:
            p99 = large.p(0.99)
            state = "**met**" if p99 <= TARGET_PASS_MS else f"**not met** (by {p99 - TARGET_PASS_MS:.1f} ms)"
            others = [
                f"{row.name} p99 {row.p(0.99):.2f} ms"
                for row in bench.rows
                if row.tasks == large.tasks and row.name in {"no free slot", "nothing ready (10 free slots)"}
            ]
            lines.append(
                f"- {bench.database}: a pass at {large.tasks:,} tasks, steady state, target ≤ "
                f"{TARGET_PASS_MS:g} ms — p50 {large.p(0.5):.2f} ms, p99 {p99:.2f} ms: {state}"
                + (f" ({'; '.join(others)})" if others else "")
            )
        if small is not None and large is not None:
            ratio50 = large.p(0.5) / small.p(0.5)
            ratio99 = large.p(0.99) / small.p(0.99)
            state = "**met**" if ratio50 <= TARGET_RATIO else "**not met**"
            lines.append(
                f"- {bench.database}: proportional to what changed, pass time at {large.tasks:,} over "
                f"{small.tasks:,} tasks, target near 1 (≤ {TARGET_RATIO:g}) — p50 x{ratio50:.2f}, p99 "
                f"x{ratio99:.2f}; ready rows read per pass {statistics.fmean(small.rows_read):.1f} → "
                f"{statistics.fmean(large.rows_read):.1f}: {state}"
            )
        for row in bench.rows:
            if not row.settle_ms and not row.lost:
                continue
            p99 = row.p(0.99)
            state = (
                "**met**"
                if p99 <= TARGET_DISPATCH_P99_MS and not row.lost
                else f"**not met** ({p99:.1f} ms, {row.lost} lost)"
            )
            lines.append(
                f"- {bench.database}: {row.name}, target p99 ≤ {TARGET_DISPATCH_P99_MS:g} ms — p50 "
                f"{row.p(0.5):.2f} ms, p99 {p99:.2f} ms: {state}"
            )
    return lines


def breakdown(benches: Sequence[Bench]) -> list[str]:
    """Where a pass's time goes: steady-state and no-free-slot passes, at both sizes."""
    lines = []
    for bench in benches:
        for row in bench.rows:
            if row.name not in {"steady state", "no free slot"} or not row.samples:
                continue
            passes = len(row.samples)
            total = statistics.fmean(row.samples)
            claim = statistics.fmean(row.claim_ms)
            op = statistics.fmean(row.op_ms)
            parts = ", ".join(
                f"{label} {1000 * seconds / passes:.2f} ms ({count / passes:.1f}x)"
                for label, (count, seconds) in sorted(row.statements.items(), key=lambda item: -item[1][1])
            )
            statements = sum(seconds for _, seconds in row.statements.values()) * 1000 / passes
            lines.append(
                f"- {bench.database} @ {row.tasks:,} tasks, {row.name}, mean of {passes} passes: pass "
                f"{total:.2f} ms = claim transaction as awaited {claim:.2f} ms (the operation in the writer "
                f"thread {op:.2f} ms: its statements {statements:.2f} ms, Python {op - statements:.2f} ms; "
                f"the rest — chain lock, audit events, commit, thread hops — {claim - op:.2f} ms) + "
                f"submitting the claimed runs {total - claim:.2f} ms. Statements per pass: {parts}"
            )
    return lines


def query_plans(benches: Sequence[Bench]) -> list[str]:
    lines = []
    for bench in benches:
        for label, text in bench.plans.items():
            kind = "EXPLAIN QUERY PLAN" if bench.database == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS)"
            lines += [f"{bench.database}, {label} ({kind}, at {bench.plans_at:,} tasks):", "", "```"]
            lines += text.splitlines()
            lines += ["```", ""]
    return lines


def machine(postgres_version: str) -> dict[str, str]:
    info = harness.host(("sqlalchemy", "psycopg", "uvloop"))
    info["nproc"] = str(len(os.sched_getaffinity(0)))
    info["postgresql"] = postgres_version
    return info


def report(
    benches: Sequence[Bench], plan: Plan, info: dict[str, str], loop_name: str, busy: Sequence[str] = ()
) -> str:
    run = (
        f"{harness.run_of()}: one process ({loop_name} event loop); {plan.ideas:,} ideas x {TASKS_PER_IDEA} "
        f"tasks (random DAGs, each task after 0-2 earlier ones; seed {plan.seed}) over {REPOSITORIES} "
        f"repositories, first {plan.small_ideas:,} of them; limits max_concurrent {MAX_CONCURRENT}, "
        f"max_per_repository {MAX_PER_REPOSITORY}, max_heavy {MAX_HEAVY} ({HEAVY_SHARE:.0%} of tasks heavy); "
        f"steady state: 1-{MAX_COMPLETIONS_PER_PASS} runs completed before each of {plan.passes} timed "
        f"passes (after {plan.warmup_passes} untimed); {IDLE_PASSES} passes with no free slot and with "
        f"nothing ready; {plan.completions} completions → dispatch per latency row, the second with other "
        f"runs completing at {plan.load_rate:g}/s"
    )
    lines = harness.report_lines(run, info, table(benches), verdicts(benches))
    lines += [
        "",
        "Where a pass's time goes (statements timed in the writer thread):",
        "",
        *breakdown(benches),
    ]
    notes = [f"- {n}" for n in busy] + [f"- {b.database}: {n}" for b in benches for n in b.notes]
    notes += [
        f"- {b.database} / {r.tasks:,} tasks / {r.name}: {n}"
        for b in benches
        for r in b.rows
        for n in r.notes
    ]
    lines += [
        "",
        "Checks:",
        "",
        *notes,
        "",
        "Query plans of the pass's reads over all tasks:",
        "",
        *query_plans(benches),
    ]
    return "\n".join(lines).rstrip() + "\n"


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the scheduler (see bench/README.md).")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgresql", "both"),
        default="both",
        help="which database(s) (both)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1,000 ideas (10,000 tasks), 100 passes, 100 completions",
    )
    parser.add_argument("--ideas", type=int, default=None, help="ideas of 10 tasks (10,000)")
    parser.add_argument("--passes", type=int, default=None, help="timed steady-state passes per size (400)")
    parser.add_argument("--completions", type=int, default=None, help="completions per latency row (300)")
    parser.add_argument(
        "--load-rate", type=float, default=20.0, help="other completions/s beside the probes (20)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the data set (7)")
    parser.add_argument(
        "--retries", type=int, default=1, help="measure a disturbed row again up to N times (1)"
    )
    harness.add_write_readme(parser)
    args = parser.parse_args(argv)
    harness.check_retries(parser, args)
    if args.ideas is not None and not 100 <= args.ideas <= 100_000:
        parser.error("--ideas must be between 100 and 100,000")
    return args


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop when installed, as ``facteur serve`` runs."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    ideas = args.ideas or (1_000 if quick else 10_000)
    plan = Plan(
        ideas=ideas,
        small_ideas=max(10, ideas // 10),
        passes=args.passes or (100 if quick else 400),
        warmup_passes=20,
        completions=args.completions or (100 if quick else 300),
        load_rate=args.load_rate,
        seed=args.seed,
        retries=args.retries,
    )
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    fingerprint = harness.src_fingerprint()
    busy = harness.busy_notes()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    postgres = harness.start_postgres("postgresql" not in databases)
    failed = "postgresql" in databases and postgres is None
    if postgres is None:
        databases = [d for d in databases if d != "postgresql"]
    factory, loop_name = event_loop_factory()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            benches = runner.run(run_all(plan, databases, postgres))
    finally:
        version = harness.stop_postgres(postgres)
    info = machine(
        f"{version} ({harness.POSTGRES_SETTINGS})"
        if postgres is not None
        else ("did not start" if failed else "not run")
    )
    harness.note_source_changes(info, fingerprint)
    text = report(benches, plan, info, loop_name, busy)
    print(text)
    full = not quick and args.ideas is None and args.passes is None and args.completions is None
    if harness.wants_readme(args, full_run=full and args.database == "both" and not failed):
        SECTION.write(
            text.rstrip("\n"),
            {
                "plan": asdict(plan),
                "machine": info,
                "rows": [row.summary() for bench in benches for row in bench.rows],
                "plans": {bench.database: bench.plans for bench in benches},
                "notes": {bench.database: bench.notes for bench in benches},
            },
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
