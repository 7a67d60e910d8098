"""The runtime: the one place where settings become adapters and services, and their lifecycle.

``facteur serve`` and the tests build a :class:`Runtime` with :func:`build_runtime`, start it once (schema
migrations, executor recovery, resubmission of queued runs) and close it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from facteur.bus import build_broker
from facteur.bus.codex_listener import CodexListener
from facteur.bus.port import Broker
from facteur.bus.relay import OutboxRelay, default_holder
from facteur.clock import Clock, Ids, RandomIds, SystemClock
from facteur.errors import FacteurError, StoreUnavailable
from facteur.executors.local import LocalExecutor
from facteur.executors.none import NoneExecutor
from facteur.executors.port import Executor
from facteur.forge.port import Forge
from facteur.intake.codex_tasks import CodexTaskIntake
from facteur.intake.discord import DiscordIntake
from facteur.intake.discord_plans import DiscordPlans
from facteur.intake.github import GitHubIntake
from facteur.orchestrator.dispatch import Callbacks, Dispatcher
from facteur.orchestrator.driver import Driver
from facteur.orchestrator.ideas import Ideas
from facteur.orchestrator.reconciler import Reconciler
from facteur.orchestrator.run_bodies import RunBodies
from facteur.orchestrator.run_reports import RunReports
from facteur.orchestrator.scheduler import Scheduler
from facteur.settings import CONFIG_FILE_ENV, Settings
from facteur.store.migrate import head_revision
from facteur.store.port import Store
from facteur.store.sql import SqlStore

logger = logging.getLogger(__name__)

#: seconds between attempts to migrate a database that is not reachable yet
MIGRATE_RETRY_SECONDS = 2.0
#: seconds between sweeps that resubmit runs whose submission failed
RESUBMIT_INTERVAL_SECONDS = 30.0
#: seconds between attempts to (re)start the codex-task consumer after the bus or the store failed
CONSUMER_RETRY_SECONDS = 5.0


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    ids: Ids
    store: Store
    executor: Executor
    dispatcher: Dispatcher
    intake: CodexTaskIntake
    github: GitHubIntake
    discord: DiscordIntake
    run_reports: RunReports
    ideas: Ideas
    #: key of the per-run callback tokens
    callback_secret: bytes
    driver: Driver
    scheduler: Scheduler
    reconciler: Reconciler
    #: GitHub (when a token or App is configured), else None: intake then skips its GitHub calls
    forge: Forge | None = None
    #: the bus; set when the outbox relay or ``bus.consume_codex_tasks`` is on (or given by tests)
    broker: Broker | None = None
    #: publishes the outbox to the broker (``bus.outbox.relay_enabled``)
    relay: OutboxRelay | None = None
    schema_revision: str | None = None
    _problem: str | None = "starting"
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def not_ready_reason(self) -> str | None:
        """Why the service cannot take work now, or None when it can."""
        return self._problem

    async def start(self) -> None:
        if isinstance(self.store, SqlStore):
            try:
                await self._migrate()
            except StoreUnavailable as exc:
                self._problem = f"database not migrated yet: {exc.message}"
                logger.error("database unavailable at start-up, retrying: error=%s", exc.message)
                self._tasks.append(asyncio.create_task(self._migrate_until_done(), name="facteur-migrate"))
        else:
            self.schema_revision = await self.store.schema_revision()
            self._mark_ready()
        if isinstance(self.executor, LocalExecutor):
            await self.executor.start()
        if self._problem is None:
            await self._resubmit()  # before the first request, so start-up work is not raced by new work
        self._tasks.append(
            asyncio.create_task(self._resubmit_loop(started=self._problem is None), name="facteur-resubmit"),
        )
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self._relay(self.relay), name="facteur-outbox-relay"))
        if self.settings.scheduler.enabled:
            self._tasks.append(asyncio.create_task(self._schedule(), name="facteur-scheduler"))
            self._tasks.append(asyncio.create_task(self._reconcile(), name="facteur-reconciler"))
        if self.settings.bus.consume_codex_tasks and self.broker is not None:
            self._tasks.append(
                asyncio.create_task(self._consume_codex_tasks(self.broker), name="facteur-codex-consumer")
            )

    async def _relay(self, relay: OutboxRelay) -> None:
        await self._ready.wait()
        logger.info("outbox relay started: bus=%s holder=%s", relay.broker_description, relay.holder)
        await relay.run()

    async def _schedule(self) -> None:
        await self._ready.wait()
        logger.info(
            "scheduler started: holder=%s max_concurrent=%s max_per_repository=%s max_heavy=%s",
            self.scheduler.holder,
            self.settings.scheduler.max_concurrent,
            self.settings.scheduler.max_per_repository,
            self.settings.scheduler.max_heavy,
        )
        await self.scheduler.run()

    async def _reconcile(self) -> None:
        """Sweep at start-up (a crash's leftovers), then every ``scheduler.reconcile_seconds``."""
        await self._ready.wait()
        while True:
            try:
                await self.reconciler.sweep()
            except FacteurError as exc:
                logger.warning("reconciler sweep failed: error=%s", exc)
            await asyncio.sleep(self.settings.scheduler.reconcile_seconds)

    async def _consume_codex_tasks(self, broker: Broker) -> None:
        """Ingest ``bus.topics.codex_tasks`` like POST /codex/tasks; on a bus or store failure, start over."""
        bus = self.settings.bus
        await self._ready.wait()
        while True:
            listener = CodexListener(
                broker,
                topic=bus.topics.codex_tasks,
                group=bus.codex_listener.group,
                decode=self.intake.decode,
                receive=self.intake.receive,
            )
            try:
                await broker.start()
                await listener.start()
                logger.info(
                    "codex task consumer started: topic=%s group=%s bus=%s",
                    listener.topic,
                    listener.group,
                    broker.description,
                )
                await listener.run()
                return
            except FacteurError as exc:
                logger.error("codex task consumer stopped, retrying: error=%s", exc.message)
            finally:
                await listener.close()
            await asyncio.sleep(CONSUMER_RETRY_SECONDS)

    async def _migrate(self) -> None:
        assert isinstance(self.store, SqlStore)
        _, self.schema_revision = await asyncio.to_thread(self.store.migrate)
        if self.schema_revision != head_revision():  # pragma: no cover - upgrade always reaches head
            raise StoreUnavailable(f"schema at {self.schema_revision}, expected {head_revision()}")
        self._mark_ready()

    def _mark_ready(self) -> None:
        self._problem = None
        self._ready.set()

    async def _migrate_until_done(self) -> None:
        while self._problem is not None:
            await asyncio.sleep(MIGRATE_RETRY_SECONDS)
            try:
                await self._migrate()
                logger.info("database migrated after a delayed start: revision=%s", self.schema_revision)
            except StoreUnavailable as exc:
                self._problem = f"database not migrated yet: {exc.message}"

    async def _resubmit(self) -> None:
        try:
            count = await self.dispatcher.resubmit_pending()
            if count:
                logger.info("queued runs resubmitted: count=%s", count)
        except StoreUnavailable as exc:
            logger.warning("resubmission sweep failed: error=%s", exc.message)

    async def _resubmit_loop(self, *, started: bool) -> None:
        """Resubmit queued runs once the store is ready (unless done at start-up), then periodically."""
        if not started:
            await self._ready.wait()
            await self._resubmit()
        while True:
            await asyncio.sleep(RESUBMIT_INTERVAL_SECONDS)
            await self._resubmit()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.broker is not None:
            await self.broker.close()
        await self.executor.aclose()
        if self.forge is not None:
            await self.forge.close()
        await self.store.close()


async def build_executor(settings: Settings, clock: Clock, *, config_path: Path | None = None) -> Executor:
    kind = settings.executor.kind
    if kind == "local":
        return LocalExecutor(
            settings.executor.local,
            clock=clock,
            stage_env=stage_environment(settings, config_path),
            # a stopped stage runner first stops its agent, which may take agent.terminate_seconds
            terminate_seconds=settings.agent.terminate_seconds + 5.0,
        )
    if kind == "argo":
        from facteur.executors.argo import ArgoExecutor, create_api_client

        return ArgoExecutor(settings.argo, await create_api_client(settings.argo))
    return NoneExecutor()


def stage_environment(
    settings: Settings, config_path: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What local stage runs add to Facteur's environment: the settings file these settings came from
    (``config_path``, else ``FACTEUR_CONFIG_FILE``) and the directories they share with this process, as
    absolute paths (a stage runs in its own directory)."""
    environ = os.environ if environ is None else environ
    env = {
        "FACTEUR_FORGE__LOCAL__ROOT": str(settings.forge.local.root.resolve()),
        "FACTEUR_STAGE__RESUME_DIR": str(settings.stage.resume_dir.resolve()),
    }
    config = config_path or environ.get(CONFIG_FILE_ENV)
    if config:
        env[CONFIG_FILE_ENV] = str(Path(config).resolve())
    return env


def build_forge(settings: Settings) -> Forge | None:
    """The GitHub forge when a token or a GitHub App is configured."""
    if settings.github.token is None and settings.github.app_id is None:
        return None
    from facteur.forge.github import GitHubForge

    return GitHubForge(settings.github)


def callback_secret(settings: Settings) -> bytes:
    """``server.callback_secret``; else derived from ``server.api_token``; else random for this process
    (run tokens then change with each restart, which is said in the log)."""
    if settings.server.callback_secret is not None:
        return settings.server.callback_secret.get_secret_value().encode()
    if settings.server.api_token is not None:
        token = settings.server.api_token.get_secret_value().encode()
        return hmac.new(token, b"facteur run callbacks", hashlib.sha256).digest()
    logger.warning(
        "no server.callback_secret or server.api_token: run tokens are valid until this process stops"
    )
    return secrets.token_bytes(32)


def _url_host(host: str) -> str:
    """The host to put in a callback URL for a bind address (a wildcard bind is reached on loopback)."""
    if host in {"0.0.0.0", "", "::"}:  # noqa: S104 - a comparison, not a bind
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def workflow_identifier() -> str | None:
    """The Argo workflow this process runs in (name, uid or namespace), appended to ready comments."""
    for name in ("ARGO_WORKFLOW_NAME", "ARGO_WORKFLOW_UID", "ARGO_WORKFLOW_NAMESPACE"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


async def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    ids: Ids | None = None,
    store: Store | None = None,
    executor: Executor | None = None,
    broker: Broker | None = None,
    forge: Forge | None = None,
    config_path: Path | None = None,
) -> Runtime:
    """Wire the adapters the settings ask for (or the ones given, in tests); ``config_path`` is the file the
    settings were read from, for the stage runs the local executor starts."""
    clock = clock or SystemClock()
    ids = ids or RandomIds()
    if store is None:
        store = SqlStore.open(
            settings.database.url,
            clock=clock,
            pool_size=settings.database.pool_size,
            timeout=settings.database.timeout_seconds,
        )
    if executor is None:
        executor = await build_executor(settings, clock, config_path=config_path)
    if broker is None and (settings.bus.consume_codex_tasks or settings.bus.outbox.relay_enabled):
        broker = build_broker(settings.bus)
    #: this process among replicas, in the relay's lease, the scheduler's claims and the reconciler's lease
    holder = default_holder()
    relay = None
    if broker is not None and settings.bus.outbox.relay_enabled:
        relay = OutboxRelay(store, broker, clock, settings.bus.outbox, holder=holder)
        store.on_outbox_write(relay.wake)
    secret = callback_secret(settings)
    server = settings.server
    dispatcher = Dispatcher(
        store,
        executor,
        clock,
        execution_topic=settings.bus.topics.codex_execution,
        callbacks=Callbacks(server.public_url or f"http://{_url_host(server.host)}:{server.port}", secret),
    )
    if isinstance(executor, LocalExecutor):
        executor.set_listener(dispatcher.on_workflow_status)
    bodies = RunBodies(
        executor=executor.kind,
        namespace=executor.namespace,
        base_branch=settings.codex.base_branch,
        branch_prefix=settings.codex.branch_prefix,
        new_id=ids.new_id,
    )
    driver = Driver(
        store=store, dispatcher=dispatcher, clock=clock, ids=ids, settings=settings, bodies=bodies
    )
    scheduler = Scheduler(
        store=store,
        dispatcher=dispatcher,
        clock=clock,
        settings=settings.scheduler,
        bodies=bodies,
        holder=holder,
    )
    driver.wake, driver.wake_at = scheduler.wake, scheduler.wake_at
    dispatcher.on_change = driver.run_changed
    intake = CodexTaskIntake(
        store=store,
        dispatcher=dispatcher,
        clock=clock,
        ids=ids,
        planning_enabled=settings.codex_dispatch.planning_enabled,
    )
    if forge is None:
        forge = build_forge(settings)
    run_reports = RunReports(store=store, clock=clock, execution_topic=settings.bus.topics.codex_execution)
    run_reports.on_change = driver.run_changed
    run_reports.on_plan = driver.plan_received
    github = GitHubIntake(
        store=store,
        codex_tasks=intake,
        forge=forge,
        github=settings.github,
        codex=settings.codex,
        topics=settings.bus.topics,
        clock=clock,
        workflow_identifier=workflow_identifier(),
    )
    ideas = Ideas(
        store=store,
        clock=clock,
        ids=ids,
        approvals=settings.approvals,
        intent_topic=settings.bus.topics.codex_intent,
    )
    ideas.on_created = driver.idea_created
    github.orchestration = driver
    return Runtime(
        settings=settings,
        clock=clock,
        ids=ids,
        store=store,
        executor=executor,
        dispatcher=dispatcher,
        intake=intake,
        github=github,
        discord=DiscordIntake(
            settings=settings.discord,
            clock=clock,
            sink=DiscordPlans(store=store, ids=ids, topic=settings.bus.topics.discord_commands),
        ),
        forge=forge,
        run_reports=run_reports,
        ideas=ideas,
        callback_secret=secret,
        driver=driver,
        scheduler=scheduler,
        reconciler=Reconciler(
            store=store,
            dispatcher=dispatcher,
            driver=driver,
            clock=clock,
            settings=settings.scheduler,
            holder=holder,
            execution_topic=settings.bus.topics.codex_execution,
        ),
        broker=broker,
        relay=relay,
    )
