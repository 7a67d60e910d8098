"""The aiokafka options built from the settings (SASL and TLS cannot be run against noida-db)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from facteur.bus import build_broker
from facteur.bus.kafka import KafkaBroker, client_options, producer_options
from facteur.bus.memory import MemoryBroker
from facteur.errors import ConfigError
from facteur.settings import BusSettings, KafkaSettings


def kafka(**values: object) -> KafkaSettings:
    return KafkaSettings.model_validate({"brokers": ["k0:9092", "k1:9093"], **values})


def test_plaintext_by_default() -> None:
    options = client_options(kafka())
    assert options == {
        "bootstrap_servers": ["k0:9092", "k1:9093"],
        "client_id": "facteur",
        "security_protocol": "PLAINTEXT",
    }


def test_the_producer_waits_for_all_replicas_and_is_idempotent() -> None:
    options = producer_options(kafka(timeout_seconds=3, compression="none", client_id="facteur-7"))
    assert options["acks"] == "all"
    assert options["enable_idempotence"] is True
    assert options["compression_type"] is None
    assert options["request_timeout_ms"] == 3000
    assert options["client_id"] == "facteur-7"
    assert producer_options(kafka())["compression_type"] == "gzip"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_mechanisms(mechanism: str) -> None:
    options = client_options(kafka(sasl={"mechanism": mechanism, "username": "u", "password": "p"}))
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")


def test_tls_with_sasl_and_client_certificate(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    options = client_options(
        kafka(
            sasl={"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"},
            tls={"enabled": True, "ca_file": cert, "cert_file": cert, "key_file": key},
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] == 1


def test_tls_without_sasl_uses_the_system_trust_store() -> None:
    options = client_options(kafka(tls={"enabled": True}))
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"invalid setting bus\.kafka\.tls: cannot load the TLS files"):
        client_options(kafka(tls={"enabled": True, "ca_file": bogus}))


def test_compression_without_its_codec_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from facteur.bus import kafka as kafka_module

    monkeypatch.setitem(kafka_module._CODECS, "zstd", lambda: False)
    with pytest.raises(ConfigError, match=r"invalid setting bus\.kafka\.compression: zstd needs the cramjam"):
        KafkaBroker(kafka(compression="zstd"))


def test_build_broker_follows_bus_kind() -> None:
    assert isinstance(build_broker(BusSettings()), MemoryBroker)
    broker = build_broker(BusSettings(kind="kafka", kafka=kafka()))
    assert isinstance(broker, KafkaBroker)
    assert broker.description == "kafka k0:9092,k1:9093"
