"""The ``bus`` settings: defaults, sources, the seeds' names, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from facteur.errors import ConfigError
from facteur.settings import load_settings


def test_defaults_are_the_embedded_bus_and_the_seeds_topics() -> None:
    bus = load_settings(environ={}).bus
    assert bus.kind == "memory"
    assert bus.consume_codex_tasks is False
    assert bus.codex_listener.group == "facteur-codex-listener"
    assert bus.kafka.client_id == "facteur"
    assert bus.kafka.compression == "gzip"
    assert bus.topics.model_dump() == {
        "raw_webhooks": "github.webhook.events",
        "codex_tasks_json": "github.codex.tasks",
        "codex_tasks": "github.issues.codex.tasks",
        "codex_intent": "codex.intent",
        "codex_plan": "codex.plan",
        "codex_execution": "codex.execution",
        "codex_review": "codex.review",
        "codex_deploy": "codex.deploy",
        "codex_telemetry": "codex.telemetry",
        "discord_commands": "discord.commands.incoming",
    }


def test_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text(
        """
bus:
  kind: kafka
  kafka:
    brokers: [kafka-0:9092, kafka-1:9092]
    sasl: {mechanism: scram-sha-512, username: facteur, password: file-secret}
  topics:
    codex_tasks: my.tasks
  consume_codex_tasks: true
"""
    )
    bus = load_settings(
        config,
        environ={"FACTEUR_BUS__KAFKA__COMPRESSION": "none", "FACTEUR_BUS__CODEX_LISTENER__GROUP": "g2"},
    ).bus
    assert bus.kafka.brokers == ["kafka-0:9092", "kafka-1:9092"]
    assert bus.kafka.sasl.mechanism == "SCRAM-SHA-512"
    assert bus.topics.codex_tasks == "my.tasks"
    assert bus.topics.raw_webhooks == "github.webhook.events"
    assert bus.kafka.compression == "none"
    assert bus.codex_listener.group == "g2"
    assert bus.consume_codex_tasks is True


def test_brokers_as_a_comma_separated_string() -> None:
    bus = load_settings(
        environ={"FACTEUR_BUS__KIND": "kafka", "FACTEUR_BUS__KAFKA__BROKERS": " a:9092 , b.example:19092,"}
    ).bus
    assert bus.kafka.brokers == ["a:9092", "b.example:19092"]


def test_the_seeds_codex_listener_names_select_kafka() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_CODEX_LISTENER_BROKERS": "kafka:9092",
            "FACTEUR_CODEX_LISTENER_TOPIC": "github.issues.codex.tasks.v2",
            "FACTEUR_CODEX_LISTENER_GROUP_ID": "old-group",
            "FACTEUR_CODEX_LISTENER_SASL_MECHANISM": "plain",
            "FACTEUR_CODEX_LISTENER_SASL_USERNAME": "facteur",
            "FACTEUR_CODEX_LISTENER_SASL_PASSWORD": "pl41n-secret",
        }
    )
    bus = settings.bus
    assert bus.kind == "kafka"
    assert bus.kafka.brokers == ["kafka:9092"]
    assert bus.topics.codex_tasks == "github.issues.codex.tasks.v2"
    assert bus.codex_listener.group == "old-group"
    assert bus.kafka.sasl.mechanism == "PLAIN"
    assert "pl41n-secret" in settings.secrets()
    assert settings.redacted()["bus"]["kafka"]["sasl"]["password"] == "********"
    assert "pl41n-secret" not in repr(settings) + str(settings.redacted())


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"FACTEUR_BUS__KIND": "kafka"},
            "invalid setting bus: bus.kafka.brokers is empty.* \\(from env FACTEUR_BUS__KIND\\)",
        ),
        ({"FACTEUR_BUS__KIND": "rabbitmq"}, "invalid setting bus.kind: .*'memory' or 'kafka'"),
        ({"FACTEUR_BUS__KAFKA__BROKERS": "kafka"}, "invalid setting bus.kafka.brokers: expected host:port"),
        (
            {"FACTEUR_BUS__KAFKA__SASL__MECHANISM": "GSSAPI"},
            "invalid setting bus.kafka.sasl.mechanism: .*'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'",
        ),
        (
            {
                "FACTEUR_BUS__KAFKA__SASL__MECHANISM": "SCRAM-SHA-256",
                "FACTEUR_BUS__KAFKA__SASL__USERNAME": "u",
            },
            "invalid setting bus.kafka.sasl: bus.kafka.sasl.password required with SASL mechanism SCRAM",
        ),
        (
            {"FACTEUR_BUS__KAFKA__SASL__PASSWORD": "pw"},
            "invalid setting bus.kafka.sasl: .*bus.kafka.sasl.mechanism is not",
        ),
        (
            {"FACTEUR_BUS__KAFKA__TLS__ENABLED": "true", "FACTEUR_BUS__KAFKA__TLS__CA_FILE": "/no/ca.pem"},
            "invalid setting bus.kafka.tls.ca_file: no such file \\(got '/no/ca.pem'\\)",
        ),
        ({"FACTEUR_BUS__KAFKA__COMPRESSION": "brotli"}, "invalid setting bus.kafka.compression"),
        ({"FACTEUR_BUS__KAFKA__TIMEOUT_SECONDS": "0"}, "invalid setting bus.kafka.timeout_seconds"),
        (
            {"FACTEUR_BUS__TOPICS__CODEX_TASKS": "has space"},
            "invalid setting bus.topics.codex_tasks: not a Kafka",
        ),
        ({"FACTEUR_BUS__TOPICS__CODEX_TASK": "x"}, "unknown setting bus.topics.codex_task"),
        ({"FACTEUR_BUS__CONSUME_CODEX_TASKS": "maybe"}, "invalid setting bus.consume_codex_tasks"),
    ],
)
def test_invalid_bus_settings_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_a_sasl_password_is_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"FACTEUR_BUS__KAFKA__SASL__PASSWORD": "hunter2-kafka"})
    assert "hunter2-kafka" not in caught.value.message


def test_tls_files_must_be_enabled_and_paired(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    with pytest.raises(
        ConfigError, match=r"bus\.kafka\.tls\.ca_file set but bus\.kafka\.tls\.enabled is false"
    ):
        load_settings(environ={"FACTEUR_BUS__KAFKA__TLS__CA_FILE": str(cert)})
    with pytest.raises(ConfigError, match=r"cert_file and bus\.kafka\.tls\.key_file go together"):
        load_settings(
            environ={"FACTEUR_BUS__KAFKA__TLS__ENABLED": "1", "FACTEUR_BUS__KAFKA__TLS__CERT_FILE": str(cert)}
        )
    tls = load_settings(
        environ={
            "FACTEUR_BUS__KAFKA__TLS__ENABLED": "1",
            "FACTEUR_BUS__KAFKA__TLS__CA_FILE": str(cert),
            "FACTEUR_BUS__KAFKA__TLS__CERT_FILE": str(cert),
            "FACTEUR_BUS__KAFKA__TLS__KEY_FILE": str(key),
        }
    ).bus.kafka.tls
    assert (tls.enabled, tls.ca_file, tls.cert_file, tls.key_file) == (True, cert, cert, key)
