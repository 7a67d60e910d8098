"""Settings: one frozen object, read once at start-up.

Sources, later ones winning: defaults, the YAML file (``--config PATH`` or ``FACTEUR_CONFIG_FILE``), the
seeds' environment names (``FACTEUR_POSTGRES_DSN``, ``FACTEUR_CODEX_ENABLE_PLANNING_ORCHESTRATION``, …), then
``FACTEUR_<SECTION>__<KEY>`` variables with ``__`` for nesting. Invalid settings raise :class:`ConfigError`
with one line per problem naming the key and where its value came from. See docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from facteur.domain.approvals import ApprovalNeed, approval_need
from facteur.domain.ideas import is_repository
from facteur.domain.lifecycle import DEFAULT_PIPELINE, Pipeline, pipeline_for
from facteur.domain.stages import Stage
from facteur.errors import ConfigError

ENV_PREFIX = "FACTEUR_"
CONFIG_FILE_ENV = "FACTEUR_CONFIG_FILE"
DEFAULT_DATABASE_URL = "sqlite:///.facteur/facteur.db"
_TRUTHY = {"1", "true", "yes", "on"}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    #: bearer token for ``/api/*``; required when the server binds anything but loopback
    api_token: SecretStr | None = None
    #: key of the per-run callback tokens (HMAC of the run id); unset, one is derived from api_token, else
    #: generated at start-up (tokens then change with every restart)
    callback_secret: SecretStr | None = None
    #: where stage runs reach this server for their callbacks; default ``http://<host>:<port>``
    public_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    #: largest request body accepted on /codex/tasks
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)


class DatabaseSettings(_Section):
    url: str = DEFAULT_DATABASE_URL
    pool_size: int = Field(default=10, ge=1, le=200)
    #: seconds a statement may wait for a connection or a lock before the store counts as unavailable
    timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.split("+")[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:/// or postgresql://")
        return value

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (mask_url(value) if name == "url" and isinstance(value, str) else value)

    @property
    def is_postgres(self) -> bool:
        return urlsplit(self.url).scheme.split("+")[0] in {"postgresql", "postgres"}


class CodexDispatchSettings(_Section):
    #: submit a workflow for planning-stage tasks received on /codex/tasks
    planning_enabled: bool = True


class LocalExecutorSettings(_Section):
    workdir: Path = Path(".facteur/runs")
    max_concurrency: int = Field(default=2, ge=1, le=256)
    #: split like a shell line, then ``{stage}``, ``{event_file}``, ``{run_id}``, ``{workdir}`` are filled per
    #: argument; no shell ever runs it
    command: str = "facteur stage {stage} --event {event_file}"
    #: run Facteur's own stage runner (a command ``facteur stage …``) in processes forked from a warm
    #: interpreter that has imported it once, instead of starting a new interpreter per run
    warm_stage_host: bool = True


class ExecutorSettings(_Section):
    kind: Literal["local", "argo", "none"] = "local"
    local: LocalExecutorSettings = LocalExecutorSettings()


DEFAULT_TEMPLATES: dict[str, str] = {
    Stage.PLANNING.value: "github-codex-planning",
    Stage.IMPLEMENTATION.value: "github-codex-implementation",
    Stage.REVIEW.value: "github-codex-review",
}


class ArgoSettings(_Section):
    namespace: str = "argo-workflows"
    service_account: str | None = None
    #: WorkflowTemplate per stage; stages not named keep their defaults
    templates: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    #: extra workflow parameters passed to every workflow
    parameters: dict[str, str] = Field(default_factory=dict)
    #: kubeconfig file; else KUBECONFIG, the in-cluster service account, then ~/.kube/config
    kubeconfig: Path | None = None
    request_timeout_seconds: float = Field(default=15.0, gt=0)

    @field_validator("templates")
    @classmethod
    def _known_stages(cls, value: dict[str, str]) -> dict[str, str]:
        known = {stage.value for stage in Stage}
        unknown = sorted(set(value) - known)
        if unknown:
            expected = ", ".join(sorted(known))
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}: expected some of {expected}")
        return {**DEFAULT_TEMPLATES, **value}

    @field_validator("parameters")
    @classmethod
    def _reserved_parameters(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted({"eventBody", "rawEvent"} & set(value))
        if reserved:
            raise ValueError(f"{', '.join(reserved)} are set by Facteur for every workflow")
        return value


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


# --- bus -------------------------------------------------------------------------------------------------

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BROKER = re.compile(r"^[^\s:/]+:\d{1,5}$")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSaslSettings(_Section):
    #: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; unset means no SASL
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value.strip().upper() or None
        return value

    @model_validator(mode="after")
    def _credentials(self) -> KafkaSaslSettings:
        if self.mechanism is None:
            if self.username or self.password is not None:
                raise PydanticCustomError(
                    "sasl_mechanism_missing",
                    "bus.kafka.sasl.username/password are set but bus.kafka.sasl.mechanism is not: "
                    "set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                )
            return self
        missing = [
            name
            for name, value in (("username", self.username), ("password", self.password))
            if not (value.get_secret_value() if isinstance(value, SecretStr) else value)
        ]
        if missing:
            raise PydanticCustomError(
                "sasl_credentials_missing",
                "bus.kafka.sasl.{missing} required with SASL mechanism {mechanism}",
                {"missing": " and ".join(missing), "mechanism": self.mechanism},
            )
        return self


class KafkaTlsSettings(_Section):
    enabled: bool = False
    #: CA bundle to verify the brokers with; else the system's trust store
    ca_file: Path | None = None
    #: client certificate and key for mutual TLS (both or neither)
    cert_file: Path | None = None
    key_file: Path | None = None

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise PydanticCustomError("file_missing", "no such file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KafkaTlsSettings:
        files = [name for name in ("ca_file", "cert_file", "key_file") if getattr(self, name) is not None]
        if files and not self.enabled:
            raise PydanticCustomError(
                "tls_disabled",
                "bus.kafka.tls.{files} set but bus.kafka.tls.enabled is false",
                {"files": "/".join(files)},
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise PydanticCustomError(
                "tls_pair", "bus.kafka.tls.cert_file and bus.kafka.tls.key_file go together: set both"
            )
        return self


class KafkaSettings(_Section):
    #: bootstrap brokers, ``host:port``; a comma-separated string is accepted too
    brokers: list[str] = Field(default_factory=list)
    client_id: str = Field(default="facteur", min_length=1)
    #: producer compression; lz4, snappy and zstd need the ``cramjam`` package (``aiokafka[lz4]``)
    compression: Literal["none", "gzip", "lz4", "snappy", "zstd"] = "gzip"
    #: seconds a connection, publish or commit may wait for the brokers before the bus counts as unavailable
    timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    sasl: KafkaSaslSettings = KafkaSaslSettings()
    tls: KafkaTlsSettings = KafkaTlsSettings()

    @field_validator("brokers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        bad = [broker for broker in value if not _BROKER.match(broker)]
        if bad:
            raise PydanticCustomError(
                "broker_address", "expected host:port, not {bad}", {"bad": ", ".join(repr(b) for b in bad)}
            )
        return value


class TopicSettings(_Section):
    """Topic names; the defaults are the seeds' (ARCHITECTURE.md §5)."""

    raw_webhooks: str = "github.webhook.events"
    codex_tasks_json: str = "github.codex.tasks"
    codex_tasks: str = "github.issues.codex.tasks"
    codex_intent: str = "codex.intent"
    codex_plan: str = "codex.plan"
    codex_execution: str = "codex.execution"
    codex_review: str = "codex.review"
    codex_deploy: str = "codex.deploy"
    codex_telemetry: str = "codex.telemetry"
    discord_commands: str = "discord.commands.incoming"

    @field_validator("*")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise PydanticCustomError(
                "topic_name", "not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')"
            )
        return value


