"""Benchmark the outbox relay and Kafka: what Facteur's outbox passes through, against what the broker takes.

One Kafka-protocol broker (``noida-db``, started by ``tests/support/kafka.py`` on a free port of 127.0.0.1
with a fresh data directory) serves the whole run; every row uses a topic of its own. Rows:

* ``ceiling``: a bare aiokafka producer (acks=all, idempotence on, gzip and no compression) sending N
  messages of 500 bytes at once (send all, then await all); a bare consumer reading them back; the latency of
  ``send_and_wait`` for single messages; the same producer at a steady 1,000/s with a consumer in the process
  (publish → consume latency without a database); ``KafkaBroker.publish`` in batches (Facteur's producer
  code, no database);
* ``relay drain``: N messages put in the outbox first, then an ``OutboxRelay`` on ``KafkaBroker`` started and
  timed until all are published (batch size 500, the default, and 2,000);
* ``relay sustained``: writer coroutines enqueue batches of 10 as fast as they can while the relay runs;
* ``relay latency``: messages enqueued one by one at a steady rate, the relay woken by the store's outbox
  listener, a consumer in the process; latency = receive time - the time ``enqueue`` was called.

Relay rows run on SQLite (a new file) and on PostgreSQL 18 (a new database on one durable embedded server:
fsync on). Figures are printed and, for a full run, written into bench/README.md (between the ``bus``
result markers) and bench/results/bus.json. Nothing here asserts on timings: the exit status is 0 unless the
broker or PostgreSQL failed to start (1). All traffic goes to 127.0.0.1.

Usage: ``python bench/bus.py [--quick] [--only TEXT] [--no-postgres] [--write-readme yes|no|auto]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import _harness as harness  # bench/ is not a package: the machinery the benchmark scripts share

SECTION = harness.Section("bus", "the outbox relay and Kafka")

TARGET_EVENTS_PER_SECOND = 10_000.0
TARGET_LATENCY_P99_MS = 50.0
VALUE_BYTES = 500
KEYS = 64
#: seconds to wait before measuring a disturbed row again
RETRY_PAUSE = 10.0
#: no single row may take longer than this (seconds), whatever happens
ROW_DEADLINE = 300.0

for _path in (harness.REPO_ROOT / "src", harness.REPO_ROOT, harness.BENCH_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


class StartFailed(Exception):
    """The broker or the database server could not be started."""


# --- plan, rows and figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    messages: int  # N for the ceiling and drain rows
    single_sends: int  # send_and_wait calls timed one by one
    sustained_seconds: float
    latency_seconds: float
    latency_rate: int  # messages per second
    warmup_seconds: float
    writers: int
    writer_batch: int
    retries: int


@dataclass
class Row:
    name: str  # "ceiling producer", "relay drain", …
    database: str = "-"
    setting: str = "-"  # batch size, compression, rate
    rate: float | None = None  # messages (events) per second
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    backlog_end: int | None = None
    #: seconds of the relay's wall time spent in each step (drain/sustained rows)
    split: dict[str, float] = field(default_factory=dict)
    #: p50 and p99 of one call of each step, ms
    per_call: dict[str, tuple[float, float]] = field(default_factory=dict)
    wall: float = 0.0
    #: CPU used meanwhile, in shares of one core: this process, broker, postgres, other processes
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    failed: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.database} {self.setting}"

    @property
    def foreign(self) -> float:
        return self.cpu.get("other", 0.0)


def percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest rank; NaN when there is nothing to rank."""
    return harness.percentile(ordered, share, nearest=True, empty=float("nan"))


def latency_figures(row: Row, seconds: Sequence[float]) -> None:
    ordered = sorted(seconds)
    row.p50_ms = 1000 * percentile(ordered, 0.50)
    row.p99_ms = 1000 * percentile(ordered, 0.99)
    row.max_ms = 1000 * ordered[-1] if ordered else None


_PAD = random.Random(7).randbytes(VALUE_BYTES).hex().encode()


def value(seq: int, stamp_ns: int = 0) -> bytes:
    """A 500-byte JSON value: sequence number, enqueue time (perf_counter ns), random hex padding (which
    compresses about 2:1, like text payloads do)."""
    head = b'{"seq":%d,"t":%d,"pad":"' % (seq, stamp_ns)
    start = (seq * 37) % VALUE_BYTES
    return head + _PAD[start : start + VALUE_BYTES - len(head) - 2] + b'"}'


def stamp_of(raw: bytes) -> tuple[int, int] | None:
    """(seq, enqueue time) of a value made by :func:`value`, None for anything else (warm-up messages)."""
    if not raw.startswith(b'{"seq":'):
        return None
    data = json.loads(raw)
    return int(data["seq"]), int(data["t"])


