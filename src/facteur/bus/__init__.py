"""The message bus: the port (:mod:`.port`), the in-process and Kafka brokers, and the consumers built on
them (:mod:`.codex_listener`). See docs/bus.md."""

from __future__ import annotations

from facteur.bus.port import Broker
from facteur.settings import BusSettings


def build_broker(settings: BusSettings) -> Broker:
    """The broker ``bus.kind`` names, not started; :class:`facteur.errors.ConfigError` if unusable."""
    if settings.kind == "kafka":
        from facteur.bus.kafka import KafkaBroker

        return KafkaBroker(settings.kafka)
    from facteur.bus.memory import MemoryBroker

    return MemoryBroker()