class CodexListenerSettings(_Section):
    #: consumer group of ``facteur codex-listen`` and of the consumer in ``facteur serve``
    group: str = Field(default="facteur-codex-listener", min_length=1)


class OutboxSettings(_Section):
    #: run the relay in ``facteur serve`` (one replica at a time holds its lease and publishes)
    relay_enabled: bool = True
    #: messages read and published per round
    batch_size: int = Field(default=500, ge=1, le=10_000)
    #: seconds between looks for messages written by other processes (this process's wake the relay at once)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    #: milliseconds the relay lingers after a wake-up, so that one round carries what arrives meanwhile
    linger_ms: float = Field(default=5.0, ge=0, le=1000)
    #: seconds a relay's lease lasts; another replica takes over this long after the holder stopped
    lease_seconds: float = Field(default=15.0, ge=1, le=600)
    #: longest pause between attempts while the broker is unavailable (back-off doubles from 0.1 s)
    max_backoff_seconds: float = Field(default=30.0, ge=0.1, le=600)
    #: hours published messages stay in the outbox before they are pruned
    retention_hours: float = Field(default=168.0, gt=0)


class BusSettings(_Section):
    kind: Literal["memory", "kafka"] = "memory"
    outbox: OutboxSettings = OutboxSettings()
    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    codex_listener: CodexListenerSettings = CodexListenerSettings()
    #: ``facteur serve`` consumes ``bus.topics.codex_tasks`` and ingests each task like POST /codex/tasks
    consume_codex_tasks: bool = False

    @model_validator(mode="after")
    def _brokers_for_kafka(self) -> BusSettings:
        if self.kind == "kafka" and not self.kafka.brokers:
            raise PydanticCustomError(
                "brokers_missing",
                "bus.kafka.brokers is empty: list the brokers (host:port) when kind is kafka",
            )
        return self


