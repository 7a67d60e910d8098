"""The OpenAPI checker itself: it must reject requests GitHub would, or every other check is hollow."""

from __future__ import annotations

import httpx
import pytest

from tests.support.github_api import VIOLATION_STATUS, FakeGitHub, OpenApiChecker, openapi_checker


@pytest.fixture
def checker() -> OpenApiChecker:
    return openapi_checker()


def test_accepts_what_github_documents(checker: OpenApiChecker) -> None:
    assert (
        checker.check("GET", "/repos/o/r/issues/1/comments", {"per_page": ["100"], "page": ["3"]}, None) == []
    )
    assert (
        checker.check("GET", "/repos/o/r/issues/1/reactions", {"content": ["+1"], "per_page": ["1"]}, None)
        == []
    )
    body = {"title": "t", "head": "topic", "base": "main", "body": "b", "draft": True}
    assert checker.check("POST", "/repos/o/r/pulls", {}, body) == []
    assert (
        checker.check("PUT", "/repos/o/r/pulls/3/merge", {}, {"merge_method": "squash", "sha": "abc"}) == []
    )
    assert checker.check("GET", "/repos/o/r/branches/codex%2Fissue-1", {}, None) == []
    assert checker.check("POST", "/graphql", {}, {"query": "{ viewer { login } }", "variables": {}}) == []


def test_literal_segments_win_over_parameters(checker: OpenApiChecker) -> None:
    found = checker.match("/repos/o/r/issues/comments/12")
    assert found is not None
    assert found.route.template == "/repos/{owner}/{repo}/issues/comments/{comment_id}"
    assert found.params == {"owner": "o", "repo": "r", "comment_id": "12"}


@pytest.mark.parametrize(
    ("method", "path", "query", "body", "expected"),
    [
        ("GET", "/repos/o/r/no-such-thing", {}, None, "no such path"),
        ("DELETE", "/repos/o/r/issues/1", {}, None, "offers GET, PATCH, not DELETE"),
        ("POST", "/repos/o/r/git/refs", {}, {"ref": "refs/heads/x"}, "'sha' is a required property"),
        ("POST", "/repos/o/r/issues/1/reactions", {}, {"content": "thumbsup"}, "'thumbsup' is not one of"),
        ("GET", "/repos/o/r/issues/1/reactions", {"content": ["yay"]}, None, "query parameter content='yay'"),
        ("GET", "/repos/o/r/issues/1/comments", {"direction": ["desc"]}, None, "unknown query parameter"),
        ("GET", "/repos/o/r/pulls", {"state": ["merged"]}, None, "'merged' is not one of"),
        ("GET", "/repos/o/r/issues/one", {}, None, "is not of type 'integer'"),
        ("GET", "/repos/o/r/issues/1", {}, {"x": 1}, "takes no request body"),
        ("POST", "/repos/o/r/issues/1/comments", {}, None, "request body required"),
        ("PUT", "/repos/o/r/pulls/1/merge", {}, {"merge_method": "fast-forward"}, "is not one of"),
        ("POST", "/graphql", {}, {"variables": {}}, "string 'query'"),
        ("POST", "/graphql", {}, {"query": "{}", "variables": []}, "'variables' must be an object"),
        ("GET", "/graphql", {}, None, "GraphQL takes POST"),
    ],
)
def test_rejects_what_github_would(
    checker: OpenApiChecker, method: str, path: str, query: dict[str, list[str]], body: object, expected: str
) -> None:
    problems = checker.check(method, path, query, body)
    assert problems
    assert any(expected in p for p in problems), problems


def test_response_schemas_catch_a_drifting_fake(checker: OpenApiChecker) -> None:
    pull = checker.example("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)
    del pull["head"]
    problems = checker.response_problems("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200, pull)
    assert any("'head' is a required property" in p for p in problems)


async def test_the_fake_answers_a_bad_request_599_and_records_it() -> None:
    fake = FakeGitHub()
    fake.add_repo("o/r")
    fake.add_issue("o/r")
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as client:
        response = await client.get(
            "https://api.github.com/repos/o/r/issues/1/comments",
            params={"sort": "created"},
            headers={"Authorization": "Bearer test-token"},
        )
        assert response.status_code == VIOLATION_STATUS
        assert "unknown query parameter 'sort'" in response.json()["message"]
        assert len(fake.violations) == 1
        ok = await client.get(
            "https://api.github.com/repos/o/r/issues/1", headers={"Authorization": "Bearer test-token"}
        )
        assert ok.status_code == 200
        unauthenticated = await client.get("https://api.github.com/repos/o/r/issues/1")
        assert unauthenticated.status_code == 401
    assert len(fake.violations) == 1
