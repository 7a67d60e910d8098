"""The SQL store: one implementation over SQLAlchemy Core for SQLite and PostgreSQL.

Each operation is a synchronous function over one connection in one transaction, run on a worker thread:
SQLite gets a single writer thread (it allows one writer at a time; ``BEGIN IMMEDIATE`` takes the lock up
front) and a reader thread (WAL lets readers run beside the writer); PostgreSQL gets one thread per pooled
connection. The audit chain's head row is locked ``FOR UPDATE`` by every append, so appends from several
processes serialise and the chain stays linear.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from facteur.clock import Clock
from facteur.domain.events import Event, NewEvent, seal
from facteur.domain.ideas import Idea
from facteur.domain.runs import Run, RunStatus
from facteur.domain.tasks import Task
from facteur.errors import NotFound, StoreError, StoreUnavailable
from facteur.store import migrate
from facteur.store.compiled import Codec, Compiled, dialect_for
from facteur.store.port import Ingest, IngestIds, IngestResult, RunUpdate
from facteur.store.rows import event_from_row, idea_from_row, run_from_row, task_from_row
from facteur.store.tables import deliveries, event_chain, events, ideas, runs, tasks
from facteur.store.writer import BatchWriter

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        write_threads: int,
        read_threads: int,
        clock: Clock,
    ) -> None:
        self._writer = writer
        self._reader = reader
        #: SQLite's single writer commits in batches; PostgreSQL runs a transaction per pooled connection
        self._batch_writer = BatchWriter(writer, _translate) if writer.dialect.name == "sqlite" else None
        self._write_pool = ThreadPoolExecutor(write_threads, thread_name_prefix="facteur-db-write")
        self._read_pool = (
            self._write_pool
            if reader is writer
            else ThreadPoolExecutor(read_threads, thread_name_prefix="facteur-db-read")
        )
        self._clock = clock
        self._q = _statements(writer.dialect.name)
        self._codec = Codec(writer.dialect.name)

    # --- construction --------------------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, clock: Clock, pool_size: int = 10, timeout: float = 5.0) -> SqlStore:
        sa_url = sqlalchemy_url(url)
        if make_url(sa_url).get_backend_name() == "sqlite":
            return cls._open_sqlite(sa_url, clock=clock, timeout=timeout)
        engine = sa.create_engine(
            sa_url,
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,
            pool_timeout=timeout,
            connect_args={"connect_timeout": max(1, int(timeout))},
        )
        return cls(writer=engine, reader=engine, write_threads=pool_size, read_threads=pool_size, clock=clock)

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
            write_threads=1,
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
        if self._batch_writer is not None:
            self._batch_writer.close()
        self._write_pool.shutdown(wait=True)
        if self._read_pool is not self._write_pool:
            self._read_pool.shutdown(wait=True)
        self._writer.dispose()
        if self._reader is not self._writer:
            self._reader.dispose()

    # --- running operations --------------------------------------------------------------------------------

    async def _run(self, pool: ThreadPoolExecutor, engine: sa.Engine, op: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(pool, functools.partial(self._transaction, engine, op, *args))

    @staticmethod
    def _transaction(engine: sa.Engine, op: Callable[..., T], *args: Any) -> T:
        try:
            with engine.begin() as conn:
                return op(conn, *args)
        except sa_exc.SQLAlchemyError as exc:
            raise _translate(exc) from exc

    async def _write(self, op: Callable[..., T], *args: Any) -> T:
        if self._batch_writer is not None:
            result: T = await asyncio.wrap_future(self._batch_writer.submit(op, *args))
            return result
        return await self._run(self._write_pool, self._writer, op, *args)

    async def _read(self, op: Callable[..., T], *args: Any) -> T:
        return await self._run(self._read_pool, self._reader, op, *args)

    # --- the port ------------------------------------------------------------------------------------------

    async def ping(self) -> None:
        await self._read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())

    async def schema_revision(self) -> str | None:
        return await self._read(migrate.current_revision)

    async def find_delivery(self, source: str, delivery_id: str) -> Mapping[str, Any] | None:
        return await self._read(_find_delivery, source, delivery_id)

    async def ingest(self, ingest: Ingest) -> IngestResult:
        return await self._write(self._ingest, ingest)

    async def get_idea(self, idea_id: uuid.UUID) -> Idea:
        return idea_from_row(await self._read(_get_one, ideas, idea_id, "idea"))

    async def get_task(self, task_id: uuid.UUID) -> Task:
        return task_from_row(await self._read(_get_one, tasks, task_id, "task"))

    async def get_run(self, run_id: uuid.UUID) -> Run:
        return run_from_row(await self._read(_get_one, runs, run_id, "run"))

    async def list_runs(
        self, *, statuses: Collection[RunStatus] = (), dispatched_only: bool = False, limit: int = 100
    ) -> list[Run]:
        query = sa.select(runs).order_by(runs.c.created_at, runs.c.id).limit(limit)
        if statuses:
            query = query.where(runs.c.status.in_([s.value for s in statuses]))
        if dispatched_only:
            query = query.where(runs.c.executor.is_not(None))
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [run_from_row(row) for row in rows]

    async def run_payload(self, run_id: uuid.UUID) -> tuple[bytes, bytes]:
        row = await self._read(_get_one, runs, run_id, "run")
        return bytes(row.event_body), bytes(row.raw_event)

    async def update_run(self, run_id: uuid.UUID, update: RunUpdate, event: NewEvent | None) -> Run | None:
        return await self._write(self._update_run, run_id, update, event)

    async def append_event(self, event: NewEvent) -> Event:
        return await self._write(self._append_event, event)

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

    # --- transactions (run on a worker thread) -------------------------------------------------------------

    def _ingest(self, conn: sa.Connection, ingest: Ingest) -> IngestResult:
        q, c = self._q, self._codec
        cursor = _cursor(conn)
        now = c.timestamp(ingest.received_at)
        source, delivery_id = ingest.source, ingest.delivery_id
        cursor.execute(
            q.claim_delivery.sql, {"source": source, "delivery_id": delivery_id, "received_at": now}
        )
        if cursor.fetchone() is None:
            response = _find_delivery(conn, source, delivery_id)
            if response is None:  # pragma: no cover - the claimant commits its response with the claim
                raise StoreError(f"delivery {delivery_id} is recorded without a response")
            return IngestResult(None, response, duplicate=True)

        draft = ingest.idea
        cursor.execute(
            q.insert_idea.sql,
            {
                "id": c.uuid(draft.id),
                "source": draft.source.value,
                "source_ref": draft.source_ref,
                "repository": draft.repository,
                "title": draft.title,
                "spec": c.json(dict(draft.spec)),
                "priority": draft.priority,
                "state": draft.state.value,
                "paused": c.boolean(False),
                "initiator": draft.initiator,
                "created_at": now,
                "updated_at": now,
            },
        )
        row = cursor.fetchone()
        idea_created = row is not None
        if row is None:
            cursor.execute(
                q.find_idea.sql, {"b_source": draft.source.value, "b_source_ref": draft.source_ref}
            )
            row = cursor.fetchone()
        idea_id = c.uuid_out(row[0])

        task = ingest.task
        cursor.execute(
            q.insert_task.sql,
            {
                "id": c.uuid(task.id),
                "idea_id": c.uuid(idea_id),
                "key": task.key,
                "title": task.title,
                "stage": task.stage.value,
                "state": task.state.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            },
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(
                q.touch_task.sql,
                {
                    "b_idea_id": c.uuid(idea_id),
                    "b_key": task.key,
                    "state": task.state.value,
                    "updated_at": now,
                },
            )
            row = cursor.fetchone()
        task_id = c.uuid_out(row[0])
        assert idea_id is not None
        assert task_id is not None

        run = ingest.run
        cursor.execute(
            q.insert_run.sql,
            {
                "id": c.uuid(run.id),
                "idea_id": c.uuid(idea_id),
                "task_id": c.uuid(task_id),
                "stage": run.stage.value,
                "delivery_id": run.delivery_id,
                "status": run.status.value,
                "executor": run.executor,
                "workflow_name": run.workflow_name,
                "namespace": run.namespace,
                "event_body": run.event_body,
                "raw_event": run.raw_event,
                "created_at": now,
            },
        )
        ids = IngestIds(idea_id=idea_id, task_id=task_id, run_id=run.id, idea_created=idea_created)
        effects = ingest.effects(ids)
        cursor.execute(
            q.answer_delivery.sql,
            {"b_source": source, "b_delivery_id": delivery_id, "response": c.json(dict(effects.response))},
        )
        self._append_events(conn, effects.events, ingest.received_at)
        return IngestResult(ids, effects.response, duplicate=False)

    def _update_run(
        self, conn: sa.Connection, run_id: uuid.UUID, update: RunUpdate, event: NewEvent | None
    ) -> Run | None:
        c = self._codec
        values: dict[str, Any] = {"status": update.status.value}
        for name in ("workflow_name", "namespace", "detail"):
            value = getattr(update, name)
            if value is not None:
                values[name] = value
        for name in ("submitted_at", "finished_at"):
            value = getattr(update, name)
            if value is not None:
                values[name] = c.timestamp(value)
        expected = [s.value for s in update.expected]
        statement = self._q.update_run(tuple(sorted(values)), len(expected))
        values["b_id"] = c.uuid(run_id)
        values.update((f"b_expected_{n}", status) for n, status in enumerate(expected))
        cursor = _cursor(conn)
        cursor.execute(statement.sql, values)
        row = cursor.fetchone()
        if row is None:
            _get_one(conn, runs, run_id, "run")  # raises NotFound for an unknown run
            return None
        if event is not None:
            self._append_events(conn, [event])
        return self._run_from_values(row)

    def _run_from_values(self, row: Sequence[Any]) -> Run:
        c = self._codec
        values = dict(zip(runs.c.keys(), row, strict=True))
        for name in ("id", "idea_id", "task_id"):
            values[name] = c.uuid_out(values[name])
        for name in ("created_at", "submitted_at", "finished_at"):
            values[name] = c.timestamp_out(values[name])
        return run_from_row(SimpleNamespace(**values))

    def _append_event(self, conn: sa.Connection, new: NewEvent) -> Event:
        return self._append_events(conn, [new])[0]

    def _append_events(self, conn: sa.Connection, new: list[NewEvent], at: Any = None) -> list[Event]:
        """Seal and insert events after the chain's head, which stays locked until commit."""
        if not new:
            return []
        q, c = self._q, self._codec
        cursor = _cursor(conn)
        cursor.execute(q.lock_chain_head.sql, q.lock_chain_head.defaults)
        seq, prev_hash = cursor.fetchone()
        created_at = at or self._clock.now()
        sealed: list[Event] = []
        for event in new:
            seq += 1
            sealed.append(seal(event, seq=seq, prev_hash=prev_hash, created_at=created_at))
            prev_hash = sealed[-1].hash
        cursor.executemany(
            q.insert_event.sql,
            [
                {
                    "seq": e.seq,
                    "kind": e.kind,
                    "actor": e.actor,
                    "idea_id": c.uuid(e.idea_id),
                    "task_id": c.uuid(e.task_id),
                    "run_id": c.uuid(e.run_id),
                    "payload": c.json(e.payload),
                    "created_at": c.timestamp(e.created_at),
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }
                for e in sealed
            ],
        )
        cursor.execute(q.move_chain_head.sql, q.move_chain_head.params({"seq": seq, "hash": prev_hash}))
        return sealed