class GitHubSettings(_Section):
    """GitHub intake (``POST /webhooks/github``) and the GitHub forge adapter."""

    #: HMAC-SHA256 secret of webhook deliveries (also ``GITHUB_WEBHOOK_SECRET``); unset, deliveries get 503
    webhook_secret: SecretStr | None = None
    #: personal access or installation token (also ``GITHUB_TOKEN``); GitHub App auth wins when configured
    token: SecretStr | None = None
    #: GitHub App id; with ``private_key`` the forge authenticates as the app's installation
    app_id: int | None = Field(default=None, ge=1)
    #: the App's PEM private key, inline or ``@path/to/key.pem``
    private_key: SecretStr | None = None
    #: REST root; ``https://<host>/api/v3`` for GitHub Enterprise Server
    api_url: str = "https://api.github.com"
    #: reaction posted on an issue when planning starts
    ack_reaction: Literal["+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"] = "+1"
    #: largest webhook body accepted (GitHub caps payloads at 25 MiB)
    max_body_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    #: seconds one GitHub API call may take, retries included
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: GitHub API calls in flight at once, across the process
    max_concurrency: int = Field(default=4, ge=1, le=64)
    #: attempts for a call answered 5xx or rate-limited (back-off doubles from 0.5 s)
    max_attempts: int = Field(default=4, ge=1, le=10)
    user_agent: str = "facteur"
    #: body of the comment that hands a draft pull request over to review when it is undrafted
    review_handoff_comment: str = "@codex review"

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError("expected an http(s) URL such as https://api.github.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _app_pair(self) -> GitHubSettings:
        if (self.app_id is None) != (self.private_key is None):
            raise PydanticCustomError(
                "app_pair", "github.app_id and github.private_key go together: set both or neither"
            )
        return self


def _logins(value: Any) -> Any:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return [str(v).strip().lower() for v in value if str(v).strip()]
    return value


class CodexSettings(_Section):
    """Who and what starts codex stages from GitHub (reference §2.3 to §2.6)."""

    #: logins whose issues start planning and whose ``execute plan`` starts implementation (comma list in env)
    trigger_logins: list[str] = Field(default_factory=list)
    #: the automation's own login: its plan comments start implementation; other bots are ignored
    workflow_login: str = "github-actions[bot]"
    #: ``@<review_handle> review`` on a pull request comment starts a review run
    review_handle: str = Field(
        default="tuslagch", min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*(\[bot\])?$"
    )
    #: comment body (trimmed, exact) that starts implementation of the latest plan
    implementation_trigger: str = Field(default="execute plan", min_length=1)
    #: head branches are ``<branch_prefix><issue>-<8 chars of the delivery id>``
    branch_prefix: str = Field(default="codex/issue-", min_length=1)
    #: base branch when the payload names no default branch
    base_branch: str = Field(default="main", min_length=1)

    @field_validator("trigger_logins", mode="before")
    @classmethod
    def _normal_logins(cls, value: Any) -> Any:
        return _logins(value)

    @field_validator("workflow_login")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()


class DiscordSettings(_Section):
    """Discord interactions (``POST /webhooks/discord``) and ``facteur discord register-commands``."""

    #: the application's Ed25519 public key (hex); unset, interactions get 503
    public_key: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    bot_token: SecretStr | None = None
    application_id: str | None = Field(default=None, pattern=r"^[0-9]+$")
    guild_id: str | None = Field(default=None, pattern=r"^[0-9]+$")
    #: the category stage channels go in while it has room (``DISCORD_CATEGORY_ID``); else one named
    #: ``Codex Channel - …`` with room, else a new one
    category_id: str | None = Field(default=None, pattern=r"^[0-9]+$")
    #: answers to interactions are visible only to the person who asked
    ephemeral: bool = True
    api_url: str = "https://discord.com/api/v10"


def _repository_keys(value: Mapping[str, Any], key: str) -> None:
    seen: dict[str, str] = {}
    for name in value:
        if not is_repository(name):
            raise ValueError(f"{key}: {name!r} is not owner/repo")
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise ValueError(f"{key}: {other!r} and {name!r} name the same repository")


class PipelineSettings(_Section):
    #: the stages after the tasks, in order: qa_review (or review), integration, deployment, monitoring
    stages: tuple[str, ...] = ()

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        Pipeline.parse(value)  # InvalidPipeline is a ValueError: reported against the key
        return value


class ApprovalSettings(_Section):
    """When a plan waits for a person (docs/lifecycle.md)."""

    #: every plan waits for approval
    required: bool = False
    #: per repository (``owner/repo``), overriding ``required``
    repositories: dict[str, bool] = Field(default_factory=dict)
    #: an idea carrying one of these risk labels always waits for approval
    high_risk_labels: list[str] = Field(
        default_factory=lambda: ["database-migration", "security", "auth", "infrastructure"]
    )

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, value: dict[str, bool]) -> dict[str, bool]:
        _repository_keys(value, "approvals.repositories")
        return value

    def need(self, repository: str, risk_labels: Collection[str]) -> ApprovalNeed:
        """Whether a plan of an idea of ``repository`` with ``risk_labels`` waits for a person, and why."""
        return approval_need(
            repository=repository,
            risk_labels=risk_labels,
            required=self.required,
            repositories=self.repositories,
            high_risk_labels=self.high_risk_labels,
        )


