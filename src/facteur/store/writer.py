"""Group commit: one writer thread runs the queued operations of a batch in one transaction and commits
once for the whole batch.

Most of a small write transaction's cost is fixed: the commit (a WAL write on SQLite, an fsync'd commit on
PostgreSQL), the ``BEGIN``, the thread wake-ups and — on PostgreSQL — one network round trip per
statement. Batching pays those once per batch, and operations that know how to run as a set
(:class:`SetOperation`: one statement per table for the whole group, sent together) pay the round trips
once per group instead of once per operation.

A batch first runs optimistically: every group straight after the other, then the ``before_commit`` hook
(the store appends the batch's audit events there, under one lock of the chain's head), then the commit.
When anything in it fails, that transaction is rolled back and the batch runs again carefully: each
operation in its own savepoint, so the failing one is the only one that fails. Results are delivered only
after the commit, so nothing is answered before it is durable.
"""

from __future__ import annotations

import asyncio
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
    """What the store does around an optimistic batch (the careful pass runs without them)."""

    def begin(self, conn: sa.Connection) -> None:
        """Called after the batch's transaction began."""

    def before_commit(self, conn: sa.Connection) -> None:
        """Called after the batch's last operation, before the commit."""

    def discard(self, conn: sa.Connection) -> None:
        """Called when the optimistic pass failed, to drop what :meth:`begin` set up."""


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
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, op: Operation | SetOperation, *args: Any) -> Future[Any]:
        """Queue an operation; its outcome arrives on the returned (thread) future."""
        future: Future[Any] = Future()
        self._queue.put((future, op, args))
        return future

    def submit_async(self, op: Operation | SetOperation, *args: Any) -> asyncio.Future[Any]:
        """Queue an operation from a running event loop; the outcomes of a batch reach each loop with
        one wake-up for the whole batch."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((future, op, args))
        return future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

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
                outcomes = self._execute_optimistically(live)
                if isinstance(outcomes, BaseException):
                    if len(live) == 1:  # the careful pass would fail the same way
                        outcomes = [(live[0][0], None, self._failure(outcomes))]
                    else:
                        outcomes = self._execute(live)
            # a bug in the writer must not stop it: the batch's callers get the error, later batches run
            except Exception as exc:
                logger.exception("write batch failed unexpectedly: operations=%s", len(live))
                outcomes = [(reply, None, exc) for reply, _op, _args in live]
            _settle(outcomes)
            self._idle_since = time.monotonic()

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

    def _execute_optimistically(self, batch: list[_Item]) -> list[_Outcome] | Exception:
        """Run the batch without savepoints; the failure (and nothing stored) when anything in it failed."""
        outcomes: list[_Outcome] = []
        try:
            with self._engine.begin() as conn:
                self._hooks.begin(conn)
                try:
                    for group in _groups(batch):
                        op = group[0][1]
                        if isinstance(op, SetOperation) and len(group) > 1:
                            results = op.many(conn, [args for _future, _op, args in group])
                            outcomes.extend(
                                (reply, result, None)
                                for (reply, _op, _args), result in zip(group, results, strict=True)
                            )
                        else:
                            for reply, op, args in group:
                                one = op.one if isinstance(op, SetOperation) else op
                                outcomes.append((reply, one(conn, *args), None))
                    self._hooks.before_commit(conn)
                except BaseException:
                    self._hooks.discard(conn)
                    raise
        # whatever failed is found by the careful pass, which gives each operation its own outcome
        except Exception as exc:  # noqa: BLE001
            logger.debug("optimistic write batch failed: operations=%s error=%s", len(batch), exc)
            return exc
        return outcomes

    def _failure(self, exc: BaseException) -> BaseException:
        return self._translate(exc) if isinstance(exc, sa_exc.SQLAlchemyError) else exc

    def _execute(self, batch: list[_Item]) -> list[_Outcome]:
        """The careful pass: each operation alone in its own savepoint, all in one transaction."""
        outcomes: list[_Outcome] = []
        try:
            with self._engine.begin() as conn:
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                outcomes.extend(self._run_alone(cursor, conn, item) for item in batch)
        except sa_exc.SQLAlchemyError as exc:
            # the batch's BEGIN, a savepoint or the COMMIT failed: nothing of it is stored
            failure = self._translate(exc)
            logger.warning("write batch failed: operations=%s error=%s", len(batch), failure)
            return [(reply, None, failure) for reply, _op, _args in batch]
        return outcomes

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
