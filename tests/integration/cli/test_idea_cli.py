"""``facteur idea`` error paths against a fake Facteur (an ``httpx.MockTransport``), in process."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest
from typer.testing import CliRunner, Result

from facteur.cli import ideas as ideas_cli
from facteur.cli.main import app

Handler = Callable[[httpx.Request], httpx.Response]


class FakeFacteur:
    """Answers every request with ``handler`` and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.handler: Handler = lambda _request: httpx.Response(500, json={})

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FakeFacteur:
    for name in list(os.environ):
        if name.startswith("FACTEUR_"):
            monkeypatch.delenv(name)
    fake = FakeFacteur()
    monkeypatch.setattr(ideas_cli, "transport", httpx.MockTransport(fake.handle))
    return fake


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, ["idea", *args], env=env)


SUBMIT = ["submit", "--title", "t", "--goal", "g", "--repository", "acme/widgets"]


def test_url_and_token_come_from_the_environment(server: FakeFacteur) -> None:
    server.handler = lambda _request: httpx.Response(200, json={"items": [], "next_cursor": None})
    env = {"FACTEUR_URL": "http://facteur.test:9000", "FACTEUR_API_TOKEN": "tok-1"}
    result = run("list", "--json", env=env)
    assert result.exit_code == 0, result.stderr
    [request] = server.requests
    assert str(request.url).startswith("http://facteur.test:9000/api/v1/ideas?")
    assert request.headers["Authorization"] == "Bearer tok-1"

    server.requests.clear()
    assert run("list", "--json", "--url", "http://other.test", "--token", "tok-2", env=env).exit_code == 0
    [request] = server.requests
    assert request.url.host == "other.test"
    assert request.headers["Authorization"] == "Bearer tok-2"


def test_a_400_lists_each_problem_literally(server: FakeFacteur) -> None:
    problems = ["task [b] depends on [a], which is not in the plan", "plan file [/tmp] is not readable"]
    server.handler = lambda _request: httpx.Response(
        400, json={"error": "invalid payload", "detail": "bad plan", "problems": problems}
    )
    result = run(*SUBMIT)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: POST /api/v1/ideas: 400 invalid payload" in result.stderr
    assert "  - task [b] depends on [a], which is not in the plan" in result.stderr
    assert "  - plan file [/tmp] is not readable" in result.stderr


def test_a_401_exits_1_with_the_detail(server: FakeFacteur) -> None:
    server.handler = lambda _request: httpx.Response(
        401, json={"error": "unauthorized", "detail": "missing bearer token"}
    )
    result = run("show", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code == 1
    assert "401 unauthorized" in result.stderr
    assert "missing bearer token" in result.stderr
    assert "Authorization" not in server.requests[0].headers


def test_a_refused_connection_names_the_address(server: FakeFacteur) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    server.handler = refuse
    result = run("events", "some-id", "--url", "http://127.0.0.1:1")
    assert result.exit_code == 1
    assert "cannot reach Facteur at http://127.0.0.1:1" in result.stderr
    assert "[Errno 111] Connection refused" in result.stderr
    assert "facteur serve" in result.stderr


def test_a_body_that_is_not_json_is_named(server: FakeFacteur) -> None:
    server.handler = lambda _request: httpx.Response(502, text="<html>bad gateway</html>")
    result = run("list")
    assert result.exit_code == 1
    assert "GET /api/v1/ideas: 502 with a body that is not JSON" in result.stderr


def test_tables_print_server_text_literally(server: FakeFacteur) -> None:
    title = "Fix [/tmp] and [b]bold[/b] paths"
    idea = {
        "id": "0f0e0d0c-0000-0000-0000-000000000001",
        "title": title,
        "state": "registered",
        "paused": False,
        "repository": "acme/widgets",
        "source": "api",
        "priority": 2,
        "created_at": "2026-11-30T00:00:00Z",
    }
    server.handler = lambda _request: httpx.Response(200, json={"items": [idea], "next_cursor": None})
    result = run("list")
    assert result.exit_code == 0, result.output
    assert "[/tmp]" in result.stdout and "[b]bold[/b]" in result.stdout
