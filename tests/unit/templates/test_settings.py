"""``templates.*`` settings: defaults, environment overrides, and the problems they refuse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from facteur.errors import ConfigError
from facteur.settings import Settings, load_settings


def test_defaults() -> None:
    config = Settings().templates
    assert config.image == "facteur-agent-runner:latest"
    assert config.heavy_stages == ["implementation"]
    assert config.secrets["GH_TOKEN"] == "github-token/token"
    assert "GH_TOKEN" not in config.optional_secrets
    assert config.docker_sidecar is False
    assert config.resume_claim is None


def test_environment_overrides() -> None:
    settings = load_settings(
        environ={
            "FACTEUR_TEMPLATES__IMAGE": "registry.example/facteur-agent-runner:0.1.0",
            "FACTEUR_TEMPLATES__HEAVY_STAGES": "implementation, review",
            "FACTEUR_TEMPLATES__SECRETS__GH_TOKEN": "bot-token/pat",
            "FACTEUR_TEMPLATES__OPTIONAL_SECRETS": "OPENAI_API_KEY",
            "FACTEUR_TEMPLATES__DOCKER_SIDECAR": "true",
            # a key holding "__" goes in a JSON object (FACTEUR_TEMPLATES__ENV__FACTEUR_AGENT__KIND splits)
            "FACTEUR_TEMPLATES__ENV": '{"FACTEUR_AGENT__KIND": "claude"}',
            "FACTEUR_TEMPLATES__ENV__LOG_FORMAT": "json",
            "FACTEUR_TEMPLATES__RETRY_LIMIT": "0",
        }
    )
    config = settings.templates
    assert config.image == "registry.example/facteur-agent-runner:0.1.0"
    assert config.heavy_stages == ["implementation", "review"]
    assert config.secrets["GH_TOKEN"] == "bot-token/pat"
    assert config.secrets["GITHUB_TOKEN"] == "github-token/token"  # the other defaults stay
    assert config.optional_secrets == ["OPENAI_API_KEY"]
    assert config.docker_sidecar is True
    assert config.env == {"FACTEUR_AGENT__KIND": "claude", "LOG_FORMAT": "json"}
    assert config.retry_limit == 0


def test_secrets_are_laid_over_the_defaults() -> None:
    config = Settings.model_validate(
        {"templates": {"secrets": {"GH_TOKEN": "bot/pat", "OPENAI_API_KEY": "", "SENTRY_DSN": "sentry/dsn"}}}
    ).templates
    assert config.secrets == {
        "GH_TOKEN": "bot/pat",
        "GITHUB_TOKEN": "github-token/token",
        "CODEX_API_KEY": "facteur-agent-keys/openai-api-key",
        "ANTHROPIC_API_KEY": "facteur-agent-keys/anthropic-api-key",
        "FACTEUR_API_TOKEN": "facteur-api-token/token",
        "SENTRY_DSN": "sentry/dsn",
    }
    # the default optional list may name a removed secret; a list that is set may not
    assert "OPENAI_API_KEY" in config.optional_secrets


@pytest.mark.parametrize(
    ("templates", "problem"),
    [
        ({"secrets": {"GH_TOKEN": "github-token"}}, "expected <secret>/<key>"),
        ({"secrets": {"GH_TOKEN": "Bad_Name/token"}}, "expected <secret>/<key>"),
        ({"secrets": {"GH-TOKEN": "github-token/token"}}, "not environment variable names"),
        ({"optional_secrets": ["NOPE"]}, "NOPE, not in templates.secrets"),
        ({"env": {"GH_TOKEN": "x"}}, "templates.env sets GH_TOKEN"),
        ({"env": {"DOCKER_HOST": "tcp://elsewhere:2375"}}, "templates.env sets DOCKER_HOST"),
        ({"heavy_stages": ["building"]}, "unknown stage"),
        ({"cpu_request": "two"}, "templates.cpu_request"),
        ({"memory_limit": "8GB"}, "templates.memory_limit"),
        ({"image": "runner latest"}, "templates.image"),
        ({"image": "runner:{{workflow.name}}"}, "templates.image"),
        ({"resume_claim": "Work_Space"}, "templates.resume_claim"),
        ({"retry_backoff": "soon"}, "templates.retry_backoff"),
        ({"retry_policy": "Never"}, "templates.retry_policy"),
        ({"unknown": 1}, "unknown setting"),
    ],
)
def test_invalid_settings_are_named(templates: dict[str, Any], problem: str, tmp_path: Path) -> None:
    config = tmp_path / "facteur.yaml"
    config.write_text(yaml.safe_dump({"templates": templates}))
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ={})
