"""GitHub's REST API for tests: a request checker built from GitHub's OpenAPI description, and FakeGitHub.

``openapi_checker()`` loads ``../shared/fixtures/github/rest-api.openapi.json`` once per session (skipped
locally, failing under CI, when it is missing). ``OpenApiChecker.check`` lists how a request breaks the
description: unknown path, method not offered, unknown/missing/invalid parameters, a body that does not
match the operation's schema. ``POST /graphql`` is outside the REST description; it is checked for shape.

``FakeGitHub`` is a small stateful GitHub: an ``httpx.MockTransport`` handler (``fake.handle``) and an ASGI
app (``fake`` itself; ``serve(fake)`` runs it under uvicorn). Every request is checked first: a violation is
recorded in ``fake.violations`` and answered 599. Responses start from the operation's example in the
description, overlaid with the fake's state, so they have GitHub's shape.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode

import httpx
import jsonschema
import jwt
import referencing
import referencing.jsonschema
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from facteur.clock import Clock, SystemClock
from tests.support.services import free_port, shared_path

Json = dict[str, Any]
_URN = "urn:github-rest-api"
VIOLATION_STATUS = 599

# --- the OpenAPI checker ------------------------------------------------------------------------------------


def _convert(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema (draft 4): ``nullable`` as a null alternative, refs made absolute."""
    if isinstance(node, list):
        return [_convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _convert(value) for key, value in node.items() if key not in {"nullable", "example", "examples"}
    }
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        out["$ref"] = _URN + ref
    if node.get("nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]
    #: literal segments sort before parameters, so ``/issues/comments`` beats ``/issues/{issue_number}``
    rank: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    params: dict[str, str]


class OpenApiChecker:
    def __init__(self, document: Json) -> None:
        self.document = document
        self.routes: list[Route] = []
        for template in document["paths"]:
            segments = template.strip("/").split("/")
            names = tuple(s[1:-1] for s in segments if s.startswith("{"))
            regex = "/".join("([^/]+)" if s.startswith("{") else re.escape(s) for s in segments)
            rank = tuple(1 if s.startswith("{") else 0 for s in segments)
            self.routes.append(Route(template, re.compile(f"/{regex}"), names, rank))
        components = _convert({"components": {"schemas": document["components"]["schemas"]}})
        resource = referencing.Resource.from_contents(
            components, default_specification=referencing.jsonschema.DRAFT4
        )
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resource(_URN, resource)

    # -- lookups --
    def match(self, raw_path: str) -> Match | None:
        found = [r for r in self.routes if r.pattern.fullmatch(raw_path)]
        if not found:
            return None
        route = min(found, key=lambda r: r.rank)
        groups = route.pattern.fullmatch(raw_path)
        assert groups is not None
        return Match(route, {n: unquote(v) for n, v in zip(route.names, groups.groups(), strict=True)})

    def operation(self, method: str, template: str) -> Json | None:
        op = self.document["paths"][template].get(method.lower())
        return op if isinstance(op, dict) else None

    def _resolve(self, node: Json) -> Json:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def parameters(self, method: str, template: str) -> list[Json]:
        item = self.document["paths"][template]
        op = self.operation(method, template) or {}
        return [self._resolve(p) for p in [*item.get("parameters", []), *op.get("parameters", [])]]

    def example(self, method: str, template: str, status: int) -> Any:
        """A deep copy of the operation's example response (an item of it, when it is a list)."""
        op = self.operation(method, template)
        assert op is not None, f"{method} {template} is not in GitHub's description"
        response = self._resolve(op["responses"][str(status)])
        content = response["content"]["application/json"]
        if "example" in content:
            value = content["example"]
        else:
            examples = content["examples"]
            value = self._resolve(examples.get("default") or next(iter(examples.values())))["value"]
        while isinstance(value, dict) and "$ref" in value:  # GitHub also puts refs in an example's value
            value = self._resolve(value)
            value = value.get("value", value)
        if isinstance(value, list):
            value = value[0]
        return copy.deepcopy(value)

    # -- the check --
    def check(
        self,
        method: str,
        raw_path: str,
        query: Mapping[str, Sequence[str]],
        body: Any,
        headers: Mapping[str, str] | None = None,
    ) -> list[str]:
        """How the request breaks GitHub's description (an empty list when it does not)."""
        where = f"{method} {raw_path}"
        if raw_path == "/graphql":
            return [f"{where}: {p}" for p in _graphql_problems(method, body)]
        found = self.match(raw_path)
        if found is None:
            return [f"{where}: no such path in GitHub's REST API"]
        template = found.route.template
        op = self.operation(method, template)
        if op is None:
            offered = sorted(m.upper() for m in self.document["paths"][template] if m != "parameters")
            return [f"{where}: {template} offers {', '.join(offered)}, not {method}"]
        problems: list[str] = []
        params = self.parameters(method, template)
        lowered = {k.lower() for k in (headers or {})}
        known_query = {p["name"] for p in params if p["in"] == "query"}
        for name in query:
            if name not in known_query:
                problems.append(f"unknown query parameter {name!r} (known: {', '.join(sorted(known_query))})")
        for param in params:
            name, place = param["name"], param["in"]
            values: Sequence[str] | None
            if place == "query":
                values = query.get(name)
            elif place == "path":
                values = [found.params[name]] if name in found.params else None
            elif place == "header":
                values = ["present"] if name.lower() in lowered else None
            else:
                continue
            if not values:
                if param.get("required"):
                    problems.append(f"required {place} parameter {name!r} missing")
                continue
            if place == "header":
                continue
            schema = _convert(param.get("schema", {}))
            for value in values:
                problems.extend(
                    f"{place} parameter {name}={value!r}: {e}"
                    for e in self._errors(schema, _coerce(value, schema))
                )
        problems.extend(self._body_problems(op, body))
        return [f"{where} ({template}): {p}" for p in problems]

    def response_problems(self, method: str, template: str, status: int, body: Any) -> list[str]:
        """How a response body breaks the operation's response schema (so the fake keeps GitHub's shape)."""
        op = self.operation(method, template)
        response = (op or {}).get("responses", {}).get(str(status))
        if response is None:
            return [f"{method} {template} has no {status} response"]
        content = self._resolve(response).get("content", {}).get("application/json")
        if content is None:
            return [] if body is None else [f"{method} {template} {status} has no JSON body"]
        schema = _convert(content.get("schema", {}))
        return [f"{method} {template} {status} response: {e}" for e in self._errors(schema, body)]

    def _body_problems(self, op: Json, body: Any) -> list[str]:
        request_body = op.get("requestBody")
        if request_body is None:
            return [] if body is None else ["this operation takes no request body"]
        request_body = self._resolve(request_body)
        if body is None:
            return ["request body required"] if request_body.get("required") else []
        content = request_body.get("content", {}).get("application/json")
        if content is None:
            return ["this operation takes no JSON body"]
        return [f"body: {e}" for e in self._errors(_convert(content.get("schema", {})), body)]

    def _errors(self, schema: Any, instance: Any) -> list[str]:
        validator = jsonschema.Draft4Validator(schema, registry=self.registry)
        problems = []
        for error in validator.iter_errors(instance):
            # an alternative (oneOf/anyOf, and ``nullable``) failing: name the closest branch's problem
            branches = [e for e in error.context or () if e.validator_value != "null"] or [error]
            shown = max(branches, key=lambda e: len(e.absolute_path))
            problems.append(f"{'/'.join(str(p) for p in shown.absolute_path) or '(root)'}: {shown.message}")
        return problems


def _coerce(value: str, schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, dict) else None
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean":
        return {"true": True, "false": False}.get(value, value)
    if kind == "array":
        return [_coerce(v, schema.get("items", {})) for v in value.split(",")]
    return value


def _graphql_problems(method: str, body: Any) -> list[str]:
    if method != "POST":
        return ["GraphQL takes POST"]
    if not isinstance(body, dict):
        return ["GraphQL body must be a JSON object"]
    problems = [] if isinstance(body.get("query"), str) else ["GraphQL body needs a string 'query'"]
    if body.get("variables") is not None and not isinstance(body["variables"], dict):
        problems.append("GraphQL 'variables' must be an object")
    problems.extend(
        f"unknown GraphQL body key {k!r}" for k in body if k not in {"query", "variables", "operationName"}
    )
    return problems


@functools.cache
def _load_checker(path: str) -> OpenApiChecker:
    with open(path, encoding="utf-8") as handle:
        return OpenApiChecker(json.load(handle))


def openapi_checker() -> OpenApiChecker:
    """The checker over GitHub's description, loaded once per session (skip/fail when it is missing)."""
    return _load_checker(str(shared_path("fixtures", "github", "rest-api.openapi.json")))


# --- the fake's state ---------------------------------------------------------------------------------------


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str
    author: str
    labels: list[str]
    created_at: datetime
    state: str = "open"
    is_pull: bool = False


@dataclass
class FakeComment:
    id: int
    issue: int
    body: str
    author: str
    created_at: datetime
    updated_at: datetime


@dataclass
class FakePull:
    number: int
    head: str
    head_sha: str
    base: str
    node_id: str
    draft: bool = False
    merged: bool = False
    mergeable_state: str = "clean"
    merge_sha: str | None = None


@dataclass
class FakeThread:
    is_resolved: bool
    path: str | None
    body: str
    url: str | None
    author: str | None


@dataclass
class FakeRepo:
    full_name: str
    installation_id: int
    issues: dict[int, FakeIssue] = field(default_factory=dict)
    comments: list[FakeComment] = field(default_factory=list)
    reactions: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    pulls: dict[int, FakePull] = field(default_factory=dict)
    threads: dict[int, list[FakeThread]] = field(default_factory=dict)
    check_runs: dict[str, list[Json]] = field(default_factory=dict)
    statuses: dict[str, list[Json]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Injected:
    status: int = 502
    headers: dict[str, str] = field(default_factory=dict)
    message: str = "Server Error"
    hang: bool = False
    path_contains: str = ""


class Reply(Exception):
    """Raised by a route to answer with an error."""

    def __init__(self, status: int, message: str, errors: list[Json] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {"message": message, "documentation_url": "https://docs.github.com/rest"}
        if errors:
            self.body["errors"] = errors


def _sha(*parts: object) -> str:
    return hashlib.sha1(":".join(str(p) for p in parts).encode(), usedforsecurity=False).hexdigest()


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Handler = Callable[["FakeGitHub", "_Call"], Awaitable[tuple[int, Any]]]
_ROUTES: dict[tuple[str, str], Handler] = {}


def _route(method: str, template: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _ROUTES[(method, template)] = handler
        return handler

    return register


@dataclass
class _Call:
    request: FakeRequest
    params: dict[str, str]
    base_url: str
    login: str

    @property
    def repo_name(self) -> str:
        return f"{self.params['owner']}/{self.params['repo']}"

    def page(self, items: Sequence[Any], default_per_page: int = 30) -> tuple[list[Any], dict[str, str]]:
        per_page = min(int(self.request.query.get("per_page", [str(default_per_page)])[0]), 100)
        page = max(int(self.request.query.get("page", ["1"])[0]), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        links = []
        query = {k: v[0] for k, v in self.request.query.items()}

        def link(n: int, rel: str) -> str:
            return f'<{self.base_url}{self.request.path}?{urlencode({**query, "page": n})}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"Link": ", ".join(links)} if links else {}
        return list(items[(page - 1) * per_page : page * per_page]), headers


# --- FakeGitHub ---------------------------------------------------------------------------------------------


class FakeGitHub:
    def __init__(
        self,
        checker: OpenApiChecker | None = None,
        *,
        clock: Clock | None = None,
        api_prefix: str = "",
        graphql_path: str = "/graphql",
        tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.checker = checker or openapi_checker()
        self.clock: Clock = clock or SystemClock()
        self.api_prefix = api_prefix.rstrip("/")
        self.graphql_path = graphql_path
        #: static tokens accepted, and the login each acts as
        self.tokens: dict[str, str] = dict(tokens if tokens is not None else {"test-token": "facteur-bot"})
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[FakeRequest] = []
        self.violations: list[str] = []
        self.injected: deque[Injected] = deque()
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self.app_id: int | None = None
        self.app_key: RSAPublicKey | None = None
        self.jwt_claims: list[Json] = []
        #: installation tokens minted: token -> (installation id, expiry)
        self.minted: dict[str, tuple[int, datetime]] = {}
        #: tokens ever minted (a revoked one, dropped from ``minted``, is never issued again)
        self.mint_count = 0
        self.mutations: list[Json] = []
        self._next_id = 1000

    # -- seeding --
    def add_repo(self, full_name: str, *, branches: Mapping[str, str] | None = None) -> FakeRepo:
        repo = FakeRepo(full_name, installation_id=100 + len(self.repos))
        repo.branches.update(branches or {"main": _sha(full_name, "main")})
        self.repos[full_name] = repo
        return repo

    def repo(self, full_name: str) -> FakeRepo:
        return self.repos.get(full_name) or self.add_repo(full_name)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def add_issue(
        self,
        repo: str,
        *,
        title: str = "An issue",
        body: str = "",
        author: str = "octocat",
        labels: Sequence[str] = (),
    ) -> FakeIssue:
        state = self.repo(repo)
        number = len(state.issues) + 1
        issue = FakeIssue(number, title, body, author, list(labels), self.clock.now())
        state.issues[number] = issue
        return issue

    def add_comment(self, repo: str, number: int, body: str, *, author: str = "octocat") -> FakeComment:
        now = self.clock.now()
        comment = FakeComment(self.new_id(), number, body, author, now, now)
        self.repo(repo).comments.append(comment)
        return comment

    def add_pull(
        self,
        repo: str,
        *,
        head: str,
        base: str = "main",
        title: str = "A change",
        body: str = "",
        draft: bool = False,
        mergeable_state: str = "clean",
        author: str = "octocat",
    ) -> FakePull:
        state = self.repo(repo)
        state.branches.setdefault(head, _sha(repo, head))
        issue = self.add_issue(repo, title=title, body=body, author=author)
        issue.is_pull = True
        node_id = "PR_" + base64.b64encode(f"{repo}#{issue.number}".encode()).decode()
        pull = FakePull(
            issue.number, head, state.branches[head], base, node_id, draft, False, mergeable_state
        )
        state.pulls[issue.number] = pull
        return pull

    def add_thread(
        self, repo: str, number: int, *, body: str, resolved: bool = False, path: str | None = "src/app.py"
    ) -> FakeThread:
        url = f"https://github.com/{repo}/pull/{number}#discussion_r{self.new_id()}"
        thread = FakeThread(resolved, path, body, url, "reviewer")
        self.repo(repo).threads.setdefault(number, []).append(thread)
        return thread

    def add_check_run(
        self,
        repo: str,
        sha: str,
        name: str,
        *,
        status: str = "completed",
        conclusion: str | None = "success",
        title: str | None = None,
        summary: str | None = None,
    ) -> Json:
        output = {"title": title, "summary": summary}
        run = {
            "id": self.new_id(),
            "name": name,
            "status": status,
            "conclusion": conclusion,
            "output": output,
        }
        self.repo(repo).check_runs.setdefault(sha, []).append(run)
        return run

    def add_status(
        self, repo: str, sha: str, context: str, state: str, *, description: str | None = None
    ) -> Json:
        statuses = self.repo(repo).statuses.setdefault(sha, [])
        statuses[:] = [s for s in statuses if s["context"] != context]
        status = {"id": self.new_id(), "context": context, "state": state, "description": description}
        statuses.append(status)
        return status

    def configure_app(self, app_id: int, public_key: RSAPublicKey) -> None:
        self.app_id, self.app_key = app_id, public_key

    # -- failure injection --
    def inject(self, injected: Injected, times: int = 1) -> None:
        self.injected.extend(copy.deepcopy(injected) for _ in range(times))

    def fail(self, status: int = 502, times: int = 1) -> None:
        self.inject(Injected(status=status), times)

    def secondary_rate_limit(self, retry_after: int, times: int = 1) -> None:
        message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        self.inject(Injected(403, {"Retry-After": str(retry_after)}, message), times)

    def primary_rate_limit(self, reset_in: int, times: int = 1) -> None:
        reset = int(self.clock.now().timestamp()) + reset_in
        headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
        self.inject(Injected(403, headers, "API rate limit exceeded for installation."), times)

    def hang(self, times: int = 1) -> None:
        self.inject(Injected(hang=True), times)

    # -- serving --
    async def handle(self, request: httpx.Request) -> httpx.Response:
        """The httpx handler: ``httpx.MockTransport(fake.handle)``."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            status, headers, payload = await self._answer(request)
        finally:
            self.in_flight -= 1
        content = b"" if payload is None else json.dumps(payload).encode()
        if payload is not None:
            headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
        return httpx.Response(status, headers=headers, content=content)

    async def __call__(self, scope: MutableMapping[str, Any], receive: _Receive, send: _Send) -> None:
        """The ASGI app."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = next((v for k, v in headers if k.lower() == "host"), "localhost")
        raw_path = (scope.get("raw_path") or quote(scope["path"]).encode()).decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        url = f"{scope.get('scheme', 'http')}://{host}{raw_path}" + (f"?{query}" if query else "")
        response = await self.handle(httpx.Request(scope["method"], url, headers=headers, content=body))
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": response.content})

    async def _answer(self, request: httpx.Request) -> tuple[int, dict[str, str], Any]:
        raw_path = request.url.raw_path.decode("latin-1").split("?", 1)[0]
        query = parse_qs(request.url.query.decode("latin-1"), keep_blank_values=True)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = json.loads(request.content) if request.content else None
        except ValueError:
            body = {"__invalid_json__": True}
        recorded = FakeRequest(request.method, raw_path, query, headers, body)
        self.requests.append(recorded)
        if raw_path == self.graphql_path:
            path = "/graphql"
        elif raw_path.startswith(self.api_prefix + "/"):
            path = raw_path[len(self.api_prefix) :]
        else:
            return self._violation(
                [f"{request.method} {raw_path}: not under the API root {self.api_prefix}/"]
            )
        problems = self.checker.check(request.method, path, query, body, headers)
        if problems:
            return self._violation(problems)
        injected = next((i for i in self.injected if i.path_contains in path), None)
        if injected is not None:
            self.injected.remove(injected)
            if injected.hang:
                await asyncio.sleep(3600)
            return injected.status, injected.headers, {"message": injected.message}
        base_url = f"{request.url.scheme}://{request.url.netloc.decode('latin-1')}{self.api_prefix}"
        try:
            login = self._authenticate(path, headers.get("authorization", ""))
            if path == "/graphql":
                assert isinstance(body, dict)
                return 200, {}, self._graphql(body, login)
            found = self.checker.match(path)
            assert found is not None
            handler = _ROUTES.get((request.method, found.route.template))
            if handler is None:
                return (
                    501,
                    {},
                    {"message": f"FakeGitHub does not serve {request.method} {found.route.template}"},
                )
            call = _Call(
                FakeRequest(request.method, path, query, headers, body), found.params, base_url, login
            )
            status, payload = await handler(self, call)
        except Reply as reply:
            return reply.status, {}, reply.body
        extra: dict[str, str] = {}
        if isinstance(payload, tuple):
            payload, extra = payload
        self.violations.extend(
            self.checker.response_problems(request.method, found.route.template, status, payload)
        )
        return status, extra, payload

    def _violation(self, problems: list[str]) -> tuple[int, dict[str, str], Any]:
        self.violations.extend(problems)
        return (
            VIOLATION_STATUS,
            {},
            {"message": "request breaks GitHub's OpenAPI description: " + "; ".join(problems)},
        )

    def _authenticate(self, path: str, authorization: str) -> str:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() not in {"bearer", "token"} or not credential:
            raise Reply(401, "Requires authentication")
        if path.startswith("/app/") or path.endswith("/installation"):
            return self._verify_jwt(credential)
        if credential in self.tokens:
            return self.tokens[credential]
        minted = self.minted.get(credential)
        if minted is not None and self.clock.now() < minted[1]:
            return "facteur-app[bot]"
        raise Reply(401, "Bad credentials")

    def _verify_jwt(self, token: str) -> str:
        if self.app_key is None or self.app_id is None:
            raise Reply(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(
                token, self.app_key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
            )
        except jwt.InvalidTokenError:
            raise Reply(401, "A JSON web token could not be decoded") from None
        self.jwt_claims.append(claims)
        now = self.clock.now().timestamp()
        if claims.get("iss") != str(self.app_id):
            raise Reply(401, "'Issuer' claim ('iss') is not this app")
        if not (claims["iat"] <= now < claims["exp"]) or claims["exp"] - claims["iat"] > 600:
            raise Reply(401, "'Expiration time' claim ('exp') is too far in the future or already past")
        return "app"

    # -- GraphQL --
    def _graphql(self, body: Json, login: str) -> Json:
        query, variables = body["query"], body.get("variables") or {}
        if "markPullRequestReadyForReview" in query:
            return self._mark_ready(variables)
        if "reviewThreads" in query:
            return self._review_threads(query, variables)
        self.violations.append(f"FakeGitHub does not serve this GraphQL document: {query[:80]!r}")
        return {"errors": [{"message": "unsupported document"}]}

    def _mark_ready(self, variables: Json) -> Json:
        node_id = variables.get("pullRequestId")
        for repo in self.repos.values():
            for pull in repo.pulls.values():
                if pull.node_id == node_id:
                    pull.draft = False
                    if pull.mergeable_state == "draft":
                        pull.mergeable_state = "clean"
                    self.mutations.append({"markPullRequestReadyForReview": dict(variables)})
                    cid = variables.get("clientMutationId")
                    return {
                        "data": {
                            "markPullRequestReadyForReview": {
                                "clientMutationId": cid,
                                "pullRequest": {"isDraft": False},
                            }
                        }
                    }
        message = f"Could not resolve to a node with the global id of '{node_id}'"
        return {
            "data": {"markPullRequestReadyForReview": None},
            "errors": [{"type": "NOT_FOUND", "message": message}],
        }

    def _review_threads(self, query: str, variables: Json) -> Json:
        name = f"{variables.get('owner')}/{variables.get('name')}"
        repo = self.repos.get(name)
        if repo is None:
            message = f"Could not resolve to a Repository with the name '{name}'."
            return {"data": {"repository": None}, "errors": [{"type": "NOT_FOUND", "message": message}]}
        number = variables.get("number")
        if number not in repo.pulls:
            message = f"Could not resolve to a PullRequest with the number of {number}."
            return {
                "data": {"repository": {"pullRequest": None}},
                "errors": [{"type": "NOT_FOUND", "message": message}],
            }
        first = re.search(r"reviewThreads\(\s*first:\s*(\d+)", query)
        size = min(int(first.group(1)) if first else 100, 100)
        cursor = variables.get("cursor")
        start = int(base64.b64decode(cursor).decode()) if cursor else 0
        threads = repo.threads.get(number, [])
        nodes = [
            {
                "isResolved": t.is_resolved,
                "path": t.path,
                "comments": {"nodes": [{"bodyText": t.body, "url": t.url, "author": {"login": t.author}}]},
            }
            for t in threads[start : start + size]
        ]
        end = start + len(nodes)
        page_info = {
            "hasNextPage": end < len(threads),
            "endCursor": base64.b64encode(str(end).encode()).decode(),
        }
        connection = {"pageInfo": page_info, "nodes": nodes}
        return {"data": {"repository": {"pullRequest": {"reviewThreads": connection}}}}

    # -- JSON built from GitHub's examples --
    def issue_json(self, repo: str, issue: FakeIssue, base_url: str) -> Json:
        data: Json = self.checker.example("GET", "/repos/{owner}/{repo}/issues/{issue_number}", 200)
        label = data["labels"][0] if data.get("labels") else {}
        web = f"https://github.com/{repo}"
        data.update(
            id=issue.number * 7919,
            number=issue.number,
            title=issue.title,
            body=issue.body,
            state=issue.state,
            labels=[{**label, "name": name} for name in issue.labels],
            url=f"{base_url}/repos/{repo}/issues/{issue.number}",
            html_url=f"{web}/{'pull' if issue.is_pull else 'issues'}/{issue.number}",
            created_at=_iso(issue.created_at),
            comments=sum(1 for c in self.repo(repo).comments if c.issue == issue.number),
        )
        data["user"]["login"] = issue.author
        if issue.is_pull:
            pull = self.repo(repo).pulls[issue.number]
            data["pull_request"] = {
                "url": f"{base_url}/repos/{repo}/pulls/{issue.number}",
                "html_url": data["html_url"],
                "diff_url": data["html_url"] + ".diff",
                "patch_url": data["html_url"] + ".patch",
                "merged_at": _iso(self.clock.now()) if pull.merged else None,
            }
        else:
            data.pop("pull_request", None)
        return data

    def comment_json(self, repo: str, comment: FakeComment, base_url: str) -> Json:
        data: Json = self.checker.example("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}", 200)
        data.update(
            id=comment.id,
            body=comment.body,
            url=f"{base_url}/repos/{repo}/issues/comments/{comment.id}",
            html_url=f"https://github.com/{repo}/issues/{comment.issue}#issuecomment-{comment.id}",
            issue_url=f"{base_url}/repos/{repo}/issues/{comment.issue}",
            created_at=_iso(comment.created_at),
            updated_at=_iso(comment.updated_at),
        )
        data["user"]["login"] = comment.author
        return data

    def pull_json(self, repo: str, pull: FakePull, base_url: str) -> Json:
        issue = self.repo(repo).issues[pull.number]
        data: Json = self.checker.example("GET", "/repos/{owner}/{repo}/pulls/{pull_number}", 200)
        owner = repo.split("/", maxsplit=1)[0]
        data.update(
            number=pull.number,
            node_id=pull.node_id,
            title=issue.title,
            body=issue.body,
            state=issue.state,
            draft=pull.draft,
            merged=pull.merged,
            merged_at=_iso(self.clock.now()) if pull.merged else None,
            mergeable_state=pull.mergeable_state,
            merge_commit_sha=pull.merge_sha,
            url=f"{base_url}/repos/{repo}/pulls/{pull.number}",
            html_url=f"https://github.com/{repo}/pull/{pull.number}",
        )
        data["user"]["login"] = issue.author
        data["requested_teams"] = []  # GitHub's example team lacks fields its own schema requires
        data["head"].update(ref=pull.head, sha=pull.head_sha, label=f"{owner}:{pull.head}")
        data["base"].update(
            ref=pull.base, sha=self.repo(repo).branches.get(pull.base, ""), label=f"{owner}:{pull.base}"
        )
        return data


_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# --- routes (keyed by GitHub's own path templates) ----------------------------------------------------------


def _known_repo(fake: FakeGitHub, call: _Call) -> FakeRepo:
    repo = fake.repos.get(call.repo_name)
    if repo is None:
        raise Reply(404, "Not Found")
    return repo


def _issue(fake: FakeGitHub, call: _Call) -> tuple[FakeRepo, FakeIssue]:
    repo = _known_repo(fake, call)
    issue = repo.issues.get(int(call.params["issue_number"]))
    if issue is None:
        raise Reply(404, "Not Found")
    return repo, issue


def _pull(fake: FakeGitHub, call: _Call) -> tuple[FakeRepo, FakePull]:
    repo = _known_repo(fake, call)
    pull = repo.pulls.get(int(call.params["pull_number"]))
    if pull is None:
        raise Reply(404, "Not Found")
    return repo, pull


@_route("GET", "/repos/{owner}/{repo}/installation")
async def _installation(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    data = fake.checker.example("GET", "/repos/{owner}/{repo}/installation", 200)
    data["id"] = repo.installation_id
    return 200, data


@_route("POST", "/app/installations/{installation_id}/access_tokens")
async def _access_token(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    installation = int(call.params["installation_id"])
    if installation not in {r.installation_id for r in fake.repos.values()}:
        raise Reply(404, "Not Found")
    data = fake.checker.example("POST", "/app/installations/{installation_id}/access_tokens", 201)
    expires = fake.clock.now() + timedelta(hours=1)
    fake.mint_count += 1
    token = f"ghs_{installation}_{fake.mint_count:04d}"
    fake.minted[token] = (installation, expires)
    data.update(token=token, expires_at=_iso(expires))
    return 201, data


@_route("GET", "/repos/{owner}/{repo}/issues/{issue_number}")
async def _get_issue(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    _, issue = _issue(fake, call)
    return 200, fake.issue_json(call.repo_name, issue, call.base_url)


@_route("POST", "/repos/{owner}/{repo}/issues")
async def _create_issue(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    _known_repo(fake, call)
    body = call.request.body
    labels = [x if isinstance(x, str) else x.get("name", "") for x in body.get("labels", [])]
    issue = fake.add_issue(
        call.repo_name,
        title=str(body["title"]),
        body=body.get("body") or "",
        author=call.login,
        labels=labels,
    )
    return 201, fake.issue_json(call.repo_name, issue, call.base_url)


@_route("GET", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
async def _list_comments(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo, issue = _issue(fake, call)
    comments = [c for c in repo.comments if c.issue == issue.number]
    items, headers = call.page(comments)
    return 200, ([fake.comment_json(call.repo_name, c, call.base_url) for c in items], headers)


@_route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/comments")
async def _create_comment(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    _, issue = _issue(fake, call)
    comment = fake.add_comment(call.repo_name, issue.number, call.request.body["body"], author=call.login)
    return 201, fake.comment_json(call.repo_name, comment, call.base_url)


@_route("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}")
async def _update_comment(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    comment = next((c for c in repo.comments if c.id == int(call.params["comment_id"])), None)
    if comment is None:
        raise Reply(404, "Not Found")
    comment.body = call.request.body["body"]
    comment.updated_at = fake.clock.now()
    return 200, fake.comment_json(call.repo_name, comment, call.base_url)


@_route("GET", "/repos/{owner}/{repo}/issues/{issue_number}/reactions")
async def _list_reactions(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo, issue = _issue(fake, call)
    wanted = call.request.query.get("content")
    reactions = [r for r in repo.reactions.get(issue.number, []) if not wanted or r[0] == wanted[0]]
    items, headers = call.page(reactions)
    return 200, ([_reaction_json(fake, content, login) for content, login in items], headers)


@_route("POST", "/repos/{owner}/{repo}/issues/{issue_number}/reactions")
async def _add_reaction(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo, issue = _issue(fake, call)
    reaction = (call.request.body["content"], call.login)
    existing = repo.reactions.setdefault(issue.number, [])
    if reaction in existing:
        return 200, _reaction_json(fake, *reaction)
    existing.append(reaction)
    return 201, _reaction_json(fake, *reaction)


def _reaction_json(fake: FakeGitHub, content: str, login: str) -> Json:
    data: Json = fake.checker.example("POST", "/repos/{owner}/{repo}/issues/{issue_number}/reactions", 201)
    data["content"] = content
    data["user"]["login"] = login
    return data


@_route("GET", "/repos/{owner}/{repo}/pulls/{pull_number}")
async def _get_pull(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    _, pull = _pull(fake, call)
    return 200, fake.pull_json(call.repo_name, pull, call.base_url)


@_route("GET", "/repos/{owner}/{repo}/pulls")
async def _list_pulls(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    query = call.request.query
    state = query.get("state", ["open"])[0]
    pulls = [
        p
        for p in repo.pulls.values()
        if (state == "all" or repo.issues[p.number].state == state)
        and (not query.get("head") or query["head"][0] == f"{call.params['owner']}:{p.head}")
        and (not query.get("base") or query["base"][0] == p.base)
    ]
    items, headers = call.page(pulls)
    return 200, ([fake.pull_json(call.repo_name, p, call.base_url) for p in items], headers)


@_route("POST", "/repos/{owner}/{repo}/pulls")
async def _create_pull(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    body = call.request.body
    head, base = body["head"], body["base"]
    for key, branch in (("head", head), ("base", base)):
        if branch not in repo.branches:
            raise Reply(
                422, "Validation Failed", [{"resource": "PullRequest", "field": key, "code": "invalid"}]
            )
    if any(p.head == head and repo.issues[p.number].state == "open" for p in repo.pulls.values()):
        message = f"A pull request already exists for {call.params['owner']}:{head}."
        raise Reply(
            422, "Validation Failed", [{"resource": "PullRequest", "code": "custom", "message": message}]
        )
    pull = fake.add_pull(
        call.repo_name, head=head, base=base, title=body.get("title", ""), body=body.get("body") or "",
        draft=body.get("draft") is True, mergeable_state="draft" if body.get("draft") is True else "clean",
        author=call.login,
    )  # fmt: skip
    return 201, fake.pull_json(call.repo_name, pull, call.base_url)


@_route("PUT", "/repos/{owner}/{repo}/pulls/{pull_number}/merge")
async def _merge_pull(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo, pull = _pull(fake, call)
    body = call.request.body or {}
    issue = repo.issues[pull.number]
    if issue.state != "open" or pull.draft or pull.mergeable_state in {"dirty", "blocked", "draft"}:
        return 405, {"message": "Pull Request is not mergeable"}
    if body.get("sha") and body["sha"] != pull.head_sha:
        return 409, {"message": "Head branch was modified. Review and try the merge again."}
    pull.merged, issue.state = True, "closed"
    pull.merge_sha = _sha(call.repo_name, pull.number, "merge")
    repo.branches[pull.base] = pull.merge_sha
    data = fake.checker.example("PUT", "/repos/{owner}/{repo}/pulls/{pull_number}/merge", 200)
    data.update(sha=pull.merge_sha, merged=True, message="Pull Request successfully merged")
    return 200, data


@_route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs")
async def _check_runs(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    runs = repo.check_runs.get(call.params["ref"], [])
    items, headers = call.page(runs)
    template = fake.checker.example("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs", 200)
    example_run = template["check_runs"][0]
    check_runs = []
    for run in items:
        data = copy.deepcopy(example_run)
        data.update({k: v for k, v in run.items() if k != "output"})
        data.update(
            head_sha=call.params["ref"], html_url=f"https://github.com/{call.repo_name}/runs/{run['id']}"
        )
        data["output"].update(run["output"])
        check_runs.append(data)
    return 200, ({"total_count": len(runs), "check_runs": check_runs}, headers)


@_route("GET", "/repos/{owner}/{repo}/commits/{ref}/status")
async def _combined_status(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    statuses = repo.statuses.get(call.params["ref"], [])
    items, headers = call.page(statuses)
    data = fake.checker.example("GET", "/repos/{owner}/{repo}/commits/{ref}/status", 200)
    example_status = data["statuses"][0]
    states = {s["state"] for s in statuses}
    data.update(
        sha=call.params["ref"],
        total_count=len(statuses),
        state="failure"
        if states & {"failure", "error"}
        else "pending"
        if states - {"success"}
        else "success",
        statuses=[{**example_status, **s, "target_url": f"https://ci.example.com/{s['id']}"} for s in items],
    )
    return 200, (data, headers)


@_route("GET", "/repos/{owner}/{repo}/branches/{branch}")
async def _get_branch(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    sha = repo.branches.get(call.params["branch"])
    if sha is None:
        raise Reply(404, "Branch not found")
    data = fake.checker.example("GET", "/repos/{owner}/{repo}/branches/{branch}", 200)
    data["name"] = call.params["branch"]
    data["commit"]["sha"] = sha
    return 200, data


@_route("POST", "/repos/{owner}/{repo}/git/refs")
async def _create_ref(fake: FakeGitHub, call: _Call) -> tuple[int, Any]:
    repo = _known_repo(fake, call)
    ref, sha = call.request.body["ref"], call.request.body["sha"]
    if not ref.startswith("refs/heads/") or ref.count("/") < 2:
        raise Reply(422, "Reference name is not valid")
    name = ref.removeprefix("refs/heads/")
    if name in repo.branches:
        raise Reply(422, "Reference already exists")
    repo.branches[name] = sha
    data = fake.checker.example("POST", "/repos/{owner}/{repo}/git/refs", 201)
    data.update(ref=ref, url=f"{call.base_url}/repos/{call.repo_name}/git/{ref}")
    data["object"]["sha"] = sha
    return 201, data


# --- serving over a real socket -----------------------------------------------------------------------------


@contextmanager
def serve(fake: FakeGitHub) -> Iterator[str]:
    """Serve ``fake`` with uvicorn on a free loopback port (in a thread); yields its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(fake, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("FakeGitHub did not start under uvicorn")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}{fake.api_prefix}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# --- wiring the adapter to the fake -------------------------------------------------------------------------


class FakeSleep:
    """A sleep hook that records each pause and moves ``clock`` on instead of waiting."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)