class SchedulerSettings(_Section):
    #: false: this replica answers the API and callbacks but dispatches nothing and does not reconcile
    enabled: bool = True
    #: runs in flight at once, across all ideas
    max_concurrent: int = Field(default=4, ge=1, le=10_000)
    #: runs in flight at once per repository
    max_per_repository: int = Field(default=2, ge=1, le=10_000)
    #: heavy tasks' runs in flight at once
    max_heavy: int = Field(default=1, ge=1, le=10_000)
    #: attempts of a task before its idea fails
    max_attempts: int = Field(default=3, ge=1, le=100)
    #: back-off before the second attempt; doubles with each further attempt
    retry_backoff_seconds: float = Field(default=30.0, ge=0, le=86_400)
    max_backoff_seconds: float = Field(default=900.0, ge=0, le=86_400)
    #: a run without a heartbeat for this long is stuck
    heartbeat_timeout_seconds: float = Field(default=600.0, gt=0)
    #: what happens to a stuck run: ``retry`` (it counts as failed: its task is retried while attempts
    #: remain) or ``cancel`` (the run and its task are cancelled)
    stuck_action: Literal["retry", "cancel"] = "retry"
    #: what a task that used its last attempt does: ``fail`` its idea, or ``block`` (a person retries it)
    on_exhausted: Literal["fail", "block"] = "fail"
    #: seconds between reconciler sweeps (runs against their executor, lost reactions, expired claims)
    reconcile_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: safety-net pass of the scheduler (it also wakes on every change)
    poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    #: how long a replica's claim on a task holds before another may take it
    claim_seconds: float = Field(default=60.0, ge=1, le=3600)


class AgentPriceSettings(_Section):
    """One model's price, in USD per million tokens."""

    input_usd_per_million: float = Field(ge=0)
    output_usd_per_million: float = Field(ge=0)
    #: cached input tokens; unset, they cost the input price
    cached_input_usd_per_million: float | None = Field(default=None, ge=0)


