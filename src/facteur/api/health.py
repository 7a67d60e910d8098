"""Service identity, liveness and readiness."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from facteur import __version__
from facteur.errors import StoreUnavailable
from facteur.runtime import Runtime

router = APIRouter()


@router.get("/")
async def identity() -> dict[str, str]:
    return {
        "service": "facteur",
        "status": "ok",
        "version": os.environ.get("FACTEUR_VERSION", __version__),
        "commit": os.environ.get("FACTEUR_COMMIT", "unknown"),
    }


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    problem = runtime.not_ready_reason()
    outbox: dict[str, Any] = {}
    if problem is None:
        try:  # counting the outbox's backlog is also the check that the store answers
            outbox = await outbox_detail(runtime)
        except StoreUnavailable as exc:
            problem = exc.message
    if problem is not None:
        return JSONResponse({"status": "unavailable", "detail": problem}, status_code=503)
    return JSONResponse({"status": "ready", "schema": runtime.schema_revision, "outbox": outbox})


async def outbox_detail(runtime: Runtime) -> dict[str, Any]:
    """The outbox's backlog and the relay's state. A broker outage does not make Facteur unready — what it
    accepts waits in the outbox — so it shows here instead."""
    relay = runtime.relay
    backlog = await (relay.refresh_backlog() if relay is not None else runtime.store.outbox_backlog())
    oldest = backlog.oldest_created_at
    detail: dict[str, Any] = {
        "relay": "disabled",
        "backlog": backlog.count,
        "oldest_age_seconds": (
            round(max(0.0, (runtime.clock.now() - oldest).total_seconds()), 3) if oldest is not None else None
        ),
    }
    if relay is not None:
        status = relay.status()
        detail.update(
            relay="leading" if status.leading else "standby",
            bus=relay.broker_description,
            published=status.published,
            failures=status.failures,
            problem=status.problem,
        )
    return detail


@router.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text exposition of the outbox's and the orchestrator's figures."""
    runtime: Runtime = request.app.state.runtime
    lines: list[str] = []

    def gauge(name: str, kind: str, text: str, value: float | None) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
        if value is not None:
            lines.append(f"{name} {value:g}")

    try:
        detail = await outbox_detail(runtime)
    except StoreUnavailable:
        detail = {}
    gauge(
        "facteur_outbox_backlog", "gauge", "Messages in the outbox not published yet.", detail.get("backlog")
    )
    gauge(
        "facteur_outbox_oldest_age_seconds",
        "gauge",
        "Age of the oldest unpublished message (absent when none).",
        detail.get("oldest_age_seconds"),
    )
    gauge(
        "facteur_outbox_published_total",
        "counter",
        "Messages this process published from the outbox.",
        detail.get("published", 0),
    )
    gauge(
        "facteur_outbox_publish_failures_total",
        "counter",
        "Relay rounds that failed (broker or store unavailable).",
        detail.get("failures", 0),
    )
    gauge(
        "facteur_outbox_relay_leading",
        "gauge",
        "1 when this process holds the outbox relay's lease.",
        1 if detail.get("relay") == "leading" else 0,
    )
    gauge("facteur_store_up", "gauge", "1 when the store answered this scrape.", 1 if detail else 0)
    gauge(
        "facteur_scheduler_passes_total",
        "counter",
        "Scheduling passes of this process.",
        runtime.scheduler.passes,
    )
    gauge(
        "facteur_runs_dispatched_total",
        "counter",
        "Runs this process's scheduler submitted to the executor.",
        runtime.scheduler.dispatched,
    )
    try:
        active = await runtime.store.active_runs()
    except StoreUnavailable:
        active = None
    gauge(
        "facteur_tasks_in_flight",
        "gauge",
        "Plan tasks queued or running, across replicas (what scheduler.max_concurrent limits).",
        None if active is None else active.total,
    )
    gauge(
        "facteur_heavy_tasks_in_flight",
        "gauge",
        "Heavy plan tasks queued or running (what scheduler.max_heavy limits).",
        None if active is None else active.heavy,
    )
    if active is not None:
        for repository, count in sorted(active.by_repository.items()):
            lines.append(f'facteur_tasks_in_flight_by_repository{{repository="{repository}"}} {count}')
    gauge(
        "facteur_runs_stuck_total",
        "counter",
        "Runs this process's reconciler found without a heartbeat for scheduler.heartbeat_timeout_seconds.",
        runtime.reconciler.stuck_total,
    )
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
