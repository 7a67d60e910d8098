"""Group commit: one writer thread runs the queued operations of a batch in one transaction and commits
once for the whole batch.

Most of a small write transaction's cost is fixed: the commit (a WAL write on SQLite, an fsync'd commit on
PostgreSQL), the ``BEGIN``, the thread wake-ups and — on PostgreSQL — one network round trip per
statement. Batching pays those once per batch, and operations that know how to run as a set
(:class:`SetOperation`: one statement per table for the whole group, sent together) pay the round trips
once per group instead of once per operation.

A batch first runs optimistically: every group straight after the other, then the ``before_commit`` hook
(the store appends the batch's audit events there), then the commit. When anything before the commit
fails, that transaction is rolled back and the batch runs again carefully: each operation in its own
savepoint, so the failing one is the only one that fails. A batch whose connection was lost (or that lost
a deadlock) before the commit is first tried once more on a new connection. A failing COMMIT is never
retried — the server may have committed — and every operation of the batch gets that failure. Results are
delivered only after the commit, so nothing is answered before it is durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

logger = logging.getLogger(__name__)

Operation = Callable[..., Any]
Translate = Callable[[sa_exc.SQLAlchemyError], BaseException]

_STOP = object()


@dataclass(frozen=True, slots=True)
class SetOperation:
    """An operation with a set form: ``many(conn, [args, ...])`` does what ``one(conn, *args)`` does for
    each ``args``, in one go, and returns the results in order (or raises, and then each runs alone)."""

    one: Operation
    many: Callable[[sa.Connection, list[tuple[Any, ...]]], Sequence[Any]]


#: where an operation's outcome goes: a thread's future, or an asyncio future answered on its own loop
Reply = Future[Any] | asyncio.Future[Any]
_Item = tuple[Reply, Operation | SetOperation, tuple[Any, ...]]
_Outcome = tuple[Reply, Any, BaseException | None]


class BatchHooks:
    """What the store does around a batch's operations."""

    def begin(self, conn: sa.Connection, ops: Sequence[Operation | SetOperation], *, collect: bool) -> None:
        """Called once the batch's transaction began, with the batch's operations; ``collect`` in the
        optimistic pass only."""

    def before_commit(self, conn: sa.Connection) -> None:
        """Called after the optimistic pass's last operation, before the commit."""

    def discard(self, conn: sa.Connection) -> None:
        """Called when the optimistic pass failed, to drop what :meth:`begin` set up."""


