"""Settings: file, seeds' environment names, FACTEUR_* overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from facteur.errors import ConfigError
from facteur.settings import DEFAULT_DATABASE_URL, Settings, load_settings, mask_url


def test_defaults_need_no_configuration() -> None:
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert not settings.database.is_postgres
    assert settings.codex_dispatch.planning_enabled is True
    assert settings.executor.kind == "local"
    assert settings.executor.local.command == "facteur stage {stage} --event {event_file}"
    assert settings.argo.namespace == "argo-workflows"
    assert settings.argo.templates == {
        "planning": "github-codex-planning",
        "implementation": "github-codex-implementation",
        "review": "github-codex-review",
    }


def test_yaml_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text(
        """
server:
  port: 9000
  host: 0.0.0.0
codex_dispatch:
  planning_enabled: false
executor:
  kind: argo
argo:
  namespace: ci
  service_account: facteur-workflow
  templates:
    review: my-review
  parameters:
    postToGithub: "true"
"""
    )
    settings = load_settings(config, environ={"FACTEUR_SERVER__PORT": "9100"})
    assert settings.server.port == 9100
    assert settings.server.host == "0.0.0.0"
    assert settings.codex_dispatch.planning_enabled is False
    assert settings.executor.kind == "argo"
    assert settings.argo.service_account == "facteur-workflow"
    assert settings.argo.templates["review"] == "my-review"
    assert settings.argo.templates["planning"] == "github-codex-planning"
    assert settings.argo.parameters == {"postToGithub": "true"}


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  port: 7000\n")
    assert load_settings(environ={"FACTEUR_CONFIG_FILE": str(config)}).server.port == 7000


def test_seed_environment_names_keep_working() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_POSTGRES_DSN": "postgresql://facteur:s3cret@db:5432/facteur_kb",
            "FACTEUR_CODEX_ENABLE_PLANNING_ORCHESTRATION": "false",
            "FACTEUR_DISABLE_DISPATCHER": "1",
            "FACTEUR_ARGO_NAMESPACE": "workflows",
            "FACTEUR_KUBECONFIG": "/etc/kube/config",
        }
    )
    assert settings.database.is_postgres
    assert settings.codex_dispatch.planning_enabled is False
    assert settings.executor.kind == "none"
    assert settings.argo.namespace == "workflows"
    assert settings.argo.kubeconfig == Path("/etc/kube/config")


def test_double_underscore_nesting_and_map_keys_keep_their_case() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_CODEX_DISPATCH__PLANNING_ENABLED": "true",
            "FACTEUR_EXECUTOR__LOCAL__MAX_CONCURRENCY": "4",
            "FACTEUR_ARGO__PARAMETERS__postToGithub": "true",
            "FACTEUR_ARGO__TEMPLATES": '{"planning": "planner"}',
        }
    )
    assert settings.executor.local.max_concurrency == 4
    assert settings.argo.parameters == {"postToGithub": "true"}
    assert settings.argo.templates["planning"] == "planner"


def test_specific_environment_beats_seed_alias() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_CODEX_ENABLE_PLANNING_ORCHESTRATION": "false",
            "FACTEUR_CODEX_DISPATCH__PLANNING_ENABLED": "true",
        }
    )
    assert settings.codex_dispatch.planning_enabled is True


def test_unrelated_facteur_variables_are_ignored() -> None:
    load_settings(environ={"FACTEUR_URL": "http://x", "FACTEUR_COMMIT": "abc", "FACTEUR_VERSION": "1"})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"FACTEUR_SERVER__PORT": "eighty"},
            "invalid setting server.port: .* \\(got 'eighty'\\) \\(from env",
        ),
        ({"FACTEUR_SERVER__PORT": "70000"}, "server.port: Input should be less than or equal to 65535"),
        ({"FACTEUR_SERVER__PROT": "1"}, "unknown setting server.prot \\(from env FACTEUR_SERVER__PROT\\)"),
        ({"FACTEUR_EXECUTOR__KIND": "docker"}, "invalid setting executor.kind: .*'local', 'argo' or 'none'"),
        ({"FACTEUR_DATABASE__URL": "mysql://x/y"}, "database.url: .*unsupported database URL scheme 'mysql'"),
        ({"FACTEUR_ARGO__TEMPLATES__deploy": "x"}, "argo.templates: .*unknown stage\\(s\\) deploy"),
        ({"FACTEUR_ARGO__PARAMETERS__eventBody": "x"}, "argo.parameters: .*eventBody"),
        ({"FACTEUR_LOGGING__LEVEL": "loud"}, "logging.level"),
        ({"FACTEUR_CODEX_DISPATCH__PLANNING_ENABLED": "perhaps"}, "codex_dispatch.planning_enabled"),
    ],
)
def test_invalid_settings_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


def test_every_problem_is_one_line() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"FACTEUR_SERVER__PORT": "x", "FACTEUR_EXECUTOR__KIND": "y"})
    lines = caught.value.message.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("invalid setting ") for line in lines)


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(scalar, environ={})
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("server:\n  colour: blue\n")
    with pytest.raises(
        ConfigError, match=f"invalid setting server.colour: unknown setting \\(from file {unknown}"
    ):
        load_settings(unknown, environ={})
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings(empty, environ={}) == Settings()


def test_secrets_are_masked_and_never_echoed() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_POSTGRES_DSN": "postgresql://facteur:s3cret-pw@db/kb",
            "FACTEUR_SERVER__API_TOKEN": "tok-123456",
        }
    )
    shown = repr(settings) + str(settings.redacted())
    assert "s3cret-pw" not in shown
    assert "tok-123456" not in shown
    assert settings.redacted()["database"]["url"] == "postgresql://facteur:****@db/kb"
    assert sorted(settings.secrets()) == ["s3cret-pw", "tok-123456"]
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"FACTEUR_DATABASE__URL": "mongodb://u:hunter22@h/db"})
    assert "hunter22" not in caught.value.message


def test_mask_url_leaves_password_free_urls_alone() -> None:
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask_url("postgresql://u@h/d") == "postgresql://u@h/d"


@pytest.mark.parametrize(
    ("host", "token", "exposed"),
    [
        ("127.0.0.1", None, False),
        ("::1", None, False),
        ("localhost", None, False),
        ("127.0.0.2", None, False),
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("10.1.2.3", None, True),
        ("facteur.internal", None, True),
        ("0.0.0.0", "s3cret", False),
    ],
)
def test_the_api_is_closed_by_default_outside_loopback(host: str, token: str | None, exposed: bool) -> None:
    env = {"FACTEUR_SERVER__HOST": host}
    if token:
        env["FACTEUR_SERVER__API_TOKEN"] = token
    problem = load_settings(environ=env).exposure_problem()
    assert (problem is not None) == exposed
    if problem:
        assert "server.api_token" in problem


def test_pipelines_and_approvals_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "facteur.yaml"
    path.write_text("pipelines:\n  acme/widgets:\n    stages: [review, deploy-now]\n")
    with pytest.raises(ConfigError, match=r"pipelines\.acme/widgets\.stages: .*unknown stage 'deploy-now'"):
        load_settings(path, environ={})
    path.write_text("pipelines:\n  not-a-repo:\n    stages: []\n")
    with pytest.raises(ConfigError, match="'not-a-repo' is not owner/repo"):
        load_settings(path, environ={})
    path.write_text(
        "pipelines:\n  acme/widgets:\n    stages: [review]\n"
        "approvals:\n  repositories:\n    acme/widgets: true\n"
    )
    settings = load_settings(path, environ={})
    assert (
        settings.pipeline_of("acme/widgets").describe()
        == "planning -> running_tasks -> qa_review -> completed"
    )
    assert settings.pipeline_of("acme/other").describe() == "planning -> running_tasks -> completed"
    assert settings.approvals.repositories == {"acme/widgets": True}
