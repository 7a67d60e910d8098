"""The GitHub adapter of the Forge port: REST for most calls, GraphQL for review threads and undrafting.

See docs/forge.md. Transport, budget, retries and rate limits live in ``github_http``; authentication in
``github_auth``; JSON-to-record mapping in ``github_payloads``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from facteur.clock import Clock
from facteur.errors import ForgeError, ForgeNotFound
from facteur.forge import github_payloads as payloads
from facteur.forge.github_auth import AppAuth, GitHubAuth, TokenAuth, load_private_key
from facteur.forge.github_http import GitHubHttp, Sleep, decode, error_message, repo_path, split_repo
from facteur.forge.port import (
    Branch,
    CheckRun,
    Comment,
    CommitStatus,
    Issue,
    IssueDraft,
    MergeMethod,
    MergeResult,
    PullRequest,
    Reaction,
    ReviewThread,
)
from facteur.settings import GitHubSettings

T = TypeVar("T")

PER_PAGE = 100

REVIEW_THREADS_QUERY = """
query($owner: String!, $name: String!, $number: Int!, $cursor: String) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviewThreads(first: 50, after: $cursor) {
        pageInfo { hasNextPage endCursor }
        nodes { isResolved path comments(last: 1) { nodes { bodyText url author { login } } } }
      }
    }
  }
}
"""

MARK_READY_MUTATION = """
mutation($pullRequestId: ID!, $clientMutationId: String) {
  markPullRequestReadyForReview(input: {pullRequestId: $pullRequestId, clientMutationId: $clientMutationId}) {
    clientMutationId
    pullRequest { isDraft }
  }
}
"""


def _last_page(response: httpx.Response) -> int | None:
    url = response.links.get("last", {}).get("url")
    if not url:
        return None
    pages = parse_qs(urlsplit(url).query).get("page")
    try:
        return int(pages[0]) if pages else None
    except ValueError:
        return None


class GitHubForge:
    """The Forge port over GitHub's REST and GraphQL APIs (github.com or GitHub Enterprise Server)."""

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self._http = GitHubHttp(
            api_url=settings.api_url,
            user_agent=settings.user_agent,
            timeout_seconds=settings.timeout_seconds,
            max_concurrency=settings.max_concurrency,
            max_attempts=settings.max_attempts,
            transport=transport,
            clock=clock,
            sleep=sleep,
        )
        self._auth: GitHubAuth
        if settings.app_id is not None and settings.private_key is not None:
            key = load_private_key(settings.private_key.get_secret_value())
            self._auth = AppAuth(self._http, app_id=settings.app_id, private_key=key)
        else:
            token = settings.token.get_secret_value() if settings.token else None
            self._http.add_secret(token or "", pinned=True)
            self._auth = TokenAuth(token)

    async def close(self) -> None:
        await self._http.close()

    async def git_token(self, repo: str) -> str | None:
        """The token git may push ``repo`` with: the configured token, or a GitHub App installation token
        (minted, cached until shortly before it expires, like the API's)."""
        authorization = await self._auth.authorization(repo)
        return authorization.removeprefix("Bearer ") if authorization else None

    # --- plumbing -------------------------------------------------------------------------------------------
    async def _request(
        self,
        repo: str,
        method: str,
        url: str,
        what: str,
        *,
        params: dict[str, str | int] | None = None,
        json: Any = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send one request; on a 401 the credential is forgotten and, if a fresh one differs, the request is
        sent once more within the same budget."""
        async with self._http.call():
            authorization = await self._auth.authorization(repo)
            for retried in (False, True):
                response = await self._http.request(
                    method, url, what=what, authorization=authorization, params=params, json=json,
                    accept=accept | {401},
                )  # fmt: skip
                if response.status_code != 401:
                    return response
                self._auth.forget(repo)
                if retried:
                    break
                fresh = await self._auth.authorization(repo)
                if fresh == authorization:
                    break
                authorization = fresh
        raise self._http.refusal(response, what)

    async def _json(self, repo: str, method: str, url: str, what: str, **kwargs: Any) -> Any:
        return decode(await self._request(repo, method, url, what, **kwargs), what)

    async def _graphql(self, repo: str, query: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        body = payloads.as_object(
            await self._json(
                repo, "POST", self._http.graphql_url, what, json={"query": query, "variables": variables}
            ),
            what,
        )
        errors = body.get("errors")
        if errors:
            items = [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []
            text = "; ".join(str(e.get("message", "")) for e in items) or str(errors)
            if any(e.get("type") == "NOT_FOUND" for e in items):
                raise ForgeNotFound(f"GitHub has no {what}: {self._http.redact(text)}")
            raise ForgeError(f"GitHub refused {what}: {self._http.redact(text)}")
        return payloads.as_object(body.get("data"), what)

    # --- issues ---------------------------------------------------------------------------------------------
    async def get_issue(self, repo: str, number: int) -> Issue:
        what = f"issue #{number} in {repo}"
        data = await self._json(repo, "GET", f"{repo_path(repo)}/issues/{number}", what)
        return payloads.issue(payloads.as_object(data, what))

    async def create_issue(self, repo: str, draft: IssueDraft) -> Issue:
        what = f"a new issue in {repo}"
        body: dict[str, Any] = {"title": draft.title, "body": draft.body}
        if draft.labels:
            body["labels"] = list(draft.labels)
        data = await self._json(repo, "POST", f"{repo_path(repo)}/issues", what, json=body)
        return payloads.issue(payloads.as_object(data, what))

    # --- comments -------------------------------------------------------------------------------------------
    async def list_comments(self, repo: str, number: int, *, limit: int = 100) -> list[Comment]:
        # GitHub lists issue comments oldest first and ignores sort/direction here: read the last pages.
        if limit <= 0:
            return []
        what = f"comments of #{number} in {repo}"
        url = f"{repo_path(repo)}/issues/{number}/comments"
        async with self._http.call():
            first = await self._request(repo, "GET", url, what, params={"per_page": PER_PAGE, "page": 1})
            pages: list[list[Any]] = []
            page, seen = _last_page(first) or 1, 0
            while page > 1 and seen < limit:
                data = await self._json(repo, "GET", url, what, params={"per_page": PER_PAGE, "page": page})
                items = payloads.as_list(data, what)
                pages.insert(0, items)
                seen += len(items)
                page -= 1
            if page == 1:
                pages.insert(0, payloads.as_list(decode(first, what), what))
        ordered = [payloads.comment(payloads.as_object(item, what)) for items in pages for item in items]
        return ordered[::-1][:limit]

    async def latest_comment_with(self, repo: str, number: int, marker: str) -> Comment | None:
        for comment in await self.list_comments(repo, number, limit=PER_PAGE):
            if marker in comment.body:
                return comment
        return None

    async def create_comment(self, repo: str, number: int, body: str) -> Comment:
        what = f"a new comment on #{number} in {repo}"
        url = f"{repo_path(repo)}/issues/{number}/comments"
        data = await self._json(repo, "POST", url, what, json={"body": body})
        return payloads.comment(payloads.as_object(data, what))

    async def update_comment(self, repo: str, comment_id: int, body: str) -> Comment:
        what = f"comment {comment_id} in {repo}"
        url = f"{repo_path(repo)}/issues/comments/{comment_id}"
        data = await self._json(repo, "PATCH", url, what, json={"body": body})
        return payloads.comment(payloads.as_object(data, what))

    # --- reactions ------------------------------------------------------------------------------------------
    async def add_reaction(self, repo: str, number: int, content: Reaction) -> None:
        # GitHub answers 200 instead of 201 when this user already reacted so: idempotent by itself.
        what = f"a {content.value} reaction on #{number} in {repo}"
        url = f"{repo_path(repo)}/issues/{number}/reactions"
        await self._request(repo, "POST", url, what, json={"content": content.value})

    async def has_reaction(self, repo: str, number: int, content: Reaction) -> bool:
        what = f"{content.value} reactions on #{number} in {repo}"
        url = f"{repo_path(repo)}/issues/{number}/reactions"
        data = await self._json(repo, "GET", url, what, params={"content": content.value, "per_page": 1})
        return len(payloads.as_list(data, what)) > 0

    # --- pull requests --------------------------------------------------------------------------------------
    async def get_pull(self, repo: str, number: int) -> PullRequest:
        what = f"pull request #{number} in {repo}"
        data = await self._json(repo, "GET", f"{repo_path(repo)}/pulls/{number}", what)
        return payloads.pull_request(payloads.as_object(data, what))

    async def pulls_for_head(self, repo: str, head: str, *, state: str = "open") -> list[PullRequest]:
        owner, _ = split_repo(repo)
        what = f"{state} pull requests from {head} in {repo}"
        params = {"head": f"{owner}:{head}", "state": state}
        url = f"{repo_path(repo)}/pulls"
        return await self._paged(repo, url, what, None, payloads.pull_request, params=params)

    async def create_draft_pull(
        self, repo: str, *, head: str, base: str, title: str, body: str
    ) -> PullRequest:
        what = f"a draft pull request from {head} to {base} in {repo}"
        request = {"title": title, "head": head, "base": base, "body": body, "draft": True}
        data = await self._json(repo, "POST", f"{repo_path(repo)}/pulls", what, json=request)
        return payloads.pull_request(payloads.as_object(data, what))

    async def mark_ready(self, repo: str, pull: PullRequest) -> None:
        if not pull.draft:
            return
        async with self._http.call():
            node_id = pull.node_id or (await self.get_pull(repo, pull.number)).node_id
            if not node_id:
                raise ForgeError(f"GitHub's pull request #{pull.number} in {repo} lacks node_id")
            variables = {"pullRequestId": node_id, "clientMutationId": f"ready-{pull.number}"}
            what = f"marking pull request #{pull.number} in {repo} ready for review"
            await self._graphql(repo, MARK_READY_MUTATION, variables, what)

    async def merge_pull(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.MERGE,
        expected_head_sha: str | None = None,
    ) -> MergeResult:
        what = f"merging pull request #{number} in {repo}"
        body = {"merge_method": method.value}
        if expected_head_sha:
            body["sha"] = expected_head_sha
        url = f"{repo_path(repo)}/pulls/{number}/merge"
        response = await self._request(repo, "PUT", url, what, json=body, accept=frozenset({405, 409}))
        if response.status_code in (405, 409):
            message = self._http.redact(error_message(response)) or response.reason_phrase
            return MergeResult(merged=False, sha=None, message=message)
        return payloads.merge_result(payloads.as_object(decode(response, what), what))

    # --- review context -------------------------------------------------------------------------------------
    async def review_threads(self, repo: str, number: int) -> list[ReviewThread]:
        owner, name = split_repo(repo)
        what = f"review threads of pull request #{number} in {repo}"
        threads: list[ReviewThread] = []
        cursor: str | None = None
        async with self._http.call():
            while True:
                variables = {"owner": owner, "name": name, "number": number, "cursor": cursor}
                data = await self._graphql(repo, REVIEW_THREADS_QUERY, variables, what)
                repository = data.get("repository")
                pull = repository.get("pullRequest") if isinstance(repository, dict) else None
                if not isinstance(pull, dict):
                    raise ForgeNotFound(f"GitHub has no pull request #{number} in {repo}")
                connection = payloads.as_object(pull.get("reviewThreads"), what)
                for node in connection.get("nodes") or ():
                    if isinstance(node, dict):
                        threads.append(payloads.review_thread(node))
                page_info = payloads.as_object(connection.get("pageInfo"), what)
                cursor = page_info.get("endCursor") if isinstance(page_info.get("endCursor"), str) else None
                if page_info.get("hasNextPage") is not True or cursor is None:
                    return threads

    async def check_runs(self, repo: str, sha: str) -> list[CheckRun]:
        url = f"{repo_path(repo)}/commits/{quote(sha, safe='')}/check-runs"
        return await self._paged(
            repo, url, f"check runs of {sha} in {repo}", "check_runs", payloads.check_run
        )

    async def commit_statuses(self, repo: str, sha: str) -> list[CommitStatus]:
        url = f"{repo_path(repo)}/commits/{quote(sha, safe='')}/status"
        what = f"commit statuses of {sha} in {repo}"
        return await self._paged(repo, url, what, "statuses", payloads.commit_status)

    async def _paged(
        self,
        repo: str,
        url: str,
        what: str,
        field: str | None,
        parse: Callable[[payloads.Json], T],
        *,
        params: Mapping[str, str | int] | None = None,
    ) -> list[T]:
        """Every item of a paged answer, page by page: a bare list when ``field`` is None, else an object
        ``{total_count, <field>: [...]}``."""
        found: list[T] = []
        async with self._http.call():
            page = 1
            while True:
                query = {**(params or {}), "per_page": PER_PAGE, "page": page}
                data = await self._json(repo, "GET", url, what, params=query)
                total: object = None
                if field is None:
                    items = payloads.as_list(data, what)
                else:
                    answer = payloads.as_object(data, what)
                    items = payloads.as_list(answer.get(field), what)
                    total = answer.get("total_count")
                found.extend(parse(payloads.as_object(item, what)) for item in items)
                if len(items) < PER_PAGE or (isinstance(total, int) and len(found) >= total):
                    return found
                page += 1

    # --- branches -------------------------------------------------------------------------------------------
    async def get_branch(self, repo: str, name: str) -> Branch | None:
        what = f"branch {name} in {repo}"
        url = f"{repo_path(repo)}/branches/{quote(name, safe='')}"
        response = await self._request(repo, "GET", url, what, accept=frozenset({404}))
        if response.status_code == 404:
            return None
        return payloads.branch(payloads.as_object(decode(response, what), what))

    async def create_branch(self, repo: str, name: str, sha: str) -> Branch:
        what = f"a new branch {name} in {repo}"
        body = {"ref": f"refs/heads/{name}", "sha": sha}
        data = payloads.as_object(
            await self._json(repo, "POST", f"{repo_path(repo)}/git/refs", what, json=body), what
        )
        target = payloads.as_object(data.get("object"), what)
        return Branch(name, payloads.required(target, "sha", str, "git ref object"))
