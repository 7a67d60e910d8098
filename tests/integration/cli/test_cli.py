"""The `facteur` command line, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from facteur import __version__
from facteur.store.migrate import head_revision


def facteur(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FACTEUR_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "facteur", *args],
        cwd=cwd,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    assert facteur("version", cwd=tmp_path).stdout.strip() == f"facteur {__version__}"
    assert json.loads(facteur("version", "--json", cwd=tmp_path).stdout) == {"version": __version__}


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    env = {
        "FACTEUR_POSTGRES_DSN": "postgresql://facteur:pa55word@db:5432/kb",
        "FACTEUR_SERVER__API_TOKEN": "token-abcdef",
    }
    text = facteur("config", "show", cwd=tmp_path, env=env)
    assert text.returncode == 0
    assert 'url = "postgresql://facteur:****@db:5432/kb"' in text.stdout
    as_json = json.loads(facteur("config", "show", "--json", cwd=tmp_path, env=env).stdout)
    assert as_json["server"]["api_token"] == "********"
    for output in (text.stdout, json.dumps(as_json)):
        assert "pa55word" not in output
        assert "token-abcdef" not in output


def test_invalid_settings_stop_with_one_line_per_problem(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("server:\n  port: high\nexecutor:\n  kind: docker\n")
    for command in (["serve", "--config", str(config)], ["migrate", "--config", str(config)]):
        result = facteur(*command, cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, result.stderr
        assert lines[0].startswith("error: invalid setting server.port:")
        assert lines[1].startswith("error: invalid setting executor.kind:")
        assert "Traceback" not in result.stderr


def test_migrate_creates_then_reports_up_to_date(tmp_path: Path) -> None:
    first = facteur("migrate", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"migrated from an empty database to {head_revision()}" in first.stdout
    assert (tmp_path / ".facteur" / "facteur.db").exists()
    second = facteur("migrate", cwd=tmp_path)
    assert f"already at revision {head_revision()}" in second.stdout


def test_migrate_names_an_unreachable_database(tmp_path: Path) -> None:
    env = {
        "FACTEUR_POSTGRES_DSN": "postgresql://u:secretpw@127.0.0.1:1/none",
        "FACTEUR_DATABASE__TIMEOUT_SECONDS": "1",
    }
    result = facteur("migrate", cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: database unavailable:")
    assert "secretpw" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["stage", "deploying", "--event", "e.json"], 2, "unknown stage 'deploying'"),
        (["stage", "planning", "--event", "missing.json"], 2, "event file missing.json does not exist"),
        (["stage", "planning", "--event", "bad.json"], 2, "is not JSON"),
        (["stage", "planning", "--event", "no-stage.json"], 2, "field 'stage' is required"),
        (["stage", "planning", "--event", "bad-run.json"], 2, "field 'runId' must be a UUID"),
        (["stage", "review", "--event", "good.json"], 2, "the event is for the planning stage, not review"),
    ],
)
def test_stage_explains_what_it_cannot_do(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    (tmp_path / "bad.json").write_text("{")
    good = {"stage": "planning", "repository": "a/b", "head": "h", "issueNumber": 1}
    (tmp_path / "good.json").write_text(json.dumps(good))
    (tmp_path / "no-stage.json").write_text(json.dumps({**good, "stage": None}))
    (tmp_path / "bad-run.json").write_text(json.dumps({**good, "facteur": {"runId": "r"}}))
    result = facteur(*args, cwd=tmp_path)
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = facteur("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode != 0
    assert "address already in use" in result.stderr.lower()


def test_serve_refuses_an_open_api_outside_loopback(tmp_path: Path) -> None:
    result = facteur("serve", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "server.api_token is not set" in result.stderr
    assert "0.0.0.0" in result.stderr


def test_errors_print_brackets_literally(tmp_path: Path) -> None:
    """Messages are not Rich markup: ``[b]`` is not swallowed, ``[/tmp]`` is no MarkupError."""
    missing = facteur("config", "show", "--config", "[/tmp]/[b]x.yaml", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: config file [/tmp]/[b]x.yaml does not exist"
    config = tmp_path / "brackets.yaml"
    config.write_text('server:\n  port: "[/tmp] [b]"\n')
    invalid = facteur("config", "show", "--config", str(config), cwd=tmp_path)
    assert invalid.returncode == 2
    assert "(got '[/tmp] [b]')" in invalid.stderr
    assert "Traceback" not in invalid.stderr
