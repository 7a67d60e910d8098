"""Reference servers for bench/codex_tasks.py, served by uvicorn with the options of ``facteur serve``.

* ``ceiling``: a bare Starlette app that answers every ``POST /codex/tasks`` with a small 202 JSON body
  (it reads the body and nothing else) — what one uvicorn worker can do on this machine at all;
* ``sqlite-insert``: a FastAPI handler that reads the body and does ONE insert of it into a SQLite table
  (WAL, ``synchronous=NORMAL``, as Facteur's store) on a single writer thread;
* ``pg-insert``: the same with PostgreSQL through a psycopg 3 async connection pool (autocommit off, one
  transaction per insert, pool of ``--pool-size`` connections).

No decoding, no signature, no idempotency check: the minimal durable path a request can take.
Run as ``python bench/reference_apps.py KIND --port N [--url URL]``; ``GET /readyz`` answers 200 once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

KINDS = ("ceiling", "sqlite-insert", "pg-insert")


def ceiling_app() -> Starlette:
    async def accept(request: StarletteRequest) -> Response:
        await request.body()
        return StarletteJSONResponse({"accepted": True}, status_code=202)

    async def ready(_request: StarletteRequest) -> Response:
        return StarletteJSONResponse({"status": "ready"})

    return Starlette(
        routes=[Route("/codex/tasks", accept, methods=["POST"]), Route("/readyz", ready, methods=["GET"])]
    )


def sqlite_insert_app(path: str) -> FastAPI:
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute(
        "CREATE TABLE IF NOT EXISTS inbox "
        "(id INTEGER PRIMARY KEY, body BLOB NOT NULL, received_at REAL NOT NULL)"
    )
    writer = ThreadPoolExecutor(1, thread_name_prefix="bench-sqlite-writer")

    def insert(body: bytes) -> int:
        cursor = connection.execute(
            "INSERT INTO inbox (body, received_at) VALUES (?, julianday('now'))", (body,)
        )
        return int(cursor.lastrowid or 0)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            writer.shutdown(wait=True)
            connection.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/codex/tasks", status_code=202)
    async def accept(request: Request) -> JSONResponse:
        body = await request.body()
        row_id = await asyncio.get_running_loop().run_in_executor(writer, insert, body)
        return JSONResponse({"id": row_id}, status_code=202)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def pg_insert_app(url: str, pool_size: int) -> FastAPI:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS inbox (id BIGSERIAL PRIMARY KEY, body BYTEA NOT NULL, "
                "received_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url, min_size=pool_size, max_size=pool_size, open=False, timeout=10
        )
        await pool.open(wait=True, timeout=30)
        state["pool"] = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/codex/tasks", status_code=202)
    async def accept(request: Request) -> JSONResponse:
        body = await request.body()
        pool: AsyncConnectionPool[Any] = state["pool"]
        async with pool.connection() as conn:
            cursor = await conn.execute("INSERT INTO inbox (body) VALUES (%s) RETURNING id", (body,))
            row = await cursor.fetchone()
        return JSONResponse({"id": row[0] if row else None}, status_code=202)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def build(kind: str, url: str, pool_size: int) -> Any:
    if kind == "ceiling":
        return ceiling_app()
    if kind == "sqlite-insert":
        return sqlite_insert_app(url)
    return pg_insert_app(url, pool_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--url", default="", help="SQLite file path, or PostgreSQL URL")
    parser.add_argument("--pool-size", type=int, default=10)
    args = parser.parse_args()
    # the uvicorn options of `facteur serve` (src/facteur/cli/main.py): one worker, loop/http "auto"
    # (uvloop, httptools), no access log, no server header
    server = uvicorn.Server(
        uvicorn.Config(
            build(args.kind, args.url, args.pool_size),
            host="127.0.0.1",
            port=args.port,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    if not server.started:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