def key(seq: int) -> bytes:
    return b"key-%02d" % (seq % KEYS)


def topic_name(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}"


# --- CPU accounting --------------------------------------------------------------------------------------


def cpu_snapshot() -> dict[int, tuple[str, int, float]]:
    """pid -> (command name, process group, CPU seconds so far) for every process we can read."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    usage: dict[int, tuple[str, int, float]] = {}
    for pid, name, fields in harness.proc_stats():
        with contextlib.suppress(ValueError, IndexError):
            usage[pid] = (name, int(fields[2]), harness.cpu_seconds(fields, ticks))
    return usage


class CpuMeter:
    """CPU used while a row runs, split between this process, the broker, PostgreSQL and everything else."""

    def __init__(self, broker_group: int | None) -> None:
        self._broker_group = broker_group
        self._before = cpu_snapshot()
        self._started = time.perf_counter()

    def shares(self) -> dict[str, float]:
        after = cpu_snapshot()
        seconds = max(time.perf_counter() - self._started, 1e-9)
        used: collections.Counter[str] = collections.Counter()
        for pid, (name, group, total) in after.items():
            spent = total - self._before.get(pid, (name, group, 0.0))[2]
            if spent <= 0:
                continue
            if pid == os.getpid():
                used["bench process"] += spent
            elif group == self._broker_group:
                used["broker"] += spent
            elif name == "postgres":
                used["postgres"] += spent
            else:
                used["other"] += spent
        return {name: used[name] / seconds for name in ("bench process", "broker", "postgres", "other")}


# --- the services ----------------------------------------------------------------------------------------


class Services:
    """The broker (always) and the durable PostgreSQL server (unless skipped) of one run."""

    def __init__(self, with_postgres: bool) -> None:
        from tests.support.kafka import KafkaUnavailable, start_kafka

        try:
            self.kafka = start_kafka()
        except KafkaUnavailable as exc:
            raise StartFailed(f"the Kafka-protocol broker did not start: {exc}") from exc
        self.workdir = Path(tempfile.mkdtemp(prefix="facteur-bench-bus-"))
        self.postgres: Any = None
        self.postgres_problem: str | None = None
        self._sqlite_counter = 0
        if with_postgres:
            try:
                # durable=True: fsync, synchronous_commit, full-page writes on
                self.postgres = harness.Postgres()
            except Exception as exc:
                self.postgres_problem = f"{type(exc).__name__}: {exc}"

    @property
    def bootstrap(self) -> str:
        return str(self.kafka.bootstrap)

    @property
    def broker_group(self) -> int | None:
        process = self.kafka._process
        return process.pid if process is not None else None

    def databases(self) -> list[str]:
        return ["sqlite", "postgresql"] if self.postgres is not None else ["sqlite"]

    @contextlib.asynccontextmanager
    async def store(self, database: str) -> AsyncIterator[Any]:
        """A migrated store on a fresh database, closed (and the database dropped) afterwards."""
        from facteur.clock import SystemClock
        from facteur.store.sql import SqlStore

        dropped: str | None = None
        if database == "sqlite":
            self._sqlite_counter += 1
            url = f"sqlite:///{self.workdir / f'bus-{self._sqlite_counter}.db'}"
        else:
            dropped = await asyncio.to_thread(self.postgres.new_database)
            url = self.postgres.url(dropped)
        store = SqlStore.open(url, clock=SystemClock())
        try:
            await asyncio.to_thread(store.migrate)
            yield store
        finally:
            await store.close()
            if dropped is not None:
                await asyncio.to_thread(self.postgres.drop, dropped)

    def fresh_broker(self) -> None:
        """Restart the broker empty, on the same port: noida-db slows down as it holds more messages."""
        self.kafka.stop()
        shutil.rmtree(self.kafka.data_dir, ignore_errors=True)
        self.kafka.start()

    def cleanup(self) -> None:
        if self.postgres is not None:
            self.postgres.cleanup()
        self.kafka.cleanup()
        shutil.rmtree(self.workdir, ignore_errors=True)


def kafka_settings(bootstrap: str, compression: str = "gzip") -> Any:
    from facteur.settings import KafkaSettings

    return KafkaSettings(brokers=[bootstrap], compression=compression)  # type: ignore[arg-type]


def bare_producer(bootstrap: str, compression: str | None) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, compression_type=compression
    )


def bare_consumer(bootstrap: str, topic: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def end_offset(bootstrap: str, topic: str) -> int:
    """Messages on a topic (sum of its partitions' end offsets)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


# --- ceiling rows ----------------------------------------------------------------------------------------


async def ceiling_producer(services: Services, plan: Plan, compression: str | None) -> tuple[Row, str]:
    row = Row("ceiling: bare producer, send all then await all", setting=compression or "none")
    topic = topic_name("ceiling")
    producer = bare_producer(services.bootstrap, compression)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up", key=key(0))  # creates the topic
        values = [value(seq) for seq in range(plan.messages)]
        meter = CpuMeter(services.broker_group)
        started = time.perf_counter()
        pending = [await producer.send(topic, values[seq], key=key(seq)) for seq in range(plan.messages)]
        await asyncio.gather(*pending)
        row.wall = time.perf_counter() - started
        row.cpu = meter.shares()
    finally:
        await producer.stop()
    row.rate = plan.messages / row.wall
    return row, topic


async def ceiling_consumer(services: Services, plan: Plan, topic: str, compression: str) -> Row:
    row = Row("ceiling: bare consumer, from the earliest offset", setting=compression)
    consumer = bare_consumer(services.bootstrap, topic)
    meter = CpuMeter(services.broker_group)
    started = time.perf_counter()
    await consumer.start()
    received = 0
    try:
        async with asyncio.timeout(ROW_DEADLINE):
            while received < plan.messages + 1:  # + the warm-up message
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                received += sum(len(records) for records in batches.values())
    finally:
        row.wall = time.perf_counter() - started
        row.cpu = meter.shares()
        await consumer.stop()
    row.rate = received / row.wall
    row.notes.append(f"{received} messages read (joining and the first metadata request included)")
    return row


async def ceiling_send_and_wait(services: Services, plan: Plan) -> Row:
    row = Row("ceiling: bare producer, send_and_wait one at a time", setting="gzip")
    topic = topic_name("single")
    producer = bare_producer(services.bootstrap, "gzip")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up", key=key(0))
        for seq in range(20):
            await producer.send_and_wait(topic, value(seq), key=key(seq))
        meter = CpuMeter(services.broker_group)
        took = []
        started = time.perf_counter()
        for seq in range(plan.single_sends):
            sent = time.perf_counter()
            await producer.send_and_wait(topic, value(seq), key=key(seq))
            took.append(time.perf_counter() - sent)
        row.wall = time.perf_counter() - started
        row.cpu = meter.shares()
    finally:
        await producer.stop()
    row.rate = plan.single_sends / row.wall
    latency_figures(row, took)
    return row


async def ceiling_broker_publish(services: Services, plan: Plan, batch_size: int) -> Row:
    """Facteur's producer code (``KafkaBroker.publish``) in the relay's batch size, without a database."""
    from facteur.bus.kafka import KafkaBroker
    from facteur.bus.port import Message

    row = Row("ceiling: KafkaBroker.publish in batches, no database", setting=f"gzip, batch {batch_size}")
    topic = topic_name("publish")
    broker = KafkaBroker(kafka_settings(services.bootstrap))
    await broker.start()
    try:
        await broker.publish([Message(topic=topic, value=b"warm-up", key=key(0))])
        messages = [Message(topic=topic, value=value(seq), key=key(seq)) for seq in range(plan.messages)]
        meter = CpuMeter(services.broker_group)
        started = time.perf_counter()
        for first in range(0, plan.messages, batch_size):
            await broker.publish(messages[first : first + batch_size])
        row.wall = time.perf_counter() - started
        row.cpu = meter.shares()
    finally:
        await broker.close()
    row.rate = plan.messages / row.wall
    return row


async def receive_stamps(
    bootstrap: str, topic: str, expected: int, ready: asyncio.Event, done: Callable[[], bool]
) -> dict[int, float]:
    """seq -> seconds from enqueue (or send) to receipt, for every stamped message of ``topic``."""
    consumer = bare_consumer(bootstrap, topic)
    await consumer.start()
    latencies: dict[int, float] = {}
    try:
        await consumer.getmany(timeout_ms=200)  # the warm-up message: the position is known now
        ready.set()
        idle_deadline: float | None = None
        while len(latencies) < expected:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.perf_counter_ns()
            for records in batches.values():
                for record in records:
                    stamp = stamp_of(record.value or b"")
                    if stamp is not None:
                        latencies[stamp[0]] = (now - stamp[1]) / 1e9
            if done():  # the sender finished: wait at most 10 s more for the rest
                idle_deadline = idle_deadline or time.monotonic() + 10
                if time.monotonic() > idle_deadline:
                    break
    finally:
        ready.set()
        await consumer.stop()
    return latencies


async def paced(rate: int, count: int, action: Callable[[int], None]) -> float:
    """Call ``action(seq)`` ``count`` times at ``rate`` per second (on a schedule, catching up when late);
    returns the rate achieved."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for seq in range(count):
        delay = started + seq / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        action(seq)
    return count / max(loop.time() - started, 1e-9)


async def ceiling_latency(services: Services, plan: Plan, *, again: bool = False) -> Row:
    row = Row(
        "ceiling: bare producer → consumer latency" + (", again at the end" if again else ""),
        setting=f"gzip, {plan.latency_rate:,}/s",
    )
    topic = topic_name("ceiling-latency")
    producer = bare_producer(services.bootstrap, "gzip")
    await producer.start()
    count = int(plan.latency_rate * (plan.latency_seconds + plan.warmup_seconds))
    finished = False
    try:
        await producer.send_and_wait(topic, b"warm-up", key=key(0))
        ready = asyncio.Event()
        receiving = asyncio.create_task(
            receive_stamps(services.bootstrap, topic, count, ready, lambda: finished)
        )
        await ready.wait()
        pending: list[asyncio.Future[Any]] = []

        def send(seq: int) -> None:
            pending.append(
                asyncio.ensure_future(producer.send(topic, value(seq, time.perf_counter_ns()), key=key(seq)))
            )

        meter = CpuMeter(services.broker_group)
        started = time.perf_counter()
        achieved = await paced(plan.latency_rate, count, send)
        await asyncio.gather(*pending)
        finished = True
        async with asyncio.timeout(ROW_DEADLINE):
            latencies = await receiving
        row.wall = time.perf_counter() - started
        row.cpu = meter.shares()
    finally:
        finished = True
        await producer.stop()
    measured = [s for seq, s in latencies.items() if seq >= plan.latency_rate * plan.warmup_seconds]
    latency_figures(row, measured)
    row.rate = achieved
    row.notes.append(f"{len(latencies)} of {count} received; first {plan.warmup_seconds:g} s not counted")
    return row


# --- relay rows ------------------------------------------------------------------------------------------


class StepTimer:
    """Wall time the relay spends in each store and broker call, by wrapping them on the instances."""

    def __init__(self) -> None:
        self.seconds: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[str] = collections.Counter()
        self.durations: dict[str, list[float]] = collections.defaultdict(list)

    def wrap(self, owner: Any, method: str, step: str) -> None:
        original = getattr(owner, method)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await original(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                self.seconds[step] += took
                self.calls[step] += 1
                self.durations[step].append(took)

        setattr(owner, method, timed)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.durations.clear()

    def per_call(self) -> dict[str, tuple[float, float]]:
        """step -> (p50, p99) of one call, in ms."""
        figures = {}
        for step, took in self.durations.items():
            ordered = sorted(took)
            figures[step] = (1000 * percentile(ordered, 0.5), 1000 * percentile(ordered, 0.99))
        return figures

    def split(self, wall: float) -> dict[str, float]:
        shares = {step: seconds / wall for step, seconds in self.seconds.items()}
        shares["rest (relay loop, event loop)"] = max(0.0, 1.0 - sum(shares.values()))
        return shares


def instrumented_relay(store: Any, broker: Any, batch_size: int) -> tuple[Any, StepTimer]:
    from facteur.bus.relay import OutboxRelay
    from facteur.clock import SystemClock
    from facteur.settings import OutboxSettings

    relay = OutboxRelay(store, broker, SystemClock(), OutboxSettings(batch_size=batch_size))
    timer = StepTimer()
    # the relay reaches the store and broker through these instances: wrap only what it calls
    relay._store = _Proxy(store)
    relay._broker = _Proxy(broker)
    timer.wrap(relay._store, "pending_outbox", "read (pending_outbox)")
    timer.wrap(relay._broker, "publish", "publish (KafkaBroker.publish)")
    timer.wrap(relay._store, "mark_published", "mark (mark_published)")
    timer.wrap(relay._store, "acquire_lease", "lease")
    timer.wrap(relay._store, "outbox_backlog", "backlog count")
    timer.wrap(relay._store, "prune_outbox", "prune")
    return relay, timer


class _Proxy:
    """Forwards everything to the wrapped object; timed methods are set on the proxy, not on the store."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


async def started_broker(services: Services, topic: str) -> Any:
    """A connected ``KafkaBroker`` (gzip, Facteur's default) with ``topic`` created by a warm-up message."""
    from facteur.bus.kafka import KafkaBroker
    from facteur.bus.port import Message

    broker = KafkaBroker(kafka_settings(services.bootstrap))
    await broker.start()
    await broker.publish([Message(topic=topic, value=b"warm-up", key=key(0))])
    return broker


async def stop_task(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


async def wait_until(condition: Callable[[], bool], deadline: float, what: str) -> None:
    limit = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > limit:
            raise TimeoutError(f"{what} did not happen within {deadline:g} s")
        await asyncio.sleep(0.002)


async def relay_drain(services: Services, plan: Plan, database: str, batch_size: int) -> Row:
    from facteur.bus.port import Message

    row = Row("relay drain: outbox pre-filled, then relayed", database, f"batch {batch_size}")
    topic = topic_name(f"drain-{database}")
    async with services.store(database) as store:
        filled = time.perf_counter()
        for first in range(0, plan.messages, 1000):
            await store.enqueue(
                [
                    Message(topic=topic, value=value(seq), key=key(seq))
                    for seq in range(first, min(plan.messages, first + 1000))
                ]
            )
        fill_seconds = time.perf_counter() - filled
        broker = await started_broker(services, topic)
        relay, timer = instrumented_relay(store, broker, batch_size)
        try:
            meter = CpuMeter(services.broker_group)
            started = time.perf_counter()
            relaying = asyncio.create_task(relay.run())
            try:
                await wait_until(
                    lambda: relay.status().published >= plan.messages or relaying.done(),
                    ROW_DEADLINE,
                    "the drain",
                )
                row.wall = time.perf_counter() - started
                row.cpu = meter.shares()
            finally:
                await stop_task(relaying)
            backlog = await store.outbox_backlog()
        finally:
            await broker.close()
    row.rate = relay.status().published / row.wall
    row.backlog_end = backlog.count
    row.split = timer.split(row.wall)
    row.per_call = timer.per_call()
    on_topic = await end_offset(services.bootstrap, topic) - 1
    row.notes.append(
        f"outbox filled first with {plan.messages:,} messages in enqueue calls of 1,000: "
        f"{plan.messages / fill_seconds:,.0f}/s; {timer.calls['publish (KafkaBroker.publish)']} rounds; "
        f"{on_topic:,} messages on the topic, backlog {backlog.count} after"
    )
    if on_topic < plan.messages or backlog.count:
        row.notes.append("CHECK FAILED: not every message reached the topic")
    return row


async def relay_sustained(services: Services, plan: Plan, database: str) -> Row:
    from facteur.bus.port import Message

    row = Row(
        "relay sustained: writers and relay together",
        database,
        f"batch 500, {plan.writers} writers x {plan.writer_batch}",
    )
    topic = topic_name(f"sustained-{database}")
    written = 0
    stopping = asyncio.Event()

    async def writer(number: int) -> None:
        nonlocal written
        seq = number * 10_000_000
        while not stopping.is_set():
            await store.enqueue(
                [
                    Message(topic=topic, value=value(s), key=key(s))
                    for s in range(seq, seq + plan.writer_batch)
                ]
            )
            seq += plan.writer_batch
            written += plan.writer_batch

    async with services.store(database) as store:
        broker = await started_broker(services, topic)
        relay, timer = instrumented_relay(store, broker, 500)
        store.on_outbox_write(relay.wake)
        relaying = asyncio.create_task(relay.run())
        writers = [asyncio.create_task(writer(n)) for n in range(plan.writers)]
        try:
            await asyncio.sleep(plan.warmup_seconds)
            timer.reset()
            written0, published0 = written, relay.status().published
            meter = CpuMeter(services.broker_group)
            started = time.perf_counter()
            await asyncio.sleep(plan.sustained_seconds)
            row.wall = time.perf_counter() - started
            written1, published1 = written, relay.status().published
            row.cpu = meter.shares()
            split, per_call = timer.split(row.wall), timer.per_call()
            stopping.set()
            await asyncio.gather(*writers)
            backlog_at_end = written - relay.status().published
            # then let the relay finish, to check that everything arrives
            await wait_until(
                lambda: relay.status().published >= written or relaying.done(), ROW_DEADLINE, "the drain"
            )
        finally:
            stopping.set()
            for task in writers:
                task.cancel()
            await stop_task(relaying)
            store.on_outbox_write(None)
            await broker.close()
    written_rate = (written1 - written0) / row.wall
    row.rate = (published1 - published0) / row.wall
    row.backlog_end = backlog_at_end
    row.split, row.per_call = split, per_call
    on_topic = await end_offset(services.bootstrap, topic) - 1
    row.notes.append(
        f"written {written_rate:,.0f}/s, relayed {row.rate:,.0f}/s over {row.wall:.1f} s (after "
        f"{plan.warmup_seconds:g} s warm-up); backlog when the writers stopped {backlog_at_end:,}; "
        f"{on_topic:,} of {written:,} written messages on the topic after the relay caught up"
    )
    if on_topic < written:
        row.notes.append("CHECK FAILED: not every message reached the topic")
    return row


async def relay_latency(services: Services, plan: Plan, database: str) -> Row:
    from facteur.bus.port import Message

    row = Row("relay latency: enqueue → relay → consumer", database, f"batch 500, {plan.latency_rate:,}/s")
    topic = topic_name(f"latency-{database}")
    count = int(plan.latency_rate * (plan.latency_seconds + plan.warmup_seconds))
    finished = False
    async with services.store(database) as store:
        broker = await started_broker(services, topic)
        relay, timer = instrumented_relay(store, broker, 500)
        store.on_outbox_write(relay.wake)
        relaying = asyncio.create_task(relay.run())
        writes: set[asyncio.Task[None]] = set()
        try:
            ready = asyncio.Event()
            receiving = asyncio.create_task(
                receive_stamps(services.bootstrap, topic, count, ready, lambda: finished)
            )
            await ready.wait()

            def enqueue(seq: int) -> None:
                message = Message(topic=topic, value=value(seq, time.perf_counter_ns()), key=key(seq))
                task = asyncio.create_task(store.enqueue([message]))
                writes.add(task)
                task.add_done_callback(writes.discard)

            meter = CpuMeter(services.broker_group)
            started = time.perf_counter()
            achieved = await paced(plan.latency_rate, count, enqueue)
            await asyncio.gather(*writes)
            finished = True
            async with asyncio.timeout(ROW_DEADLINE):
                latencies = await receiving
            row.wall = time.perf_counter() - started
            row.cpu = meter.shares()
            row.split, row.per_call = timer.split(row.wall), timer.per_call()
        finally:
            finished = True
            await stop_task(relaying)
            store.on_outbox_write(None)
            await broker.close()
    measured = [s for seq, s in latencies.items() if seq >= plan.latency_rate * plan.warmup_seconds]
    latency_figures(row, measured)
    row.rate = achieved
    rounds = timer.calls["publish (KafkaBroker.publish)"]
    row.notes.append(
        f"{len(latencies):,} of {count:,} received; first {plan.warmup_seconds:g} s not counted; "
        f"{rounds} relay rounds ({count / max(rounds, 1):.1f} messages per round)"
    )
    if len(latencies) < count:
        row.notes.append("CHECK FAILED: not every message was received")
    return row


# --- the run ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    label: str  # matched by --only
    run: Callable[[], Awaitable[Row]]
    #: restart the broker empty first
    fresh: bool = False


def steps(services: Services, plan: Plan) -> list[Step]:
    topics: dict[str, str] = {}

    def producer(compression: str | None) -> Callable[[], Awaitable[Row]]:
        async def run() -> Row:
            row, topic = await ceiling_producer(services, plan, compression)
            topics[compression or "none"] = topic
            return row

        return run

    def consumer(compression: str) -> Callable[[], Awaitable[Row]]:
        async def run() -> Row:
            if compression not in topics:
                _, topics[compression] = await ceiling_producer(services, plan, compression)
            return await ceiling_consumer(services, plan, topics[compression], compression)

        return run

    listed = [
        Step("ceiling producer none", producer(None)),
        Step("ceiling producer gzip", producer("gzip")),
        Step("ceiling consumer none", consumer("none")),
        Step("ceiling consumer gzip", consumer("gzip")),
        Step("ceiling send_and_wait", lambda: ceiling_send_and_wait(services, plan)),
        Step("ceiling latency", lambda: ceiling_latency(services, plan)),
        Step("ceiling publish 500", lambda: ceiling_broker_publish(services, plan, 500)),
        Step("ceiling publish 2000", lambda: ceiling_broker_publish(services, plan, 2000)),
    ]
    for database in services.databases():
        listed += [
            Step(f"drain {database} 500", lambda d=database: relay_drain(services, plan, d, 500), True),  # type: ignore[misc]
            Step(f"drain {database} 2000", lambda d=database: relay_drain(services, plan, d, 2000), True),  # type: ignore[misc]
            Step(f"sustained {database}", lambda d=database: relay_sustained(services, plan, d), True),  # type: ignore[misc]
            Step(f"latency {database}", lambda d=database: relay_latency(services, plan, d), True),  # type: ignore[misc]
        ]
    # the latency ceiling again at the end, on an empty broker: how far the ceiling moved during the run
    listed.append(
        Step("ceiling latency, again at the end", lambda: ceiling_latency(services, plan, again=True), True)
    )
    return listed


async def run_all(services: Services, plan: Plan, only: str) -> list[Row]:
    rows: list[Row] = []
    for step in steps(services, plan):
        if only and only not in step.label:
            continue
        print(f"… {step.label}", file=sys.stderr, flush=True)
        row = await attempt(services, step)
        for number in range(plan.retries):
            if row.failed or row.foreign <= harness.DISTURBED:
                break
            harness.say_disturbed(row.foreign, number, plan.retries)
            await asyncio.sleep(RETRY_PAUSE)
            again = await attempt(services, step)
            if not again.failed and again.foreign < row.foreign:
                row = again
        if row.foreign > harness.DISTURBED:
            row.notes.append(f"other processes used {100 * row.foreign:.0f} % of a CPU meanwhile")
        rows.append(row)
        print(f"  {summary(row)}", file=sys.stderr, flush=True)
    return rows


async def attempt(services: Services, step: Step) -> Row:
    try:
        if step.fresh:
            await asyncio.to_thread(services.fresh_broker)
        async with asyncio.timeout(ROW_DEADLINE * 2):
            return await step.run()
    except Exception as exc:  # a failed row is reported, the run goes on
        return Row(step.label, failed=f"{type(exc).__name__}: {exc}")


def summary(row: Row) -> str:
    if row.failed:
        return f"failed: {row.failed}"
    parts = [f"{row.rate:,.0f} msgs/s" if row.rate is not None else ""]
    if row.p50_ms is not None:
        parts.append(f"p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms")
    if row.backlog_end is not None:
        parts.append(f"backlog {row.backlog_end:,}")
    return ", ".join(p for p in parts if p)


# --- the report ------------------------------------------------------------------------------------------


def _num(number: float | None, digits: int = 2) -> str:
    return "n/a" if number is None else f"{number:,.{digits}f}"


def ceiling_rate(rows: Sequence[Row]) -> float | None:
    for row in rows:
        if row.name.startswith("ceiling: bare producer, send all") and row.setting == "gzip" and row.rate:
            return row.rate
    return None


def table(rows: Sequence[Row]) -> str:
    ceiling = ceiling_rate(rows)
    lines = [
        "| measurement | database | setting | msgs/s | % of ceiling | p50 ms | p99 ms | max ms | "
        "backlog at end | CPU: bench / broker / postgres |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        if row.failed:
            lines.append(f"| {row.name} | {row.database} | {row.setting} | failed | | | | | | |")
            continue
        share = (
            f"{100 * row.rate / ceiling:.0f} %"
            if ceiling and row.rate and not row.name.startswith(("ceiling", "relay latency"))
            else "-"
        )
        cpu = " / ".join(f"{100 * row.cpu.get(k, 0):.0f} %" for k in ("bench process", "broker", "postgres"))
        lines.append(
            f"| {row.name} | {row.database} | {row.setting} | {_num(row.rate, 0)} | {share} | "
            f"{_num(row.p50_ms)} | {_num(row.p99_ms)} | {_num(row.max_ms)} | "
            f"{'-' if row.backlog_end is None else f'{row.backlog_end:,}'} | {cpu} |"
        )
    return "\n".join(lines)


def verdicts(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.failed or row.rate is None:
            continue
        if row.name.startswith(("relay drain", "relay sustained")):
            met = row.rate >= TARGET_EVENTS_PER_SECOND
            short = TARGET_EVENTS_PER_SECOND - row.rate
            state = (
                "**met**"
                if met
                else f"**not met**: short by {short:,.0f}/s ({100 * short / TARGET_EVENTS_PER_SECOND:.0f} %)"
            )
            lines.append(
                f"- {row.name.split(':')[0]} on {row.database} ({row.setting}): target ≥ "
                f"{TARGET_EVENTS_PER_SECOND:,.0f} events/s — {row.rate:,.0f}/s, {state}"
            )
        elif row.name.startswith("relay latency") and row.p99_ms is not None:
            met = row.p99_ms <= TARGET_LATENCY_P99_MS
            state = "**met**" if met else f"**not met** (by {row.p99_ms - TARGET_LATENCY_P99_MS:.1f} ms)"
            lines.append(
                f"- publish → consume p99 on {row.database} at {row.rate:,.0f} msgs/s: target ≤ "
                f"{TARGET_LATENCY_P99_MS:g} ms — {row.p99_ms:.2f} ms, {state}"
            )
    return lines


def per_call(row: Row, step: str) -> str:
    if step not in row.per_call:
        return ""
    p50, p99 = row.per_call[step]
    return f" ({p50:.2f}/{p99:.2f} ms)"


def splits(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.split and not row.failed:
            parts = ", ".join(
                f"{step} {100 * share:.0f} %" + per_call(row, step)
                for step, share in sorted(row.split.items(), key=lambda x: -x[1])
            )
            lines.append(f"- {row.name.split(':')[0]} / {row.database} / {row.setting}: {parts}")
    return lines


def machine(postgres_version: str) -> dict[str, str]:
    broker = "noida-db"
    with contextlib.suppress(metadata.PackageNotFoundError):
        broker += f" {metadata.version('noida-db')}"
    return {
        **harness.host(("aiokafka", "sqlalchemy", "psycopg", "uvloop")),
        "broker": f"{broker} (Kafka protocol, one partition per auto-created topic, 127.0.0.1)",
        "postgresql": postgres_version,
    }


def report(rows: Sequence[Row], plan: Plan, info: dict[str, str], loop_name: str) -> str:
    run = (
        f"{harness.run_of()}: one process ({loop_name} event loop) drives everything; messages of "
        f"{VALUE_BYTES} bytes across {KEYS} keys; N = {plan.messages:,} for the ceiling and drain rows, "
        f"{plan.single_sends:,} single sends, sustained rows {plan.sustained_seconds:g} s and latency rows "
        f"{plan.latency_seconds:g} s after {plan.warmup_seconds:g} s warm-up; a fresh topic per row and a "
        f"fresh database per relay row; no CPU pinning; {harness.retry_policy(plan.retries)}"
    )
    lines = [
        *harness.report_lines(run, info, table(rows), verdicts(rows)),
        "",
        "Relay wall time by step (its calls timed around each await; in brackets p50/p99 of one call):",
        "",
        *splits(rows),
    ]
    notes = [
        f"- {row.name.split(':')[0]} / {row.database} / {row.setting}: {n}" for row in rows for n in row.notes
    ]
    failures = [f"- {row.name}: {row.failed}" for row in rows if row.failed]
    if notes or failures:
        lines += ["", "Checks:", "", *failures, *notes]
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the outbox relay and Kafka (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 5,000, 2 s per timed row")
    parser.add_argument("--messages", type=int, default=None, help="N for ceiling and drain rows (50,000)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL rows")
    parser.add_argument("--only", default="", help="run only rows whose label contains this text")
    parser.add_argument("--writers", type=int, default=32, help="writer coroutines of the sustained rows")
    parser.add_argument("--retries", type=int, default=1, help="measure a disturbed row again up to N times")
    harness.add_write_readme(parser)
    args = parser.parse_args(argv)
    if args.messages is not None and not 100 <= args.messages <= 1_000_000:
        parser.error("--messages must be between 100 and 1,000,000")
    harness.check_retries(parser, args)
    return args


def event_loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop] | None, str]:
    """uvloop when installed, as ``facteur serve`` runs (uvicorn's loop ``auto``)."""
    try:
        import uvloop
    except ImportError:
        return None, "asyncio"
    return uvloop.new_event_loop, f"uvloop {metadata.version('uvloop')}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = args.quick
    plan = Plan(
        messages=args.messages or (5_000 if quick else 50_000),
        single_sends=200 if quick else 2_000,
        sustained_seconds=2.0 if quick else 10.0,
        latency_seconds=2.0 if quick else 10.0,
        latency_rate=1_000,
        warmup_seconds=1.0,
        writers=args.writers,
        writer_batch=10,
        retries=args.retries,
    )
    fingerprint = harness.src_fingerprint()
    # SIGTERM ends the run like Ctrl-C: the broker, PostgreSQL and the temporary files are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        services = Services(with_postgres=not args.no_postgres)
    except StartFailed as exc:
        print(str(exc), file=sys.stderr)
        return 1
    start_failed = services.postgres_problem is not None
    if services.postgres_problem:
        print(f"PostgreSQL did not start, its rows are skipped: {services.postgres_problem}", file=sys.stderr)
    factory, loop_name = event_loop_factory()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            rows = runner.run(run_all(services, plan, args.only))
        postgres_version = (
            f"{services.postgres.version} ({harness.POSTGRES_SETTINGS})"
            if services.postgres is not None
            else ("not run" if args.no_postgres else f"did not start: {services.postgres_problem}")
        )
    finally:
        services.cleanup()
    info = machine(postgres_version)
    harness.note_source_changes(info, fingerprint)
    text = report(rows, plan, info, loop_name)
    print(text)
    if harness.wants_readme(args, full_run=not quick and not args.only and args.messages is None):
        SECTION.write(text, {"plan": asdict(plan), "machine": info, "rows": [asdict(row) for row in rows]})
    return 1 if start_failed else 0


if __name__ == "__main__":
    sys.exit(main())