def _cursor(conn: sa.Connection) -> Any:
    """The driver's cursor, inside the transaction SQLAlchemy began."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


class _Statements:
    """The write path's statements, compiled once per dialect (see :mod:`facteur.store.compiled`)."""

    def __init__(self, name: str) -> None:
        dialect = dialect_for(name)
        insert: Any = postgresql.insert if name == "postgresql" else sqlite.insert

        def compiled(statement: sa.ClauseElement, columns: Sequence[str] = ()) -> Compiled:
            return Compiled(statement, dialect, columns)

        self._dialect = dialect
        self.claim_delivery = compiled(
            insert(deliveries).on_conflict_do_nothing().returning(deliveries.c.delivery_id),
            ["source", "delivery_id", "received_at"],
        )
        self.find_delivery = compiled(
            sa.select(deliveries.c.response).where(
                deliveries.c.source == sa.bindparam("b_source"),
                deliveries.c.delivery_id == sa.bindparam("b_delivery_id"),
            )
        )
        self.answer_delivery = compiled(
            sa.update(deliveries).where(
                deliveries.c.source == sa.bindparam("b_source"),
                deliveries.c.delivery_id == sa.bindparam("b_delivery_id"),
            ),
            ["response"],
        )
        self.insert_idea = compiled(
            insert(ideas).on_conflict_do_nothing().returning(ideas.c.id), list(ideas.c.keys())
        )
        self.find_idea = compiled(
            sa.select(ideas.c.id).where(
                ideas.c.source == sa.bindparam("b_source"), ideas.c.source_ref == sa.bindparam("b_source_ref")
            )
        )
        self.insert_task = compiled(
            insert(tasks).on_conflict_do_nothing().returning(tasks.c.id), list(tasks.c.keys())
        )
        self.touch_task = compiled(
            sa.update(tasks)
            .where(tasks.c.idea_id == sa.bindparam("b_idea_id"), tasks.c.key == sa.bindparam("b_key"))
            .returning(tasks.c.id),
            ["state", "updated_at"],
        )
        self.insert_run = compiled(
            sa.insert(runs),
            [
                "id",
                "idea_id",
                "task_id",
                "stage",
                "delivery_id",
                "status",
                "executor",
                "workflow_name",
                "namespace",
                "event_body",
                "raw_event",
                "created_at",
            ],
        )
        self.lock_chain_head = compiled(
            sa.select(event_chain.c.seq, event_chain.c.hash).where(event_chain.c.id == 1).with_for_update()
        )
        self.insert_event = compiled(sa.insert(events), list(events.c.keys()))
        self.move_chain_head = compiled(sa.update(event_chain).where(event_chain.c.id == 1), ["seq", "hash"])
        self._update_run: dict[tuple[tuple[str, ...], int], Compiled] = {}

    def update_run(self, columns: tuple[str, ...], expected: int) -> Compiled:
        """``UPDATE runs SET <columns> WHERE id = :b_id [AND status IN (<expected> values)] RETURNING *``."""
        key = (columns, expected)
        statement = self._update_run.get(key)
        if statement is None:
            where = [runs.c.id == sa.bindparam("b_id")]
            if expected:
                where.append(runs.c.status.in_([sa.bindparam(f"b_expected_{n}") for n in range(expected)]))
            statement = Compiled(sa.update(runs).where(*where).returning(*runs.c), self._dialect, columns)
            self._update_run[key] = statement
        return statement


_STATEMENTS: dict[str, _Statements] = {}


def _statements(dialect: str) -> _Statements:
    if dialect not in _STATEMENTS:
        _STATEMENTS[dialect] = _Statements(dialect)
    return _STATEMENTS[dialect]


def _find_delivery(conn: sa.Connection, source: str, delivery_id: str) -> Mapping[str, Any] | None:
    statement = _statements(conn.dialect.name).find_delivery
    cursor = _cursor(conn)
    cursor.execute(statement.sql, {"b_source": source, "b_delivery_id": delivery_id})
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    response: Mapping[str, Any] = json.loads(row[0]) if isinstance(row[0], str | bytes) else row[0]
    return response


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