class _CommitFailed(Exception):
    """The COMMIT itself failed: the transaction may or may not be stored."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class BatchWriter:
    def __init__(
        self,
        engine: sa.Engine,
        translate: Translate,
        *,
        max_batch: int = 256,
        name: str = "facteur-db-writer",
        hooks: BatchHooks | None = None,
        ping_after_idle: float | None = None,
        closed: Callable[[], BaseException] = lambda: RuntimeError("the writer is closed"),
    ) -> None:
        """``ping_after_idle``: before a batch that follows more than that many idle seconds, check the
        connection (and replace it when the server dropped it): the engine's pre-ping, paid only after a
        pause instead of once per batch."""
        self._engine = engine
        self._translate = translate
        self._max_batch = max_batch
        self._hooks = hooks or BatchHooks()
        self._ping_after_idle = ping_after_idle
        self._idle_since = time.monotonic()
        self._closed = closed
        self._stopped = False
        #: the driver's exceptions (the store runs statements on the driver's cursor)
        self._dbapi_error: type[BaseException] = engine.dialect.loaded_dbapi.Error
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Operation | SetOperation, *args: Any) -> Future[Any]:
        """Queue an operation; its outcome arrives on the returned (thread) future."""
        future: Future[Any] = Future()
        self._put((future, op, args))
        return future

    def submit_async(self, op: Operation | SetOperation, *args: Any) -> asyncio.Future[Any]:
        """Queue an operation from a running event loop; the outcomes of a batch reach each loop with
        one wake-up for the whole batch."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._put((future, op, args))
        return future

    def _put(self, item: _Item) -> None:
        if self._stopped:
            raise self._closed()
        self._queue.put(item)

    def close(self) -> None:
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join()
        # what was queued after the stop marker (a race with close) is answered, never left waiting
        leftover: list[_Outcome] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP and _still_wanted(item[0]):
                leftover.append((item[0], None, self._closed()))
        _settle(leftover)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            live = [item for item in batch if _still_wanted(item[0])]
            if not live:
                continue
            self._ping_if_idle()
            try:
                outcomes = self._write(live)
            # a bug (or a BaseException from an operation) must not strand the batch's callers
            except BaseException as exc:
                logger.exception("write batch failed unexpectedly: operations=%s", len(live))
                _settle([(reply, None, exc) for reply, _op, _args in live])
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise
            else:
                _settle(outcomes)
            self._idle_since = time.monotonic()

    def _write(self, batch: list[_Item]) -> list[_Outcome]:
        for attempt in (1, 2):
            try:
                return self._transaction(
                    lambda conn: self._optimistic(conn, batch), batch=batch, collect=True
                )
            except _CommitFailed as failed:
                self._forget_connection_if_lost(failed.cause)
                failure = self._failure(failed.cause)
                logger.warning("write batch commit failed: operations=%s error=%s", len(batch), failure)
                return [(reply, None, failure) for reply, _op, _args in batch]
            # whatever failed is found by the careful pass, which gives each operation its own outcome
            except Exception as exc:  # noqa: BLE001
                lost = self._forget_connection_if_lost(exc)
                logger.debug("optimistic write batch failed: operations=%s error=%s", len(batch), exc)
                if lost and attempt == 1:
                    continue  # nothing was stored: try once more on a new connection
                if len(batch) == 1:  # the careful pass would fail the same way
                    return [(batch[0][0], None, self._failure(exc))]
                return self._careful(batch)
        raise AssertionError("not reached")  # pragma: no cover

    def _transaction(
        self, body: Callable[[sa.Connection], list[_Outcome]], *, batch: list[_Item], collect: bool
    ) -> list[_Outcome]:
        """Run ``body`` in a transaction; a failing COMMIT raises :class:`_CommitFailed`."""
        with self._engine.connect() as conn:
            transaction = conn.begin()
            try:
                self._hooks.begin(conn, [op for _reply, op, _args in batch], collect=collect)
                outcomes = body(conn)
            except BaseException:
                if collect:
                    self._hooks.discard(conn)
                with contextlib.suppress(sa_exc.SQLAlchemyError, self._dbapi_error):
                    transaction.rollback()
                raise
            try:
                transaction.commit()
            except (sa_exc.SQLAlchemyError, self._dbapi_error) as exc:
                raise _CommitFailed(exc) from exc
            return outcomes

    def _as_sqlalchemy(self, exc: BaseException) -> BaseException:
        """The driver's own exceptions as SQLAlchemy's, so that the store translates both alike."""
        if isinstance(exc, self._dbapi_error) and not isinstance(exc, sa_exc.SQLAlchemyError):
            try:
                lost = bool(self._engine.dialect.is_disconnect(exc, None, None))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - a dialect that needs the connection to tell
                lost = False
            wrapped: BaseException = sa_exc.DBAPIError.instance(
                None,
                None,
                exc,
                self._dbapi_error,  # type: ignore[arg-type]
                connection_invalidated=lost,
            )
            return wrapped
        return exc

    def _forget_connection_if_lost(self, exc: BaseException) -> bool:
        """After a connection-level failure (or a deadlock), drop the pooled connection so that the next
        transaction opens a new one — the driver does not always report a lost connection in a way the pool
        recognises; True when that happened."""
        exc = self._as_sqlalchemy(exc)
        if isinstance(exc, sa_exc.DBAPIError) and (
            exc.connection_invalidated or isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        ):
            self._engine.dispose()
            return True
        return False

    def _ping_if_idle(self) -> None:
        if self._ping_after_idle is None or time.monotonic() - self._idle_since < self._ping_after_idle:
            return
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa_exc.SQLAlchemyError as exc:
            # a dropped connection is invalidated by SQLAlchemy and replaced at the next checkout; if the
            # server is really down the batch itself fails and says so
            logger.debug("writer connection check failed: %s", exc)

    def _optimistic(self, conn: sa.Connection, batch: list[_Item]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        for group in _groups(batch):
            op = group[0][1]
            if isinstance(op, SetOperation) and len(group) > 1:
                results = op.many(conn, [args for _reply, _op, args in group])
                outcomes.extend(
                    (reply, result, None) for (reply, _op, _args), result in zip(group, results, strict=True)
                )
            else:
                for reply, op, args in group:
                    one = op.one if isinstance(op, SetOperation) else op
                    outcomes.append((reply, one(conn, *args), None))
        self._hooks.before_commit(conn)
        return outcomes

    def _failure(self, exc: BaseException) -> BaseException:
        exc = self._as_sqlalchemy(exc)
        return self._translate(exc) if isinstance(exc, sa_exc.SQLAlchemyError) else exc

    def _careful(self, batch: list[_Item]) -> list[_Outcome]:
        """Each operation alone in its own savepoint, all in one transaction."""

        def body(conn: sa.Connection) -> list[_Outcome]:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            return [self._run_alone(cursor, conn, item) for item in batch]

        try:
            return self._transaction(body, batch=batch, collect=False)
        except _CommitFailed as failed:
            problem: BaseException = failed.cause
        except (sa_exc.SQLAlchemyError, self._dbapi_error) as exc:
            problem = exc  # the BEGIN or a savepoint failed: nothing of the batch is stored
        self._forget_connection_if_lost(problem)
        failure = self._failure(problem)
        logger.warning("write batch failed: operations=%s error=%s", len(batch), failure)
        return [(reply, None, failure) for reply, _op, _args in batch]

    def _run_alone(self, cursor: Any, conn: sa.Connection, item: _Item) -> _Outcome:
        future, op, args = item
        one = op.one if isinstance(op, SetOperation) else op
        cursor.execute("SAVEPOINT facteur_op")
        try:
            result = one(conn, *args)
        # any failure belongs to its caller alone: undo this operation, keep the batch
        except Exception as exc:  # noqa: BLE001
            cursor.execute("ROLLBACK TO SAVEPOINT facteur_op")
            cursor.execute("RELEASE SAVEPOINT facteur_op")
            return (future, None, self._failure(exc))
        cursor.execute("RELEASE SAVEPOINT facteur_op")
        return (future, result, None)


def _groups(batch: list[_Item]) -> list[list[_Item]]:
    """Operations of the same set form together, in order of first appearance; the rest one group each.

    The operations of a batch were submitted concurrently (each caller waits for its own), so any order
    among them is one a caller could have seen.
    """
    groups: list[list[_Item]] = []
    by_op: dict[int, list[_Item]] = {}
    for item in batch:
        op = item[1]
        if isinstance(op, SetOperation):
            group = by_op.get(id(op))
            if group is None:
                group = by_op[id(op)] = []
                groups.append(group)
            group.append(item)
        else:
            groups.append([item])
    return groups


def _still_wanted(reply: Reply) -> bool:
    """False for an operation whose caller cancelled it before it started (it is then skipped)."""
    if isinstance(reply, Future):
        return reply.set_running_or_notify_cancel()
    return not reply.cancelled()


def _settle(outcomes: list[_Outcome]) -> None:
    """Hand each outcome to its caller: thread futures directly, asyncio futures in one callback per
    loop (a wake-up of that loop per batch rather than per operation)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        reply = outcome[0]
        if isinstance(reply, Future):
            _answer(reply, outcome[1], outcome[2])
        else:
            by_loop.setdefault(reply.get_loop(), []).append(outcome)
    for loop, answered in by_loop.items():
        try:
            loop.call_soon_threadsafe(_answer_all, answered)
        except RuntimeError:  # the loop closed while the batch ran: nobody is waiting any more
            logger.debug("write outcomes dropped: their event loop is closed (operations=%s)", len(answered))


def _answer_all(outcomes: list[_Outcome]) -> None:
    for reply, result, problem in outcomes:
        _answer(reply, result, problem)


def _answer(reply: Reply, result: Any, problem: BaseException | None) -> None:
    if reply.done():  # an asyncio caller that gave up waiting
        return
    if problem is None:
        reply.set_result(result)
    else:
        reply.set_exception(problem)
