"""Only the Kafka adapter may import the Kafka driver: the port, the in-process broker and the listener stay
driver-free (ARCHITECTURE.md §9)."""

from __future__ import annotations

import pytest

from tests.unit.test_architecture import DRIVERS, SRC, imported_roots

DRIVER_FREE = ["bus/__init__.py", "bus/port.py", "bus/memory.py", "bus/codex_listener.py"]


@pytest.mark.parametrize("name", DRIVER_FREE)
def test_bus_modules_import_no_driver(name: str) -> None:
    assert not imported_roots(SRC / name) & DRIVERS


def test_the_kafka_adapter_is_where_aiokafka_lives() -> None:
    assert "aiokafka" in imported_roots(SRC / "bus" / "kafka.py")
