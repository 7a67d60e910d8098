"""The SQL store: one implementation over SQLAlchemy Core for SQLite and PostgreSQL.

Writes go through one writer thread with group commit (:mod:`facteur.store.writer`): the operations queued
while a batch runs form the next batch, one transaction for all of them, with ingests and run updates run
in set form (:mod:`facteur.store.writes`). Reads run on a small thread pool beside it (SQLite: one reader,
which WAL lets run beside the writer; PostgreSQL: the rest of the pool). The audit chain's head row is
locked ``FOR UPDATE`` by every append (once per batch), so appends from several processes serialise and
the chain stays linear.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.engine import make_url

from facteur.bus.port import Message
from facteur.clock import Clock
from facteur.domain.events import Event, NewEvent
from facteur.domain.ideas import Idea, IdeaSource
from facteur.domain.runs import Run, RunStatus
from facteur.domain.tasks import Task
from facteur.errors import NotFound, StoreError, StoreUnavailable
from facteur.store import migrate
from facteur.store.orchestration import (
    Orchestration,
    read_active,
    read_detail,
    read_ideas_to_plan,
    read_plans,
    read_unsettled,
)
from facteur.store.port import (
    ActiveRuns,
    ClaimRequest,
    ClaimResult,
    Delivery,
    DeliveryResult,
    IdeaChange,
    IdeaCreation,
    IdeaDetail,
    IdeaFilter,
    Ingest,
    IngestResult,
    OutboxBacklog,
    OutboxEntry,
    PlanVersion,
    ReportResult,
    RunReport,
    RunUpdate,
)
from facteur.store.rows import event_from_row, idea_from_row, run_from_row, task_from_row
from facteur.store.tables import event_chain, events, ideas, runs, tasks
from facteur.store.writer import BatchWriter, SetOperation
from facteur.store.writes import ChainHooks, Writes, find_delivery

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: PostgreSQL: seconds without a write after which the writer checks its connection before the next batch
WRITER_PING_AFTER_IDLE_SECONDS = 1.0


def sqlalchemy_url(url: str) -> str:
    """Pick the driver: ``postgresql://`` and ``postgres://`` use psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in {"postgres", "postgresql"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


