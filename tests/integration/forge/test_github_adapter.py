"""GitHubForge against FakeGitHub: authentication, GHE URLs, retries, rate limits, budgets, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from facteur.errors import ConfigError, ForgeError, ForgeNotFound, ForgeUnavailable
from facteur.forge.github import GitHubForge
from facteur.forge.github_http import graphql_url
from facteur.forge.port import PullRequest
from facteur.settings import GitHubSettings
from tests.support.fakes import FakeClock
from tests.support.github_api import FakeGitHub, FakeSleep, Injected, serve

REPO = "acme/widgets"
APP_ID = 4242


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def fake(clock: FakeClock) -> Iterator[FakeGitHub]:
    github = FakeGitHub(clock=clock)
    github.add_repo(REPO)
    github.add_issue(REPO, title="first")
    yield github
    assert github.violations == []


class Harness:
    def __init__(self, fake: FakeGitHub, clock: FakeClock) -> None:
        self.fake, self.clock = fake, clock
        self.sleep = FakeSleep(clock)
        self.opened: list[GitHubForge] = []

    def forge(self, transport: httpx.AsyncBaseTransport | None = None, **settings: Any) -> GitHubForge:
        values: dict[str, Any] = {"token": SecretStr("test-token"), **settings}
        forge = GitHubForge(
            GitHubSettings(**values),
            transport=transport or httpx.MockTransport(self.fake.handle),
            clock=self.clock,
            sleep=self.sleep,
        )
        self.opened.append(forge)
        return forge

    async def close(self) -> None:
        for forge in self.opened:
            await forge.close()


@pytest.fixture
async def harness(fake: FakeGitHub, clock: FakeClock) -> Any:
    opened = Harness(fake, clock)
    yield opened
    await opened.close()


# --- authentication -----------------------------------------------------------------------------------------


async def test_token_auth_and_standard_headers(harness: Harness, fake: FakeGitHub) -> None:
    forge = harness.forge(user_agent="facteur-test/1.0")
    await forge.get_issue(REPO, 1)
    headers = fake.requests[-1].headers
    assert headers["authorization"] == "Bearer test-token"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    assert headers["user-agent"] == "facteur-test/1.0"


def _app_settings(key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    return {"token": None, "app_id": APP_ID, "private_key": SecretStr(pem(key)), **extra}


async def test_app_auth_signs_a_jwt_and_uses_an_installation_token(
    harness: Harness, fake: FakeGitHub, clock: FakeClock, app_key: rsa.RSAPrivateKey
) -> None:
    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key))
    issue = await forge.get_issue(REPO, 1)
    assert issue.title == "first"
    paths = [r.path for r in fake.requests]
    installation = fake.repos[REPO].installation_id
    assert paths == [
        f"/repos/{REPO}/installation",
        f"/app/installations/{installation}/access_tokens",
        f"/repos/{REPO}/issues/1",
    ]
    now = int(clock.now().timestamp())
    assert len(fake.jwt_claims) == 2
    assert fake.jwt_claims[0] == fake.jwt_claims[1]  # signed once, used for the lookup and the mint
    for claims in fake.jwt_claims:
        assert claims["iss"] == str(APP_ID)
        assert claims["iat"] == now - 60
        assert now < claims["exp"] <= now + 600
    minted = next(iter(fake.minted))
    assert fake.requests[-1].headers["authorization"] == f"Bearer {minted}"


async def test_app_token_is_cached_and_refreshed_before_expiry(
    harness: Harness, fake: FakeGitHub, clock: FakeClock, app_key: rsa.RSAPrivateKey
) -> None:
    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key))
    for _ in range(3):
        await forge.get_issue(REPO, 1)
    assert len(fake.minted) == 1
    clock.advance(54 * 60)  # the token lasts an hour; 6 minutes left
    await forge.get_issue(REPO, 1)
    assert len(fake.minted) == 1
    clock.advance(2 * 60)  # 4 minutes left: inside the 5-minute margin
    await forge.get_issue(REPO, 1)
    assert len(fake.minted) == 2
    newest = list(fake.minted)[-1]
    assert fake.requests[-1].headers["authorization"] == f"Bearer {newest}"
    lookups = [r for r in fake.requests if r.path.endswith("/installation")]
    assert len(lookups) == 1


async def test_concurrent_first_calls_look_the_installation_up_once(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    fake.latency = 0.01
    forge = harness.forge(**_app_settings(app_key))
    issues = await asyncio.gather(*(forge.get_issue(REPO, 1) for _ in range(5)))
    assert [i.number for i in issues] == [1] * 5
    paths = [r.path for r in fake.requests]
    assert paths.count(f"/repos/{REPO}/installation") == 1
    assert len(fake.minted) == 1
    assert len({claims["iat"] for claims in fake.jwt_claims}) == 1


async def test_app_auth_wins_over_a_token(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key, token=SecretStr("test-token")))
    await forge.get_issue(REPO, 1)
    assert fake.requests[-1].headers["authorization"].startswith("Bearer ghs_")


async def test_app_key_from_a_file_and_a_bad_key(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(pem(app_key))
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key, private_key=SecretStr(f"@{key_file}")))
    assert (await forge.get_issue(REPO, 1)).number == 1
    with pytest.raises(ConfigError, match=r"github\.private_key"):
        harness.forge(**_app_settings(app_key, private_key=SecretStr("not a key")))
    with pytest.raises(ConfigError, match="cannot read"):
        harness.forge(**_app_settings(app_key, private_key=SecretStr(f"@{tmp_path / 'missing.pem'}")))


async def test_revoked_installation_token_is_minted_again(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key))
    await forge.get_issue(REPO, 1)
    fake.minted.clear()  # revoked on GitHub's side
    fake.requests.clear()
    assert (await forge.get_issue(REPO, 1)).number == 1
    installation = fake.repos[REPO].installation_id
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", f"/repos/{REPO}/issues/1"),  # 401
        ("POST", f"/app/installations/{installation}/access_tokens"),  # the installation id is kept
        ("GET", f"/repos/{REPO}/issues/1"),
    ]
    assert len(fake.minted) == 1
    assert fake.requests[-1].headers["authorization"] == f"Bearer {next(iter(fake.minted))}"


async def test_a_401_after_a_fresh_token_is_an_error(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    forge = harness.forge(**_app_settings(app_key))
    await forge.get_issue(REPO, 1)
    fake.inject(Injected(status=401, message="Bad credentials", path_contains="/issues/1"), times=2)
    with pytest.raises(ForgeError, match="401 Bad credentials") as caught:
        await forge.get_issue(REPO, 1)
    assert "ghs_" not in str(caught.value)
    assert len(fake.minted) == 2
    assert [r.path for r in fake.requests].count(f"/repos/{REPO}/issues/1") == 3
    assert (await forge.get_issue(REPO, 1)).number == 1  # forgotten again: the next call mints anew
    assert len(fake.minted) == 3


async def test_a_refused_fixed_token_is_not_sent_twice(harness: Harness, fake: FakeGitHub) -> None:
    forge = harness.forge(token=SecretStr("ghp_wrongWrongWrong"))
    with pytest.raises(ForgeError, match="401 Bad credentials"):
        await forge.get_issue(REPO, 1)
    assert len(fake.requests) == 1


# --- GitHub Enterprise --------------------------------------------------------------------------------------


def test_graphql_url_mapping() -> None:
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3") == "https://ghe.example.com/api/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"
    assert graphql_url("http://localhost:9000") == "http://localhost:9000/graphql"


async def test_enterprise_urls(harness: Harness, clock: FakeClock) -> None:
    ghe = FakeGitHub(clock=clock, api_prefix="/api/v3", graphql_path="/api/graphql")
    ghe.add_repo(REPO)
    number = ghe.add_pull(REPO, head="topic").number
    ghe.add_thread(REPO, number, body="fix this")
    forge = harness.forge(transport=httpx.MockTransport(ghe.handle), api_url="https://ghe.example.com/api/v3")
    assert (await forge.get_pull(REPO, number)).head_ref == "topic"
    assert [t.body for t in await forge.review_threads(REPO, number)] == ["fix this"]
    assert [r.path for r in ghe.requests] == [f"/api/v3/repos/{REPO}/pulls/{number}", "/api/graphql"]
    assert ghe.violations == []


# --- retries, rate limits, budgets --------------------------------------------------------------------------


async def test_5xx_is_retried_with_doubling_backoff(harness: Harness, fake: FakeGitHub) -> None:
    fake.fail(502, times=2)
    forge = harness.forge()
    assert (await forge.get_issue(REPO, 1)).number == 1
    assert harness.sleep.pauses == [0.5, 1.0]
    assert len(fake.requests) == 3


async def test_5xx_until_attempts_run_out_is_unavailable(harness: Harness, fake: FakeGitHub) -> None:
    fake.fail(503, times=10)
    forge = harness.forge(max_attempts=3)
    with pytest.raises(ForgeUnavailable, match=r"503 for issue #1 in acme/widgets, 3 attempt"):
        await forge.get_issue(REPO, 1)
    assert len(fake.requests) == 3
    assert harness.sleep.pauses == [0.5, 1.0]


async def test_transport_errors_are_retried(harness: Harness, fake: FakeGitHub) -> None:
    failures = [2]

    async def flaky(request: httpx.Request) -> httpx.Response:
        if failures[0]:
            failures[0] -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return await fake.handle(request)

    forge = harness.forge(transport=httpx.MockTransport(flaky))
    assert (await forge.get_issue(REPO, 1)).number == 1
    assert harness.sleep.pauses == [0.5, 1.0]
    failures[0] = 10
    with pytest.raises(ForgeUnavailable, match="could not reach GitHub"):
        await forge.get_issue(REPO, 1)


async def test_secondary_rate_limit_waits_for_retry_after(harness: Harness, fake: FakeGitHub) -> None:
    fake.secondary_rate_limit(retry_after=7)
    forge = harness.forge()
    assert (await forge.get_issue(REPO, 1)).number == 1
    assert harness.sleep.pauses == [7.0]


async def test_primary_rate_limit_within_the_budget_waits_for_the_reset(
    harness: Harness, fake: FakeGitHub
) -> None:
    fake.primary_rate_limit(reset_in=5)
    forge = harness.forge(timeout_seconds=30)
    assert (await forge.get_issue(REPO, 1)).number == 1
    assert harness.sleep.pauses == [5.0]


async def test_primary_rate_limit_past_the_budget_fails_at_once(
    harness: Harness, fake: FakeGitHub, clock: FakeClock
) -> None:
    fake.primary_rate_limit(reset_in=3600)
    forge = harness.forge(timeout_seconds=10)
    resets = clock.now() + timedelta(seconds=3600)
    started = time.monotonic()
    with pytest.raises(ForgeUnavailable) as caught:
        await forge.get_issue(REPO, 1)
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert "rate-limited issue #1 in acme/widgets" in message
    assert f"resets at {resets.isoformat()} (in 3600s)" in message
    assert "10s budget" in message
    assert harness.sleep.pauses == []
    assert len(fake.requests) == 1


async def test_a_hanging_request_is_bounded_by_the_budget(harness: Harness, fake: FakeGitHub) -> None:
    fake.hang()
    forge = harness.forge(timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(ForgeUnavailable, match=r"did not answer issue #1 in acme/widgets within 0\.3s"):
        await forge.get_issue(REPO, 1)
    assert time.monotonic() - started < 2


async def test_retries_stop_when_the_budget_is_spent(harness: Harness, fake: FakeGitHub) -> None:
    fake.fail(502, times=10)
    forge = harness.forge(timeout_seconds=2, max_attempts=10)
    with pytest.raises(ForgeUnavailable, match="no time left in the 2s budget"):
        await forge.get_issue(REPO, 1)
    assert harness.sleep.pauses == [0.5, 1.0]


async def test_paging_shares_one_budget(harness: Harness, fake: FakeGitHub) -> None:
    sha = "e" * 40
    for i in range(250):
        fake.add_check_run(REPO, sha, f"check {i}")
    fake.inject(Injected(status=502, path_contains="check-runs"), times=3)
    forge = harness.forge(timeout_seconds=3, max_attempts=10)
    with pytest.raises(ForgeUnavailable, match="no time left"):
        await forge.check_runs(REPO, sha)  # 0.5 + 1.0 pass, 2.0 would cross 3 s
    assert harness.sleep.pauses == [0.5, 1.0]


async def test_concurrency_is_limited_across_calls(harness: Harness, fake: FakeGitHub) -> None:
    number = fake.add_pull(REPO, head="topic").number
    fake.latency = 0.02
    forge = harness.forge(max_concurrency=3)
    calls = [forge.get_issue(REPO, 1) for _ in range(6)] + [forge.get_pull(REPO, number) for _ in range(6)]
    await asyncio.gather(*calls)
    assert fake.max_in_flight == 3


# --- errors -------------------------------------------------------------------------------------------------


async def test_not_found_names_what_is_missing(harness: Harness) -> None:
    forge = harness.forge()
    with pytest.raises(ForgeNotFound, match=r"GitHub has no issue #99 in acme/widgets"):
        await forge.get_issue(REPO, 99)
    with pytest.raises(ForgeNotFound, match="no pull request #7 in nobody/nothing"):
        await forge.get_pull("nobody/nothing", 7)


async def test_validation_message_is_passed_through(harness: Harness) -> None:
    forge = harness.forge()
    with pytest.raises(ForgeError, match="422 Reference already exists"):
        await forge.create_branch(REPO, "main", "f" * 40)
    with pytest.raises(ForgeError, match=r"422 Validation Failed \(PullRequest\.head: invalid\)"):
        await forge.create_draft_pull(REPO, head="missing", base="main", title="t", body="b")


async def test_a_bad_repository_name_is_refused_before_any_request(
    harness: Harness, fake: FakeGitHub
) -> None:
    forge = harness.forge()
    with pytest.raises(ForgeError, match="owner/name"):
        await forge.get_issue("no-slash", 1)
    assert fake.requests == []


async def test_the_token_never_appears_in_errors_or_logs(
    harness: Harness, fake: FakeGitHub, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "ghp_s3cr3tS3cr3tS3cr3t"
    fake.tokens = {secret: "bot"}
    forge = harness.forge(token=SecretStr(secret))
    fake.fail(502)
    fake.inject(Injected(status=422, message=f"token {secret} may not do that"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ForgeError) as echoed:
        await forge.get_issue(REPO, 1)
    assert secret not in str(echoed.value)
    assert "***" in str(echoed.value)
    wrong = harness.forge(token=SecretStr("ghp_wrongWrongWrong"))
    with pytest.raises(ForgeError, match="401 Bad credentials") as refused:
        await wrong.get_issue(REPO, 1)
    assert "ghp_wrong" not in str(refused.value)
    assert secret not in caplog.text
    assert "retried" in caplog.text


async def test_a_missing_required_field_is_named(harness: Harness) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/issues/1"):
            return httpx.Response(200, json={"title": "no number", "user": None, "body": None})
        if request.url.path.endswith("/issues/2"):
            return httpx.Response(200, json={"number": 2})
        return httpx.Response(200, json={"number": 3, "head": {"ref": "x"}, "base": {"ref": "main"}})

    forge = harness.forge(transport=httpx.MockTransport(answer))
    with pytest.raises(ForgeError, match="issue lacks number"):
        await forge.get_issue(REPO, 1)
    sparse = await forge.get_issue(REPO, 2)  # optional fields missing: defaults
    assert (sparse.title, sparse.body, sparse.author, sparse.labels) == ("", "", "", ())
    with pytest.raises(ForgeError, match="pull request head lacks sha"):
        await forge.get_pull(REPO, 3)


async def test_a_non_json_answer_is_a_forge_error(harness: Harness, fake: FakeGitHub) -> None:
    html = "<html><body>502 from the proxy, but with a 200</body></html>"

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=html, headers={"Content-Type": "text/html"})

    forge = harness.forge(transport=httpx.MockTransport(answer))
    with pytest.raises(
        ForgeError, match=r"answer for issue #1 in acme/widgets is not JSON \(200, text/html\)"
    ):
        await forge.get_issue(REPO, 1)
    with pytest.raises(ForgeError, match="not JSON"):
        await forge.get_branch(REPO, "main")
    with pytest.raises(ForgeError, match="not JSON"):
        await forge.list_comments(REPO, 1)
    with pytest.raises(ForgeError, match="not JSON"):
        await forge.merge_pull(REPO, 1)


async def test_a_non_json_answer_to_app_auth_is_a_forge_error(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    fake.configure_app(APP_ID, app_key.public_key())
    broken = {"path": "/installation"}

    async def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(broken["path"]):
            return httpx.Response(200, text="<html>sign in</html>", headers={"Content-Type": "text/html"})
        return await fake.handle(request)

    forge = harness.forge(transport=httpx.MockTransport(answer), **_app_settings(app_key))
    with pytest.raises(ForgeError, match="installation for acme/widgets is not JSON"):
        await forge.get_issue(REPO, 1)
    broken["path"] = "/access_tokens"
    with pytest.raises(ForgeError, match=r"access token for installation \d+ is not JSON"):
        await forge.get_issue(REPO, 1)


async def test_graphql_errors_become_forge_errors(harness: Harness) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": None, "errors": [{"message": "Something went wrong"}]})

    forge = harness.forge(transport=httpx.MockTransport(answer))
    with pytest.raises(ForgeError, match="Something went wrong"):
        await forge.review_threads(REPO, 1)


async def test_mark_ready_looks_up_a_missing_node_id(harness: Harness, fake: FakeGitHub) -> None:
    pull = fake.add_pull(REPO, head="topic", draft=True)
    forge = harness.forge()
    snapshot = await forge.get_pull(REPO, pull.number)
    bare = PullRequest(
        number=snapshot.number, title=snapshot.title, body=snapshot.body, state=snapshot.state, draft=True,
        merged=False, head_ref=snapshot.head_ref, head_sha=snapshot.head_sha, base_ref=snapshot.base_ref,
        url=snapshot.url,
    )  # fmt: skip
    await forge.mark_ready(REPO, bare)
    assert not pull.draft
    assert fake.mutations == [
        {
            "markPullRequestReadyForReview": {
                "pullRequestId": pull.node_id,
                "clientMutationId": f"ready-{pull.number}",
            }
        }
    ]


async def test_mark_ready_on_a_ready_pull_sends_nothing(harness: Harness, fake: FakeGitHub) -> None:
    pull = fake.add_pull(REPO, head="topic")
    forge = harness.forge()
    ready = await forge.get_pull(REPO, pull.number)
    fake.requests.clear()
    await forge.mark_ready(REPO, ready)
    assert fake.requests == []
    assert fake.mutations == []


# --- the fake as an ASGI app --------------------------------------------------------------------------------


async def test_fake_github_as_an_asgi_app(harness: Harness, fake: FakeGitHub) -> None:
    forge = harness.forge(transport=httpx.ASGITransport(app=fake))
    assert (await forge.get_issue(REPO, 1)).title == "first"
    created = await forge.create_comment(REPO, 1, "hello")
    assert [c.id for c in await forge.list_comments(REPO, 1)] == [created.id]


async def test_fake_github_served_by_uvicorn(fake: FakeGitHub, clock: FakeClock) -> None:
    with serve(fake) as url:
        forge = GitHubForge(GitHubSettings(token=SecretStr("test-token"), api_url=url), clock=clock)
        try:
            assert (await forge.get_issue(REPO, 1)).title == "first"
            branch = await forge.create_branch(REPO, "codex/issue-1-abc", "a" * 40)
            assert await forge.get_branch(REPO, "codex/issue-1-abc") == branch
        finally:
            await forge.close()


async def test_git_pushes_with_the_apps_installation_token(
    harness: Harness, fake: FakeGitHub, app_key: rsa.RSAPrivateKey
) -> None:
    from facteur.settings import load_settings
    from facteur.stages.forges import git_auth, open_forge

    fake.tokens.clear()
    fake.configure_app(APP_ID, app_key.public_key())
    app_forge = harness.forge(**_app_settings(app_key))
    token = await app_forge.git_token(REPO)
    assert token is not None and token in fake.minted
    # a stage with only an App configured: no token up front, an installation token for git
    settings = load_settings(
        None,
        environ={"FACTEUR_GITHUB__APP_ID": str(APP_ID), "FACTEUR_GITHUB__PRIVATE_KEY": pem(app_key)},
    )
    stage_forge = open_forge(settings, REPO, environ={})
    await stage_forge.forge.close()
    assert (stage_forge.kind, stage_forge.remote, stage_forge.host) == (
        "github", f"https://github.com/{REPO}.git", "github.com",
    )  # fmt: skip
    auth = await git_auth(dataclasses.replace(stage_forge, forge=app_forge), REPO)
    assert auth is not None and auth.token == token and auth.host == "github.com"
    # with a token, git uses it as it is
    with_token = open_forge(load_settings(None, environ={}), REPO, environ={"GITHUB_TOKEN": "t0ken"})
    fixed = await git_auth(with_token, REPO)
    await with_token.forge.close()
    assert fixed is not None and fixed.token == "t0ken"
