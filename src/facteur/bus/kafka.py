"""The Kafka broker, on aiokafka.

The producer is idempotent with ``acks=all`` (so retries neither duplicate nor reorder messages of a key) and
compresses batches (``bus.kafka.compression``). A batch is sent whole, then every acknowledgement awaited. A
failed publish discards the producer; the next publish connects again. Consumers commit by hand, after their
handler (see :mod:`facteur.bus.port`). aiokafka's exceptions never leave this module: they become
:class:`BusUnavailable` or :class:`CommitFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.codec import has_gzip, has_lz4, has_snappy, has_zstd
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from facteur.bus.port import Handler, Message, Received, StartAt
from facteur.errors import BusUnavailable, CommitFailed, ConfigError
from facteur.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: milliseconds a consumer waits for new messages before it checks whether it was asked to stop
POLL_MS = 200
#: records a consumer fetches at once
FETCH_RECORDS = 100
_CODECS = {"gzip": has_gzip, "lz4": has_lz4, "snappy": has_snappy, "zstd": has_zstd}
_DRIVER_ERRORS = (KafkaError, OSError, TimeoutError)


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options shared by producers and consumers: brokers, client id, SASL and TLS."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(settings.brokers),
        "client_id": settings.client_id,
    }
    sasl, tls = settings.sasl, settings.tls
    if tls.enabled:
        try:
            options["ssl_context"] = create_ssl_context(
                cafile=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"invalid setting bus.kafka.tls: cannot load the TLS files: {exc}") from None
    if sasl.mechanism is not None:
        assert sasl.password is not None  # checked by the settings
        options["security_protocol"] = "SASL_SSL" if tls.enabled else "SASL_PLAINTEXT"
        options["sasl_mechanism"] = sasl.mechanism
        options["sasl_plain_username"] = sasl.username
        options["sasl_plain_password"] = sasl.password.get_secret_value()
    else:
        options["security_protocol"] = "SSL" if tls.enabled else "PLAINTEXT"
    return options


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    compression = settings.compression
    if compression != "none" and not _CODECS[compression]():
        raise ConfigError(
            f"invalid setting bus.kafka.compression: {compression} needs the cramjam package "
            "(pip install 'aiokafka[lz4]'); use gzip or none otherwise"
        )
    return {
        **client_options(settings),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if compression == "none" else compression,
        "request_timeout_ms": int(settings.timeout_seconds * 1000),
    }


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    name, text = type(exc).__name__, str(exc).strip()
    if text.startswith(f"{name}: "):  # aiokafka's messages repeat the class name
        text = text[len(name) + 2 :]
    return f"{name}: {text}" if text else name


class KafkaBroker:
    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer_options = producer_options(settings)  # ConfigError now rather than at first publish
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    @property
    def description(self) -> str:
        return f"kafka {','.join(self._settings.brokers)}"

    @property
    def _timeout(self) -> float:
        return self._settings.timeout_seconds

    def _unavailable(self, doing: str, exc: BaseException) -> BusUnavailable:
        return BusUnavailable(
            f"Kafka brokers {','.join(self._settings.brokers)} unavailable: {doing}: {_reason(exc)}"
        )

    async def start(self) -> None:
        await self._ready()

    async def _ready(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._producer_options)
                try:
                    async with asyncio.timeout(self._timeout):
                        await producer.start()
                except _DRIVER_ERRORS as exc:
                    await self._stop(producer)
                    raise self._unavailable("cannot connect", exc) from None
                self._producer = producer
            return self._producer

    async def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        producer = await self._ready()
        try:
            async with asyncio.timeout(self._timeout):
                pending = [
                    await producer.send(m.topic, m.value, key=m.key, headers=list(m.headers))
                    for m in messages
                ]
                results = await asyncio.gather(*pending, return_exceptions=True)
        except _DRIVER_ERRORS as exc:
            await self._discard(producer)
            raise self._unavailable(f"{len(messages)} message(s) not acknowledged", exc) from None
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if failed is not None:
            await self._discard(producer)
            raise self._unavailable(f"{len(messages)} message(s) not acknowledged", failed)

    async def _discard(self, producer: AIOKafkaProducer) -> None:
        """Drop a producer whose publish failed, without flushing: its pending messages were reported as
        failed, so it must not deliver them later (the caller publishes them again)."""
        async with self._lock:
            if self._producer is producer:
                self._producer = None
        await _abandon(producer)
        await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        """Flush and close; when the brokers are gone, give up on what is pending."""
        try:
            async with asyncio.timeout(self._timeout):
                await producer.stop()
        except _DRIVER_ERRORS as exc:
            logger.warning("kafka producer closed without flushing: error=%s", _reason(exc))
            await _abandon(producer)
            await producer.client.close()

    async def close(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)

    def consumer(self, topic: str, group: str, *, start_at: StartAt = "earliest") -> KafkaConsumer:
        return KafkaConsumer(self._settings, topic, group, start_at)


async def _abandon(producer: AIOKafkaProducer) -> None:
    """Stop the producer's sender, so that stop() no longer waits for pending batches (while the brokers are
    down it would wait forever). aiokafka offers no public way to close without flushing."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        await sender.close()