class SqlStore:
    def __init__(
        self,
        *,
        writer: sa.Engine,
        reader: sa.Engine,
        read_threads: int,
        clock: Clock,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._writes = Writes(writer.dialect.name, clock)
        self._ingest = SetOperation(self._writes.ingest, self._writes.ingest_many)
        self._record = SetOperation(self._writes.record, self._writes.record_many)
        self._update_run = SetOperation(self._writes.update_run, self._writes.update_run_many)
        self._report_run = self._writes.report_run
        self._create_idea = self._writes.create_idea
        self._enqueue = SetOperation(self._writes.enqueue_now, self._writes.enqueue_many)
        self._append_event = self._writes.append_event
        self._orchestration = Orchestration(
            now=clock.now,
            append=self._writes.append_events,
            enqueue=self._writes.enqueue,
            update_runs=self._writes.update_run_many,
        )
        self._change_idea = self._orchestration.change_idea
        self._claim_tasks = self._orchestration.claim_tasks
        #: every write goes through one writer thread that commits in batches (group commit)
        self._batch_writer = BatchWriter(
            writer,
            _translate,
            hooks=ChainHooks(
                self._writes,
                [
                    self._ingest,
                    self._record,
                    self._update_run,
                    self._report_run,
                    self._create_idea,
                    self._change_idea,
                    self._claim_tasks,
                    self._append_event,
                ],
            ),
            ping_after_idle=None if writer.dialect.name == "sqlite" else WRITER_PING_AFTER_IDLE_SECONDS,
            closed=lambda: StoreUnavailable("the store is closed"),
        )
        self._read_pool = ThreadPoolExecutor(read_threads, thread_name_prefix="facteur-db-read")
        self._clock = clock
        self._outbox_listener: Callable[[], None] | None = None

    # --- construction --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, clock: Clock, pool_size: int = 10, timeout: float = 5.0) -> SqlStore:
        sa_url = sqlalchemy_url(url)
        if make_url(sa_url).get_backend_name() == "sqlite":
            return cls._open_sqlite(sa_url, clock=clock, timeout=timeout)

        def engine(size: int, *, pre_ping: bool, server_options: str = "", **options: Any) -> sa.Engine:
            connect_args: dict[str, Any] = {"connect_timeout": max(1, int(timeout))}
            if server_options:
                connect_args["options"] = server_options
            return sa.create_engine(
                sa_url,
                pool_size=size,
                max_overflow=0,
                pool_pre_ping=pre_ping,
                pool_timeout=timeout,
                connect_args=connect_args,
                **options,
            )

        # the batch writer has a connection of its own, checked after idle pauses rather than per batch
        readers = max(1, pool_size - 1)
        return cls(
            # every write waits behind the one before it: a lock held elsewhere (another process, an
            # operator's session) must fail the batch in bounded time rather than stall all writes
            writer=engine(1, pre_ping=False, server_options=f"-c lock_timeout={int(timeout * 1000)}"),
            # reads are single statements: autocommit spares each a BEGIN and a COMMIT round trip
            reader=engine(readers, pre_ping=True, isolation_level="AUTOCOMMIT"),
            read_threads=readers,
            clock=clock,
        )

    @classmethod
    def _open_sqlite(cls, sa_url: str, *, clock: Clock, timeout: float) -> SqlStore:
        database = make_url(sa_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)

        def engine(begin: str) -> sa.Engine:
            created = sa.create_engine(
                sa_url,
                poolclass=sa_pool.QueuePool,
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False, "timeout": timeout},
            )

            @sa.event.listens_for(created, "connect")
            def _on_connect(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
                cursor.close()

            @sa.event.listens_for(created, "begin")
            def _on_begin(connection: sa.Connection) -> None:
                connection.exec_driver_sql(begin)

            return created

        return cls(
            writer=engine("BEGIN IMMEDIATE"),
            reader=engine("BEGIN"),
            read_threads=1,
            clock=clock,
        )

    def migrate(self) -> tuple[str | None, str]:
        """Apply pending migrations (synchronously; call before serving)."""
        try:
            return migrate.upgrade(self._writer)
        except sa_exc.SQLAlchemyError as exc:
            raise _translate(exc) from exc

    async def close(self) -> None:
        await asyncio.to_thread(self.dispose)

    def dispose(self) -> None:
        """Close the worker threads and connections (the synchronous form of :meth:`close`)."""
        self._batch_writer.close()
        self._read_pool.shutdown(wait=True)
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # --- running operations --------------------------------------------------------------------------------

    async def _read(self, op: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._read_pool, functools.partial(self._transaction, self._reader, op, *args)
        )

    @staticmethod
    def _transaction(engine: sa.Engine, op: Callable[..., T], *args: Any) -> T:
        try:
            with engine.begin() as conn:
                return op(conn, *args)
        except sa_exc.SQLAlchemyError as exc:
            raise _translate(exc) from exc

    async def _write(self, op: Callable[..., T] | SetOperation, *args: Any) -> T:
        result: T = await self._batch_writer.submit_async(op, *args)
        return result

    # --- the port ------------------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())

    async def schema_revision(self) -> str | None:
        return await self._read(migrate.current_revision)

    async def find_delivery(self, source: str, delivery_id: str) -> Mapping[str, Any] | None:
        return await self._read(find_delivery, source, delivery_id)

    async def ingest(self, ingest: Ingest) -> IngestResult:
        result: IngestResult = await self._write(self._ingest, ingest)
        if result.messages:
            self._outbox_written()
        return result

    async def record_delivery(self, delivery: Delivery) -> DeliveryResult:
        result: DeliveryResult = await self._write(self._record, delivery)
        if result.messages:
            self._outbox_written()
        return result

    async def get_idea(self, idea_id: uuid.UUID) -> Idea:
        return idea_from_row(await self._read(_get_one, ideas, idea_id, "idea"))

    async def get_task(self, task_id: uuid.UUID) -> Task:
        return task_from_row(await self._read(_get_one, tasks, task_id, "task"))

    async def get_run(self, run_id: uuid.UUID) -> Run:
        return run_from_row(await self._read(_get_one, runs, run_id, "run"))

    async def list_runs(
        self,
        *,
        statuses: Collection[RunStatus] = (),
        dispatched_only: bool = False,
        unclaimed_only: bool = False,
        finished_after: datetime | None = None,
        limit: int = 100,
    ) -> list[Run]:
        query = sa.select(runs).order_by(runs.c.created_at, runs.c.id).limit(limit)
        if statuses:
            query = query.where(runs.c.status.in_([s.value for s in statuses]))
        if dispatched_only:
            query = query.where(runs.c.executor.is_not(None))
        if finished_after is not None:
            query = query.where(runs.c.finished_at >= finished_after)
        if unclaimed_only:
            claimed = sa.select(tasks.c.id).where(
                tasks.c.id == runs.c.task_id, tasks.c.claimed_by.is_not(None)
            )
            query = query.where(~claimed.exists())
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [run_from_row(row) for row in rows]

    async def run_payload(self, run_id: uuid.UUID) -> tuple[bytes, bytes]:
        row = await self._read(_get_one, runs, run_id, "run")
        return bytes(row.event_body), bytes(row.raw_event)

    async def update_run(
        self,
        run_id: uuid.UUID,
        update: RunUpdate,
        event: NewEvent | None,
        messages: Sequence[Message] = (),
    ) -> Run | None:
        updated: Run | None = await self._write(self._update_run, run_id, update, event, tuple(messages))
        if messages and updated is not None:
            self._outbox_written()
        return updated

    # --- the outbox and leases -----------------------------------------------------------------------------

    async def create_idea(self, creation: IdeaCreation) -> Idea:
        idea: Idea = await self._write(self._create_idea, creation)
        if creation.messages:
            self._outbox_written()
        return idea

    async def find_idea(self, source: IdeaSource, source_ref: str) -> Idea | None:
        def read(conn: sa.Connection) -> Idea | None:
            row = conn.execute(
                sa.select(ideas).where(ideas.c.source == source.value, ideas.c.source_ref == source_ref)
            ).first()
            return None if row is None else idea_from_row(row)

        return await self._read(read)

    async def idea_detail(self, idea_id: uuid.UUID) -> IdeaDetail:
        return await self._read(read_detail, idea_id)

    async def change_idea(self, idea_id: uuid.UUID, decide: Callable[[IdeaDetail], IdeaChange]) -> IdeaChange:
        change: IdeaChange = await self._write(self._change_idea, idea_id, decide)
        if change.messages:
            self._outbox_written()
        return change

    async def claim_tasks(self, request: ClaimRequest) -> ClaimResult:
        result: ClaimResult = await self._write(self._claim_tasks, request)
        if result.claimed:
            self._outbox_written()
        return result

    async def active_runs(self) -> ActiveRuns:
        return await self._read(read_active)

    async def stale_claims(self, holder: str, *, now: datetime, until: datetime, limit: int) -> list[Run]:
        taken: list[Run] = await self._write(self._orchestration.stale_claims, holder, now, until, limit)
        return taken

    async def unsettled_runs(self, limit: int) -> list[Run]:
        return await self._read(read_unsettled, limit)

    async def ideas_to_plan(self, limit: int) -> list[uuid.UUID]:
        return await self._read(read_ideas_to_plan, limit)

    async def list_ideas(self, query: IdeaFilter) -> list[Idea]:
        def read(conn: sa.Connection) -> list[Idea]:
            statement = (
                sa.select(ideas).order_by(ideas.c.created_at.desc(), ideas.c.id.desc()).limit(query.limit)
            )
            if query.states:
                statement = statement.where(ideas.c.state.in_([s.value for s in query.states]))
            if query.repository is not None:
                statement = statement.where(ideas.c.repository == query.repository)
            if query.source is not None:
                statement = statement.where(ideas.c.source == query.source.value)
            if query.before is not None:
                at, last = query.before
                statement = statement.where(
                    sa.or_(ideas.c.created_at < at, sa.and_(ideas.c.created_at == at, ideas.c.id < last))
                )
            return [idea_from_row(r) for r in conn.execute(statement)]

        return await self._read(read)

    async def list_plans(self, idea_id: uuid.UUID) -> list[PlanVersion]:
        return await self._read(read_plans, idea_id)

    async def report_run(self, report: RunReport) -> ReportResult:
        result: ReportResult = await self._write(self._report_run, report)
        if result.messages:
            self._outbox_written()
        return result

    def on_outbox_write(self, listener: Callable[[], None] | None) -> None:
        """Call ``listener`` (on the event loop) after a write that put messages in the outbox."""
        self._outbox_listener = listener

    def _outbox_written(self) -> None:
        if self._outbox_listener is not None:
            self._outbox_listener()

    async def enqueue(self, messages: Sequence[Message]) -> None:
        if messages:
            await self._write(self._enqueue, tuple(messages))
            self._outbox_written()

    async def pending_outbox(self, limit: int, *, after_id: int = 0) -> list[OutboxEntry]:
        return await self._read(self._writes.pending_outbox, limit, after_id)

    async def mark_published(self, entry_ids: Sequence[int], at: datetime) -> None:
        if entry_ids:
            await self._write(self._writes.mark_published, tuple(entry_ids), at)

    async def outbox_backlog(self) -> OutboxBacklog:
        return await self._read(self._writes.outbox_backlog)

    async def prune_outbox(self, published_before: datetime) -> int:
        pruned: int = await self._write(self._writes.prune_outbox, published_before)
        return pruned

    async def acquire_lease(self, name: str, holder: str, *, now: datetime, until: datetime) -> bool:
        acquired: bool = await self._write(self._writes.acquire_lease, name, holder, now, until)
        return acquired

    async def append_event(self, event: NewEvent) -> Event:
        return await self._write(self._append_event, event)

    async def chain_head(self) -> tuple[int, str]:
        def head(conn: sa.Connection) -> tuple[int, str]:
            row = conn.execute(
                sa.select(event_chain.c.seq, event_chain.c.hash).where(event_chain.c.id == 1)
            ).one()
            return int(row[0]), str(row[1])

        return await self._read(head)

    async def list_events(
        self,
        *,
        idea_id: uuid.UUID | None = None,
        run_id: uuid.UUID | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[Event]:
        query = sa.select(events).where(events.c.seq > after_seq).order_by(events.c.seq).limit(limit)
        if idea_id is not None:
            query = query.where(events.c.idea_id == idea_id)
        if run_id is not None:
            query = query.where(events.c.run_id == run_id)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [event_from_row(row) for row in rows]


_GET_BY_ID: dict[str, sa.Select[Any]] = {}


def _get_one(conn: sa.Connection, table: sa.Table, record_id: uuid.UUID, noun: str) -> Any:
    statement = _GET_BY_ID.get(table.name)
    if statement is None:
        statement = _GET_BY_ID[table.name] = sa.select(table).where(table.c.id == sa.bindparam("b_id"))
    row = conn.execute(statement, {"b_id": record_id}).first()
    if row is None:
        raise NotFound(f"{noun} {record_id} does not exist")
    return row


def _translate(exc: sa_exc.SQLAlchemyError) -> StoreError:
    if isinstance(exc, sa_exc.TimeoutError):
        return StoreUnavailable("the database did not answer in time (all connections busy)")
    if isinstance(exc, sa_exc.DBAPIError):
        original = exc.orig
        text = str(original).strip().splitlines()[0] if original is not None else str(exc)
        if exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return StoreUnavailable(f"database unavailable: {text}")
        if isinstance(exc, sa_exc.ProgrammingError) and "no such table" in text:
            return StoreUnavailable(f"database schema missing: {text} (run `facteur migrate`)")
        return StoreError(f"database error: {text}")
    return StoreError(f"database error: {exc}")
