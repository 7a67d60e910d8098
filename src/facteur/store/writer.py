"""Group commit for SQLite: one writer thread runs queued operations in one transaction, each inside its
own savepoint, and commits once for the whole batch.

SQLite has a single writer, and most of a small transaction's cost is the commit (writing its pages to the
WAL). Batching keeps each operation atomic — a failing operation rolls back to its savepoint and fails
alone — while the commit, the ``BEGIN IMMEDIATE`` and the thread wake-ups are paid once per batch.
Results are delivered only after the batch's commit, so nothing is answered before it is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

logger = logging.getLogger(__name__)

Operation = Callable[..., Any]
Translate = Callable[[sa_exc.SQLAlchemyError], BaseException]

_STOP = object()


class BatchWriter:
    def __init__(self, engine: sa.Engine, translate: Translate, *, max_batch: int = 128) -> None:
        self._engine = engine
        self._translate = translate
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="facteur-db-writer", daemon=True)
        self._thread.start()

    def submit(self, op: Operation, *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
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
            self._execute(batch)

    def _execute(self, batch: list[tuple[Future[Any], Operation, tuple[Any, ...]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with self._engine.begin() as conn:
                cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                for future, op, args in batch:
                    if not future.set_running_or_notify_cancel():
                        continue
                    cursor.execute("SAVEPOINT facteur_op")
                    try:
                        result = op(conn, *args)
                    # any failure belongs to its caller alone: undo this operation, keep the batch
                    except Exception as exc:  # noqa: BLE001
                        cursor.execute("ROLLBACK TO SAVEPOINT facteur_op")
                        cursor.execute("RELEASE SAVEPOINT facteur_op")
                        failed = self._translate(exc) if isinstance(exc, sa_exc.SQLAlchemyError) else exc
                        outcomes.append((future, None, failed))
                    else:
                        cursor.execute("RELEASE SAVEPOINT facteur_op")
                        outcomes.append((future, result, None))
        except sa_exc.SQLAlchemyError as exc:
            # the batch's BEGIN, a savepoint or the COMMIT failed: nothing of it is stored
            failure = self._translate(exc)
            logger.warning("write batch failed: operations=%s error=%s", len(batch), failure)
            for future, _op, _args in batch:
                if future.running() or (not future.done() and future.set_running_or_notify_cancel()):
                    future.set_exception(failure)
            return
        for future, result, problem in outcomes:
            if problem is None:
                future.set_result(result)
            else:
                future.set_exception(problem)