class KafkaConsumer:
    def __init__(self, settings: KafkaSettings, topic: str, group: str, start_at: StartAt) -> None:
        self._settings = settings
        self.topic = topic
        self.group = group
        self._start_at = start_at
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()

    def _unavailable(self, doing: str, exc: BaseException) -> BusUnavailable:
        return BusUnavailable(
            f"Kafka brokers {','.join(self._settings.brokers)} unavailable: {doing}: {_reason(exc)}"
        )

    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            self.topic,
            **client_options(self._settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self._start_at,
        )
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                await consumer.start()
        except _DRIVER_ERRORS as exc:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await consumer.stop()
            raise self._unavailable(f"cannot join group {self.group} on {self.topic}", exc) from None
        self._consumer = consumer

    async def run(self, handler: Handler) -> None:
        await self.start()
        consumer = self._consumer
        assert consumer is not None
        self._stopping.clear()
        while not self._stopping.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=POLL_MS, max_records=FETCH_RECORDS)
            except KafkaError as exc:
                raise self._unavailable(f"fetch from {self.topic}", exc) from None
            fetched = list(batches.items())
            for index, (partition, records) in enumerate(fetched):
                try:
                    await self._handle(consumer, partition, records, handler)
                except BaseException:
                    for later, later_records in fetched[index + 1 :]:  # fetched, never handled: read again
                        consumer.seek(later, later_records[0].offset)
                    raise

    async def _handle(
        self, consumer: AIOKafkaConsumer, partition: TopicPartition, records: list[Any], handler: Handler
    ) -> None:
        """Handle a partition's batch in order; commit what was handled, also when a handler fails."""
        handled: int | None = None
        try:
            for record in records:
                if self._stopping.is_set():
                    break
                await handler(
                    Received(
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        value=record.value if record.value is not None else b"",
                        key=record.key,
                        headers=tuple((name, value or b"") for name, value in record.headers),
                    )
                )
                handled = record.offset
        except BaseException:
            failed = records[0].offset if handled is None else handled + 1
            consumer.seek(partition, failed)  # the failed message is read again if run() is called again
            if handled is not None:
                try:
                    await self._commit(consumer, partition, handled + 1)
                except CommitFailed as exc:  # the handler's exception matters more; those are read again
                    logger.warning("kafka commit after a handler failure failed: error=%s", exc.message)
            raise
        # stopped part-way: what was fetched but not handled is read again if run() is called again
        consumer.seek(partition, records[0].offset if handled is None else handled + 1)
        if handled is not None:
            await self._commit(consumer, partition, handled + 1)

    async def _commit(self, consumer: AIOKafkaConsumer, partition: TopicPartition, next_offset: int) -> None:
        try:
            async with asyncio.timeout(self._settings.timeout_seconds):
                await consumer.commit({partition: next_offset})
        except _DRIVER_ERRORS as exc:
            raise CommitFailed(
                f"commit of {partition.topic}/{partition.partition} at offset {next_offset} for group "
                f"{self.group} failed: {_reason(exc)}"
            ) from None

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self._stopping.set()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                async with asyncio.timeout(self._settings.timeout_seconds):
                    await consumer.stop()
            except _DRIVER_ERRORS as exc:
                logger.warning(
                    "kafka consumer did not close cleanly: group=%s error=%s", self.group, _reason(exc)
                )