class AgentSettings(_Section):
    """The coding agent a stage run drives (docs/agents.md)."""

    kind: Literal["codex", "claude", "command"] = "codex"
    #: the program, split like a shell line (no shell runs it); default ``codex`` or ``claude``; required
    #: for ``command``
    command: str | None = None
    #: codex ``--model``, claude ``--model``; command: ``FACTEUR_AGENT_MODEL``; also picks the price
    model: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]*$")
    #: more arguments after Facteur's own (a list, or one string split like a shell line)
    extra_args: list[str] = Field(default_factory=list)
    #: codex ``--sandbox``
    sandbox: Literal["read-only", "workspace-write", "danger-full-access"] = "workspace-write"
    #: codex ``approval_policy`` (a run has nobody to ask: keep ``never``)
    approval_policy: Literal["untrusted", "on-failure", "on-request", "never"] = "never"
    #: codex ``--dangerously-bypass-approvals-and-sandbox`` instead of sandbox and approval_policy (only
    #: inside an isolated container, as the seeds' pods do)
    bypass_sandbox: bool = False
    #: claude ``--permission-mode``
    permission_mode: Literal["default", "acceptEdits", "plan", "bypassPermissions"] = "acceptEdits"
    #: claude ``--allowedTools`` (a list, or one comma-separated string)
    allowed_tools: list[str] = Field(default_factory=list)
    #: no output for this long: the agent's process group is killed (timed out); 0 disables
    idle_timeout_seconds: float = Field(default=1800.0, ge=0)
    #: an agent still running this long after its final event is terminated
    grace_seconds: float = Field(default=120.0, ge=0)
    #: the longest a run of the agent may take; 0 disables
    timeout_seconds: float = Field(default=14_400.0, ge=0)
    #: between SIGTERM and SIGKILL when the agent's process group is stopped
    terminate_seconds: float = Field(default=5.0, gt=0, le=300)
    #: per model (exact name, longest prefix, or ``*``): USD per million tokens
    prices: dict[str, AgentPriceSettings] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _command_line(cls, value: str | None) -> str | None:
        import shlex

        if value is None:
            return None
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split like a shell line: {exc}") from None
        if not argv:
            raise ValueError("is empty: name the program to run, or leave it unset")
        return value

    @field_validator("extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: Any) -> Any:
        import shlex

        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"cannot be split like a shell line: {exc}") from None
        return value

    @field_validator("allowed_tools", mode="before")
    @classmethod
    def _split_tools(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_tools")
    @classmethod
    def _tool_names(cls, value: list[str]) -> list[str]:
        bad = [tool for tool in value if not tool.strip() or tool.startswith("-")]
        if bad:
            raise ValueError(f"not tool names: {', '.join(repr(t) for t in bad)}")
        return value

    @field_validator("prices")
    @classmethod
    def _price_names(cls, value: dict[str, AgentPriceSettings]) -> dict[str, AgentPriceSettings]:
        if any(not name.strip() for name in value):
            raise ValueError("a model name is empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AgentSettings:
        if self.kind == "command" and self.command is None:
            raise PydanticCustomError(
                "agent_command_missing",
                "agent.command is required when agent.kind is command: the program to run",
            )
        # arguments Facteur passes itself
        own = {
            "codex": "--json --experimental-json resume --last",
            "claude": "-p --print --output-format --input-format --resume -r --continue -c",
            "command": "",
        }[self.kind].split()
        repeated = [arg for arg in self.extra_args if arg.split("=", 1)[0] in own]
        if repeated:
            raise PydanticCustomError(
                "agent_own_args",
                "agent.extra_args repeats {args}: Facteur passes them itself for kind {kind}",
                {"args": ", ".join(repeated), "kind": self.kind},
            )
        return self


class TemplateSettings(_Section):
    """The stage WorkflowTemplates ``facteur templates render`` writes (docs/templates.md)."""

    #: image of the stage pods: Python, Facteur, git, Node.js and the codex CLI (deploy/docker)
    image: str = Field(default="facteur-agent-runner:latest", pattern=r"^[^\s{}$]+$")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    #: the stage container's requests and limits (Kubernetes quantities; empty: not set)
    cpu_request: str = Field(default="1", pattern=r"^([0-9]+(\.[0-9]+)?m?)?$")
    memory_request: str = Field(default="2Gi", pattern=r"^([0-9]+(\.[0-9]+)?([kMGTPE]i?)?)?$")
    cpu_limit: str = Field(default="4", pattern=r"^([0-9]+(\.[0-9]+)?m?)?$")
    memory_limit: str = Field(default="8Gi", pattern=r"^([0-9]+(\.[0-9]+)?([kMGTPE]i?)?)?$")
    #: environment variable of the stage container -> ``<secret>/<key>`` (``env.valueFrom.secretKeyRef``);
    #: laid over these defaults, an empty value removes one
    secrets: dict[str, str] = Field(
        default_factory=lambda: {
            "GH_TOKEN": "github-token/token",
            "GITHUB_TOKEN": "github-token/token",
            # codex exec reads CODEX_API_KEY, other OpenAI clients OPENAI_API_KEY
            "CODEX_API_KEY": "facteur-agent-keys/openai-api-key",
            "OPENAI_API_KEY": "facteur-agent-keys/openai-api-key",
            "ANTHROPIC_API_KEY": "facteur-agent-keys/anthropic-api-key",
            "FACTEUR_API_TOKEN": "facteur-api-token/token",
        }
    )
    #: variables of ``secrets`` a pod may start without (the secret or key is missing)
    optional_secrets: list[str] = Field(
        default_factory=lambda: ["CODEX_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "FACTEUR_API_TOKEN"]
    )
    #: more plain environment variables of the stage container
    env: dict[str, str] = Field(default_factory=dict)
    #: uid and gid of the stage containers: the agent-runner image's user
    run_as_user: int = Field(default=10001, ge=1)
    #: a privileged Docker-in-Docker sidecar, reached at DOCKER_HOST=tcp://127.0.0.1:2375
    docker_sidecar: bool = False
    docker_image: str = Field(default="docker:27-dind", pattern=r"^[^\s{}$]+$")
    #: the implementation workspace: a claim of this size per workflow (volumeClaimTemplates) …
    resume_storage: str = Field(default="10Gi", pattern=r"^[0-9]+(\.[0-9]+)?([kMGTPE]i?)?$")
    resume_storage_class: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    #: … or this existing claim, shared by every implementation run (ReadWriteMany)
    resume_claim: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    #: stages whose workflows hold the semaphore
    heavy_stages: list[str] = Field(default_factory=lambda: [Stage.IMPLEMENTATION.value])
    #: ConfigMap holding the semaphore (rendered beside the templates); empty: no semaphore
    semaphore_config_map: str = Field(
        default="facteur-stage-semaphore", pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"
    )
    semaphore_key: str = Field(default="heavy", pattern=r"^[-._a-zA-Z0-9]+$")
    #: workflows of heavy stages running at once
    semaphore_limit: int = Field(default=4, ge=1)
    #: Argo's retries of a stage pod within its workflow (the orchestrator retries tasks on its own)
    retry_limit: int = Field(default=2, ge=0, le=20)
    retry_policy: Literal["Always", "OnFailure", "OnError", "OnTransientError"] = "OnError"
    #: first wait between retries (``30s``, ``2m``, ``1h``), multiplied by the factor each time
    retry_backoff: str = Field(default="30s", pattern=r"^[0-9]+(s|m|h)?$")
    retry_backoff_factor: int = Field(default=2, ge=1, le=10)

    @field_validator("optional_secrets", "heavy_stages", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("secrets", "env")
    @classmethod
    def _variable_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [name for name in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name)]
        if bad:
            raise ValueError(f"not environment variable names: {', '.join(repr(b) for b in bad)}")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [
            ref
            for ref in value.values()
            if ref and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[-._a-zA-Z0-9]+", ref)
        ]
        if bad:
            raise ValueError(f"expected <secret>/<key>, not {', '.join(repr(b) for b in bad)}")
        defaults = cls.model_fields["secrets"].get_default(call_default_factory=True)
        return {name: ref for name, ref in {**defaults, **value}.items() if ref}

    @field_validator("heavy_stages")
    @classmethod
    def _stages(cls, value: list[str]) -> list[str]:
        known = {stage.value for stage in Stage}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown stage(s) {', '.join(unknown)}: expected some of {', '.join(sorted(known))}"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TemplateSettings:
        unknown = sorted(set(self.optional_secrets) - set(self.secrets))
        if unknown and "optional_secrets" in self.model_fields_set:
            raise PydanticCustomError(
                "optional_secrets_unknown",
                "templates.optional_secrets names {names}, not in templates.secrets",
                {"names": ", ".join(unknown)},
            )
        both = sorted(set(self.env) & {*self.secrets, "DOCKER_HOST"})
        if both:
            raise PydanticCustomError(
                "env_repeated",
                "templates.env sets {names}, which the template sets itself (templates.secrets, DOCKER_HOST)",
                {"names": ", ".join(both)},
            )
        return self


class LocalForgeSettings(_Section):
    #: the local forge's directory: its records (``forge.sqlite3``) and bare repositories
    #: (``repos/<owner>/<name>.git``)
    root: Path = Path(".facteur/forge")


class ForgeSettings(_Section):
    """Where stage runs publish their work (plan comments, branches, pull requests, progress)."""

    #: ``github`` (``github.token`` or a GitHub App), ``local`` (``forge.local``), or ``auto``: GitHub when
    #: it is configured, else the local forge
    kind: Literal["auto", "github", "local"] = "auto"
    local: LocalForgeSettings = LocalForgeSettings()


class StageSettings(_Section):
    """How ``facteur stage`` runs inside a workflow (a local subprocess or an Argo pod)."""

    #: where the repository is checked out; default ``repo`` in the stage's working directory
    workspace: Path | None = None
    #: where the stage writes its logs and artifacts; default the stage's working directory
    output_dir: Path | None = None
    #: where failed implementation attempts leave their resume archive for the next attempt (Argo: the
    #: resume volume); default ``.facteur/resume``
    resume_dir: Path = Path(".facteur/resume")
    #: seconds between ``heartbeat`` callbacks
    heartbeat_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: attempts to reach the callback URL per event (with back-off) before the stage gives up on it
    callback_attempts: int = Field(default=5, ge=1, le=20)
    callback_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: agent runs per plan: the first, then one more with the validation error fed back
    plan_attempts: int = Field(default=2, ge=1, le=5)
    #: attempts to find or open the draft pull request of an implementation before the run fails
    pull_request_attempts: int = Field(default=3, ge=1, le=10)
    pull_request_backoff_seconds: float = Field(default=2.0, ge=0, le=300)
    #: author and committer of the commits a stage makes
    git_user_name: str = Field(default="Facteur", min_length=1)
    git_user_email: str = Field(default="facteur@localhost", pattern=r"^[^\s<>]+@[^\s<>]+$")
    #: seconds one git command may take (clone, fetch, push)
    git_timeout_seconds: float = Field(default=600.0, gt=0)


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    database: DatabaseSettings = DatabaseSettings()
    codex_dispatch: CodexDispatchSettings = CodexDispatchSettings()
    executor: ExecutorSettings = ExecutorSettings()
    argo: ArgoSettings = ArgoSettings()
    logging: LoggingSettings = LoggingSettings()
    bus: BusSettings = BusSettings()
    github: GitHubSettings = GitHubSettings()
    codex: CodexSettings = CodexSettings()
    discord: DiscordSettings = DiscordSettings()
    #: per repository (``owner/repo``): the stages after the tasks; others get the default (none)
    pipelines: dict[str, PipelineSettings] = Field(default_factory=dict)
    approvals: ApprovalSettings = ApprovalSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    agent: AgentSettings = AgentSettings()
    templates: TemplateSettings = TemplateSettings()
    forge: ForgeSettings = ForgeSettings()
    stage: StageSettings = StageSettings()

    @field_validator("pipelines")
    @classmethod
    def _pipeline_repositories(cls, value: dict[str, PipelineSettings]) -> dict[str, PipelineSettings]:
        _repository_keys(value, "pipelines")
        return value

    def pipeline_of(self, repository: str) -> Pipeline:
        return pipeline_for(repository, {k: v.stages for k, v in self.pipelines.items()}, DEFAULT_PIPELINE)

    def exposure_problem(self) -> str | None:
        """Why serving with these settings would expose the API, or None: the API is closed by default
        outside loopback (ARCHITECTURE.md section 7)."""
        if self.server.api_token is None and not is_loopback(self.server.host):
            return (
                f"server.host is {self.server.host!r}, not a loopback address, and server.api_token is not "
                "set: set server.api_token (FACTEUR_SERVER__API_TOKEN) so that /api/* is not open to the "
                "network, or bind 127.0.0.1"
            )
        return None

    def secrets(self) -> list[str]:
        """Secret values that must never be printed or logged."""
        values: list[str] = []
        if self.server.api_token is not None:
            values.append(self.server.api_token.get_secret_value())
        if self.server.callback_secret is not None:
            values.append(self.server.callback_secret.get_secret_value())
        password = urlsplit(self.database.url).password
        if password:
            values.append(password)
        for secret in (
            self.bus.kafka.sasl.password,
            self.github.webhook_secret,
            self.github.token,
            self.github.private_key,
            self.discord.bot_token,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        return [value for value in values if value]

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with secrets masked, for display."""
        data = self.model_dump(mode="json")
        if self.server.api_token is not None:
            data["server"]["api_token"] = MASK
        if self.server.callback_secret is not None:
            data["server"]["callback_secret"] = MASK
        data["database"]["url"] = mask_url(self.database.url)
        if self.bus.kafka.sasl.password is not None:
            data["bus"]["kafka"]["sasl"]["password"] = MASK
        for key in ("webhook_secret", "token", "private_key"):
            if data["github"][key] is not None:
                data["github"][key] = MASK
        if data["discord"]["bot_token"] is not None:
            data["discord"]["bot_token"] = MASK
        return data


MASK = "********"


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``****``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- loading ---------------------------------------------------------------------------------------------

#: the seeds' environment names (reference §3.6) -> setting path
_LEGACY_ENV: dict[str, tuple[str, ...]] = {
    "FACTEUR_POSTGRES_DSN": ("database", "url"),
    "FACTEUR_CODEX_DISPATCH_PLANNING_ENABLED": ("codex_dispatch", "planning_enabled"),
    "FACTEUR_CODEX_ENABLE_PLANNING_ORCHESTRATION": ("codex_dispatch", "planning_enabled"),
    "FACTEUR_ARGO_NAMESPACE": ("argo", "namespace"),
    "FACTEUR_KUBECONFIG": ("argo", "kubeconfig"),
    # codex_listener.* of the seeds (reference §3.6, §3.9)
    "FACTEUR_CODEX_LISTENER_BROKERS": ("bus", "kafka", "brokers"),
    "FACTEUR_CODEX_LISTENER_TOPIC": ("bus", "topics", "codex_tasks"),
    "FACTEUR_CODEX_LISTENER_GROUP_ID": ("bus", "codex_listener", "group"),
    "FACTEUR_CODEX_LISTENER_SASL_MECHANISM": ("bus", "kafka", "sasl", "mechanism"),
    "FACTEUR_CODEX_LISTENER_SASL_USERNAME": ("bus", "kafka", "sasl", "username"),
    "FACTEUR_CODEX_LISTENER_SASL_PASSWORD": ("bus", "kafka", "sasl", "password"),
    "FACTEUR_CODEX_LISTENER_TLS_ENABLED": ("bus", "kafka", "tls", "enabled"),
    # Froussard's environment names (reference §2.3)
    "GITHUB_WEBHOOK_SECRET": ("github", "webhook_secret"),
    "GITHUB_TOKEN": ("github", "token"),
    "GITHUB_ACK_REACTION": ("github", "ack_reaction"),
    "GITHUB_API_BASE_URL": ("github", "api_url"),
    "CODEX_TRIGGER_LOGINS": ("codex", "trigger_logins"),
    "CODEX_WORKFLOW_LOGIN": ("codex", "workflow_login"),
    "CODEX_IMPLEMENTATION_TRIGGER": ("codex", "implementation_trigger"),
    "CODEX_BRANCH_PREFIX": ("codex", "branch_prefix"),
    "CODEX_BASE_BRANCH": ("codex", "base_branch"),
    "DISCORD_PUBLIC_KEY": ("discord", "public_key"),
    "DISCORD_BOT_TOKEN": ("discord", "bot_token"),
    "DISCORD_APPLICATION_ID": ("discord", "application_id"),
    "DISCORD_GUILD_ID": ("discord", "guild_id"),
    "DISCORD_CATEGORY_ID": ("discord", "category_id"),
}


def load_settings(
    config_path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings once; raise :class:`ConfigError` naming every invalid key."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}

    path_value = config_path if config_path is not None else env.get(CONFIG_FILE_ENV)
    if path_value:
        path = Path(path_value)
        data = _read_yaml(path)
        for key_path in _leaf_paths(data):
            origins[key_path] = f"file {path}"

    for name, key_path in _LEGACY_ENV.items():
        if env.get(name, "") != "":
            _put(data, key_path, env[name])
            origins[key_path] = f"env {name}"
    if env.get("FACTEUR_DISABLE_DISPATCHER", "").strip().lower() in _TRUTHY:
        _put(data, ("executor", "kind"), "none")
        origins[("executor", "kind")] = "env FACTEUR_DISABLE_DISPATCHER"
    if env.get("FACTEUR_CODEX_LISTENER_BROKERS", "").strip():
        # the seeds name brokers only to use them: Kafka it is (a later bus.kind still wins)
        _put(data, ("bus", "kind"), "kafka")
        origins[("bus", "kind")] = "env FACTEUR_CODEX_LISTENER_BROKERS"

    problems: list[str] = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        raw_parts = name[len(ENV_PREFIX) :].split("__")
        env_path = _resolve_env_path(raw_parts)
        if env_path is None:
            problems.append(f"unknown setting {'.'.join(p.lower() for p in raw_parts)} (from env {name})")
            continue
        _put(data, env_path, _env_value(env_path, env[name]))
        origins[env_path] = f"env {name}"
    if problems:
        raise ConfigError("\n".join(problems))

    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {type(loaded).__name__}")
    return loaded


def _leaf_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for key, value in data.items():
        path = (*prefix, str(key))
        paths.append(path)
        if isinstance(value, Mapping):
            paths.extend(_leaf_paths(value, path))
    return paths


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def _field_type(path: tuple[str, ...]) -> Any:
    """The annotation of a setting path, or None when the path names no setting."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = model.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
            model = annotation
        elif typing.get_origin(model) is dict:
            annotation = typing.get_args(model)[1]
            model = annotation
        else:
            return None
    return annotation


def _resolve_env_path(raw_parts: list[str]) -> tuple[str, ...] | None:
    """Map ``SERVER``, ``PORT`` to ``("server", "port")``; free-form map keys keep their case."""
    resolved: list[str] = []
    model: Any = Settings
    for raw in raw_parts:
        if not raw:
            return None
        if isinstance(model, type) and issubclass(model, BaseModel):
            name = raw.lower()
            if name not in model.model_fields:
                return None
            resolved.append(name)
            model = model.model_fields[name].annotation
        elif typing.get_origin(model) is dict:
            resolved.append(raw)
            model = typing.get_args(model)[1]
        else:
            return None
    return tuple(resolved)


def _env_value(path: tuple[str, ...], raw: str) -> Any:
    """Environment values are strings; maps may be given as a JSON object."""
    annotation = _field_type(path)
    if typing.get_origin(annotation) is dict and raw.strip().startswith("{"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def _describe(exc: ValidationError, origins: Mapping[tuple[str, ...], str]) -> str:
    lines = []
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        key = ".".join(path)
        origin = next((origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origins), None)
        if origin is None:  # a check across keys: name where those keys came from
            origin = ", ".join(sorted({v for k, v in origins.items() if k[: len(path)] == path})) or "default"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        elif _shows_input(key, error):
            message = f"{message} (got {error['input']!r})"
        lines.append(f"invalid setting {key}: {message} (from {origin})")
    return "\n".join(lines)


def _shows_input(key: str, error: Any) -> bool:
    """Whether the offending value may be printed (never for secrets or URLs that may hold a password)."""
    if "input" not in error or isinstance(error["input"], dict | list):
        return False
    return not key.endswith(("api_token", "url", "password", "secret", "token", "private_key"))
