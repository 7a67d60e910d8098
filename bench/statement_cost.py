"""What one delivery costs inside Facteur's store on SQLite, without HTTP and without a profiler.

Two measurements on a fresh, migrated SQLite database (WAL, synchronous=NORMAL, as ``facteur serve``):

1. one delivery at a time through ``CodexTaskIntake.receive`` (executor ``none``), with the wall time of
   each store call it makes summed by call — how a delivery's time splits between the duplicate check, the
   ingest transaction and the dispatch that follows it;
2. the cost of one statement in the styles available: building a SQLAlchemy Core statement per call (what
   ``facteur.store.sql`` does), executing a statement built once with bind parameters, and the raw
   ``sqlite3`` cursor; plus an empty write transaction through SQLAlchemy and through ``sqlite3``.

Usage: ``python bench/statement_cost.py [--deliveries N]``. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import codex_tasks as bench
import sqlalchemy as sa

from facteur.clock import SystemClock
from facteur.runtime import build_runtime
from facteur.settings import load_settings
from facteur.store.sql import SqlStore
from facteur.store.tables import deliveries, ideas, runs, tasks


async def per_delivery(count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="facteur-cost-") as tmp:
        settings = load_settings(
            None,
            {"FACTEUR_DATABASE__URL": f"sqlite:///{tmp}/f.db", "FACTEUR_EXECUTOR__KIND": "none"},
        )
        runtime = await build_runtime(settings)
        await runtime.start()
        spent: collections.defaultdict[str, float] = collections.defaultdict(float)
        store: Any = runtime.store

        def timed(name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            @functools.wraps(method)
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return await method(*args, **kwargs)
                finally:
                    spent[name] += time.perf_counter() - started

            return wrapper

        for name in ("find_delivery", "ingest", "get_run", "run_payload", "update_run", "append_event"):
            setattr(store, name, timed(name, getattr(store, name)))
        prefix = bench.task_prefix()

        async def deliver(index: int) -> None:
            body = bench.task_body(prefix, f"cost-{index}")
            await runtime.intake.receive(runtime.intake.decode(body, "application/x-protobuf"), body)

        try:
            for index in range(50):
                await deliver(index)
            spent.clear()
            started = time.perf_counter()
            for index in range(50, 50 + count):
                await deliver(index)
            total = time.perf_counter() - started
        finally:
            await runtime.close()
    per = 1000 * total / count
    print(f"one delivery at a time, {count} deliveries: {per:.2f} ms each ({count / total:,.0f}/s)")
    for name, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {1000 * seconds / count:6.3f} ms  {100 * seconds / total:5.1f} %  store.{name}")
    rest = total - sum(spent.values())
    print(f"  {1000 * rest / count:6.3f} ms  {100 * rest / total:5.1f} %  everything else (decode, intake)")


def driver(conn: sa.Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy connection."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def per_statement(repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="facteur-cost-") as tmp:
        store = SqlStore.open(f"sqlite:///{tmp}/f.db", clock=SystemClock())
        store.migrate()
        engine: sa.Engine = store._writer
        now = datetime.now(UTC)
        idea_id, task_id = uuid.uuid4(), uuid.uuid4()
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ideas).values(
                    id=idea_id, source="s", source_ref="r", repository="o/r", title="t", spec={}, priority=0,
                    state="registered", paused=False, initiator="x", created_at=now, updated_at=now,
                )
            )  # fmt: skip
            conn.execute(
                sa.insert(tasks).values(
                    id=task_id, idea_id=idea_id, key="k", title="t", stage="planning", state="ready",
                    attempts=0, created_at=now, updated_at=now,
                )
            )  # fmt: skip
        body = b"x" * 700

        def run_values() -> dict[str, Any]:
            return {
                "id": uuid.uuid4(), "idea_id": idea_id, "task_id": task_id, "stage": "planning",
                "delivery_id": uuid.uuid4().hex, "status": "queued", "executor": "none", "workflow_name": "w",
                "namespace": "n", "event_body": body, "raw_event": body, "created_at": now,
            }  # fmt: skip

        prebuilt_insert = sa.insert(runs)
        prebuilt_select = sa.select(deliveries.c.response).where(
            deliveries.c.source == sa.bindparam("source"),
            deliveries.c.delivery_id == sa.bindparam("delivery"),
        )
        raw_insert = (
            "INSERT INTO runs (id, idea_id, task_id, stage, delivery_id, status, executor, workflow_name, "
            "namespace, event_body, raw_event, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

        def raw_values() -> tuple[Any, ...]:
            v = run_values()
            return (
                v["id"].hex, idea_id.hex, task_id.hex, "planning", v["delivery_id"], "queued", "none", "w",
                "n", body, body, now.replace(tzinfo=None).isoformat(sep=" "),
            )  # fmt: skip

        cases: list[tuple[str, Callable[[sa.Connection], Any]]] = [
            (
                "insert, statement built per call (as facteur.store.sql)",
                lambda c: c.execute(sa.insert(runs).values(**run_values())),
            ),
            (
                "insert, statement built once + bind parameters",
                lambda c: c.execute(prebuilt_insert, run_values()),
            ),
            (
                "insert, raw sqlite3 cursor",
                lambda c: driver(c).execute(raw_insert, raw_values()),
            ),
            (
                "select, statement built per call (as _find_delivery)",
                lambda c: c.execute(
                    sa.select(deliveries.c.response).where(
                        deliveries.c.source == "codex_task", deliveries.c.delivery_id == "missing"
                    )
                ).scalar(),
            ),
            (
                "select, statement built once + bind parameters",
                lambda c: c.execute(
                    prebuilt_select, {"source": "codex_task", "delivery": "missing"}
                ).scalar(),
            ),
            (
                "select, raw sqlite3 cursor",
                lambda c: (
                    driver(c)
                    .execute(
                        "SELECT response FROM deliveries WHERE source = ? AND delivery_id = ?",
                        ("codex_task", "missing"),
                    )
                    .fetchone()
                ),
            ),
        ]
        print(f"one statement on SQLite ({repeat} times each, inside one transaction):")
        for label, case in cases:
            with engine.begin() as conn:
                started = time.perf_counter()
                for _ in range(repeat):
                    case(conn)
                elapsed = time.perf_counter() - started
            print(f"  {1e6 * elapsed / repeat:7.1f} µs  {label}")
        started = time.perf_counter()
        for _ in range(repeat):
            with engine.begin():
                pass
        elapsed = time.perf_counter() - started
        print(f"  {1e6 * elapsed / repeat:7.1f} µs  empty transaction through SQLAlchemy")
        store.dispose()
        raw = sqlite3.connect(f"{tmp}/f.db", isolation_level=None)
        try:
            raw.execute("PRAGMA synchronous=NORMAL")
            started = time.perf_counter()
            for _ in range(repeat):
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("COMMIT")
            elapsed = time.perf_counter() - started
            print(f"  {1e6 * elapsed / repeat:7.1f} µs  empty transaction through sqlite3")
        finally:
            raw.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="Per-delivery and per-statement costs of Facteur's store.")
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3000)
    args = parser.parse_args()
    if not 1 <= args.deliveries <= 100_000 or not 1 <= args.repeat <= 100_000:
        parser.error("counts must be between 1 and 100000")
    asyncio.run(per_delivery(args.deliveries))
    print()
    per_statement(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
