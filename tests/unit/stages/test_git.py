"""facteur.stages.git against real git: local bare repositories, and a local HTTPS server for auth."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import shlex
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from facteur.executors.processes import alive
from facteur.stages.git import (
    Git,
    GitAuth,
    GitError,
    InvalidBranchName,
    MergeConflict,
    check_branch_name,
    without_credentials,
)
from tests.unit.stages.gitrepos import Remote, git, isolate_git, write_files

TOKEN = "ghs_s3cretTokenValue42"
ENCODED = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture(autouse=True)
def _isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_git(monkeypatch)


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    origin = Remote(tmp_path / "origin")
    origin.commit("main", {"README.md": "hello\n", ".gitignore": "*.log\n"})
    return origin


async def cloned(
    remote: Remote, workdir: Path, *, auth: GitAuth | None = None, log_file: Path | None = None
) -> Git:
    repo = Git(
        workdir, auth=auth, log_file=log_file, user_name="Facteur Test", user_email="facteur-test@example.com"
    )
    await repo.clone(remote.url)
    return repo


# --- branch names ----------------------------------------------------------------------------------------

VALID = ["main", "feature/x", "codex/issue-12-add-login", "a.b", "v1.2", "a@b", "a/@/b", "ünïcode", "x-"]
INVALID = ["", "-x", "a..b", "a b", "x.lock", "a/x.lock/b", ".hidden", "a/.b", "a//b", "/a", "a/", "a."]
INVALID += ["a@{b", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "a\x01", "a\x7f", "tab\tbed", "HEAD", "@"]


@pytest.mark.parametrize("name", VALID)
def test_valid_branch_names_are_returned(name: str) -> None:
    assert check_branch_name(name) == name


@pytest.mark.parametrize("name", INVALID)
def test_invalid_branch_names_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(InvalidBranchName) as caught:
        check_branch_name(name)
    assert repr(name) in caught.value.message
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, GitError)


@pytest.mark.parametrize("name", [n for n in VALID + INVALID if n != "@"])
def test_the_validator_agrees_with_git_check_ref_format(name: str, tmp_path: Path) -> None:
    """``@`` is the one name refused here that git takes (it means HEAD in a revision)."""
    accepted_by_git = True
    try:
        git("check-ref-format", "--branch", name, cwd=tmp_path)
    except AssertionError:
        accepted_by_git = False
    try:
        check_branch_name(name)
        accepted_here = True
    except InvalidBranchName:
        accepted_here = False
    assert accepted_here == accepted_by_git


# --- auth ------------------------------------------------------------------------------------------------


def test_git_auth_hides_the_token_and_configures_the_header() -> None:
    auth = GitAuth(token=TOKEN)
    assert TOKEN not in repr(auth)
    assert auth.env() == {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.https://github.com/.extraheader",
        "GIT_CONFIG_VALUE_0": f"Authorization: basic {ENCODED}",
    }
    assert GitAuth(token=TOKEN, host="ghe.example.com:8443").env()["GIT_CONFIG_KEY_0"] == (
        "http.https://ghe.example.com:8443/.extraheader"
    )


@pytest.mark.parametrize(("token", "host"), [("", "github.com"), ("a b", "github.com"), ("t\n", "x")])
def test_git_auth_refuses_a_token_that_would_break_the_header(token: str, host: str) -> None:
    with pytest.raises(GitError, match="token"):
        GitAuth(token=token, host=host)


@pytest.mark.parametrize("host", ["https://github.com", "github.com/owner", "", "evil host"])
def test_git_auth_refuses_what_is_not_a_host(host: str) -> None:
    with pytest.raises(GitError, match="invalid git host"):
        GitAuth(token=TOKEN, host=host)


async def test_the_token_reaches_git_as_config_and_never_argv_the_log_or_the_checkout(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    log = tmp_path / "logs" / "git.log"
    repo = await cloned(remote, tmp_path / "work", auth=GitAuth(token=TOKEN), log_file=log)
    seen = await repo.run("config", "--get-urlmatch", "http.extraheader", "https://github.com/owner/repo.git")
    assert seen.stdout.strip() == f"Authorization: basic {ENCODED}"
    write_files(repo.workdir, {"new.txt": "x\n"})
    await repo.commit_all("add new.txt")
    await repo.push("feature")
    assert remote.sha("feature") == await repo.head_sha()
    logged = log.read_text()
    assert "config --get-urlmatch" in logged
    assert "Authorization: basic ***" in logged
    assert "push" in trace.read_text()
    for text in (logged, trace.read_text(), (repo.workdir / ".git" / "config").read_text()):
        assert TOKEN not in text
        assert ENCODED not in text


# --- a local HTTPS server that asks for credentials -------------------------------------------------------


@dataclass
class HttpsServer:
    port: int
    cafile: Path
    authorizations: list[str | None] = field(default_factory=list)

    def url(self, path: str = "owner/repo.git", credentials: str = "") -> str:
        return f"https://{credentials}127.0.0.1:{self.port}/{path}"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpsServer]:
    """Answers every request with 401 (basic auth wanted) and records the Authorization header."""
    cert_file, key_file = _self_signed(tmp_path)
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setenv("GIT_SSL_CAINFO", str(cert_file))
    try:
        yield HttpsServer(port=server.server_address[1], cafile=cert_file, authorizations=seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_the_token_is_sent_as_a_basic_authorization_header(
    https_server: HttpsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = tmp_path / "trace.txt"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    log = tmp_path / "git.log"
    auth = GitAuth(token=TOKEN, host=f"127.0.0.1:{https_server.port}")
    repo = Git(tmp_path / "work", auth=auth, log_file=log)
    with pytest.raises(GitError) as caught:
        await repo.clone(https_server.url())
    assert https_server.authorizations
    assert set(https_server.authorizations) == {f"basic {ENCODED}"}
    for text in (caught.value.message, log.read_text(), trace.read_text()):
        assert TOKEN not in text
        assert ENCODED not in text


async def test_a_remote_that_wants_credentials_fails_fast_instead_of_prompting(
    https_server: HttpsServer, tmp_path: Path
) -> None:
    repo = Git(tmp_path / "work", timeout_seconds=30)
    started = time.monotonic()
    with pytest.raises(GitError) as caught:
        await repo.clone(https_server.url())
    assert time.monotonic() - started < 10
    assert "terminal prompts disabled" in caught.value.message
    assert https_server.authorizations == [None]
    assert not (tmp_path / "work").exists()


async def test_credentials_in_a_url_are_shown_nowhere(https_server: HttpsServer, tmp_path: Path) -> None:
    log = tmp_path / "git.log"
    repo = Git(tmp_path / "work", log_file=log)
    with pytest.raises(GitError) as caught:
        await repo.clone(https_server.url(credentials="someone:hunter2@"))
    # curl asks without credentials first, then with the URL's
    assert https_server.authorizations[-1] == f"Basic {base64.b64encode(b'someone:hunter2').decode()}"
    assert https_server.url() in caught.value.message
    for text in (caught.value.message, log.read_text()):
        assert "hunter2" not in text
        assert "someone:" not in text


def test_without_credentials_strips_the_user_part_of_urls() -> None:
    text = "cloning https://x-access-token:abc@github.com/o/r.git and file:///srv/r.git, git@host:o/r"
    assert without_credentials(text) == (
        "cloning https://github.com/o/r.git and file:///srv/r.git, git@host:o/r"
    )


# --- the runner ------------------------------------------------------------------------------------------


async def test_commands_run_non_interactively_with_a_clean_environment(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = await cloned(remote, tmp_path / "work")
    monkeypatch.setenv("FACTEUR_GITHUB__TOKEN", "settings-secret")
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_ASKPASS", "/usr/bin/some-askpass")
    shown = await repo.run("-c", "alias.showenv=!env; readlink /proc/self/fd/0", "showenv")
    lines = set(shown.stdout.splitlines())
    expected = {
        "GIT_TERMINAL_PROMPT=0",
        "GIT_ASKPASS=",
        "GCM_INTERACTIVE=never",
        "GIT_PAGER=cat",
        "PAGER=cat",
        "GIT_EDITOR=true",
        "LC_ALL=C",
        "GIT_AUTHOR_NAME=Facteur Test",
        "GIT_AUTHOR_EMAIL=facteur-test@example.com",
        "GIT_COMMITTER_NAME=Facteur Test",
        "GIT_COMMITTER_EMAIL=facteur-test@example.com",
        "/dev/null",
    }
    assert expected <= lines
    assert not any(line.startswith(("FACTEUR_", "GIT_DIR=")) for line in lines)
    assert (await repo.run("var", "GIT_EDITOR")).stdout.strip() == "true"


async def test_a_failing_command_names_itself_and_git_s_last_words(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    with pytest.raises(GitError) as caught:
        await repo.run("rev-parse", "--verify", "no-such-ref")
    assert caught.value.message == (
        "git rev-parse --verify no-such-ref failed (exit 128): fatal: Needed a single revision"
    )
    result = await repo.run("rev-parse", "--verify", "no-such-ref", check=False)
    assert result.returncode == 128
    assert result.stdout == ""


async def test_every_command_and_its_output_is_logged(remote: Remote, tmp_path: Path) -> None:
    log = tmp_path / "git.log"
    repo = await cloned(remote, tmp_path / "work", log_file=log)
    await repo.run("log", "--format=%s")
    await repo.run("rev-parse", "nope", check=False)
    logged = log.read_text()
    assert f"$ git clone -- {remote.url} {repo.workdir}" in logged
    assert "$ git log --format=%s\nchange README.md, .gitignore\n[exit 0, " in logged
    assert "$ git rev-parse nope\nnope\nfatal: ambiguous argument 'nope'" in logged
    assert "[exit 128, " in logged


async def test_a_command_that_hangs_is_killed_at_the_timeout(remote: Remote, tmp_path: Path) -> None:
    """An upload-pack that never answers stands for a server that hangs; it is git's grandchild, so
    the whole process group must go."""
    pid_file = tmp_path / "hang.pid"
    script = tmp_path / "hang.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {shlex.quote(str(pid_file))}\nexec sleep 30\n")
    script.chmod(0o755)
    log = tmp_path / "git.log"
    repo = Git(tmp_path, timeout_seconds=0.5, log_file=log)
    started = time.monotonic()
    with pytest.raises(GitError) as caught:
        await repo.run("ls-remote", f"--upload-pack={script}", remote.url)
    assert time.monotonic() - started < 5
    assert caught.value.message == (
        f"git ls-remote --upload-pack={script} {remote.url} timed out after 0.5s and was killed"
    )
    assert "[killed: timed out after 0.5s, " in log.read_text()
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not alive(pid)


async def test_git_never_works_on_the_repository_around_the_workdir(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    outer.mkdir()
    git("init", "--quiet", cwd=outer)
    inner = outer / "inner"
    inner.mkdir()
    repo = Git(inner)
    with pytest.raises(GitError, match="not a git repository"):
        await repo.run("status")
    assert await repo.worktree_problem() is not None


async def test_a_missing_workdir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match=r"git status: .*missing is not a directory"):
        await Git(tmp_path / "missing").run("status")


# --- queries ---------------------------------------------------------------------------------------------


async def test_head_branch_and_remote_branches(remote: Remote, tmp_path: Path) -> None:
    remote.commit("feature", {"f.txt": "f\n"}, start="main")
    repo = await cloned(remote, tmp_path / "work")
    assert await repo.head_sha() == remote.sha("main")
    assert await repo.current_branch() == "main"
    assert await repo.remote_branch_exists("feature")
    assert not await repo.remote_branch_exists("other")
    assert await repo.has_remote_branches()
    assert await repo.origin_url() == remote.url
    assert await repo.worktree_problem() is None
    with pytest.raises(InvalidBranchName):
        await repo.remote_branch_exists("-x")
    await repo.run("checkout", "--detach")
    assert await repo.current_branch() is None


async def test_fetch_prunes_branches_deleted_at_origin_and_sees_new_ones(
    remote: Remote, tmp_path: Path
) -> None:
    remote.commit("old", {"o.txt": "o\n"}, start="main")
    repo = await cloned(remote, tmp_path / "work")
    remote.delete("old")
    remote.commit("new", {"n.txt": "n\n"}, start="main")
    await repo.fetch()
    assert not await repo.remote_branch_exists("old")
    assert await repo.remote_branch_exists("new")


async def test_has_changes_counts_tracked_and_untracked_but_not_ignored_files(
    remote: Remote, tmp_path: Path
) -> None:
    repo = await cloned(remote, tmp_path / "work")
    assert not await repo.has_changes()
    write_files(repo.workdir, {"debug.log": "ignored\n"})
    assert not await repo.has_changes()
    write_files(repo.workdir, {"notes/new.txt": "new\n"})
    assert await repo.has_changes()
    assert await repo.status_porcelain() == "?? notes/new.txt\n"
    (repo.workdir / "notes" / "new.txt").unlink()
    write_files(repo.workdir, {"README.md": "changed\n"})
    assert await repo.status_porcelain() == " M README.md\n"


# --- commit and push -------------------------------------------------------------------------------------


async def test_commit_all_commits_everything_as_the_configured_author(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    assert await repo.commit_all("nothing") is None
    before = await repo.head_sha()
    write_files(repo.workdir, {"README.md": "changed\n", "src/new.py": "x = 1\n", "debug.log": "no\n"})
    sha = await repo.commit_all("#12 first line\n\nbody")
    assert sha is not None
    assert sha == await repo.head_sha() != before
    shown = await repo.run("log", "-1", "--format=%an <%ae>|%cn <%ce>|%B")
    who = "Facteur Test <facteur-test@example.com>"
    assert shown.stdout.strip() == f"{who}|{who}|#12 first line\n\nbody"
    files = (await repo.run("ls-files")).stdout.split()
    assert "src/new.py" in files
    assert "debug.log" not in files
    assert not await repo.has_changes()  # debug.log is ignored
    assert await repo.commit_all("again") is None


async def test_commit_all_needs_a_message(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    write_files(repo.workdir, {"a.txt": "a\n"})
    with pytest.raises(GitError, match="needs a message"):
        await repo.commit_all("  ")


async def test_push_creates_the_remote_branch(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    write_files(repo.workdir, {"a.txt": "a\n"})
    sha = await repo.commit_all("add a")
    await repo.push("codex/feature-1")
    assert remote.sha("codex/feature-1") == sha
    assert remote.sha("main") != sha
    assert await repo.remote_branch_exists("codex/feature-1")


async def test_push_with_lease_replaces_only_what_was_last_seen(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    write_files(repo.workdir, {"a.txt": "a\n"})
    await repo.commit_all("add a")
    await repo.push("feature")
    await repo.run("commit", "--quiet", "--amend", "-m", "add a, reworded")
    pushed = r"git push --no-verify origin HEAD:refs/heads/feature failed .*rejected.*non-fast-forward"
    with pytest.raises(GitError, match=pushed):
        await repo.push("feature")
    await repo.push("feature", force_with_lease=True)
    assert remote.sha("feature") == await repo.head_sha()

    remote.commit("feature", {"b.txt": "someone else\n"})
    await repo.run("commit", "--quiet", "--amend", "-m", "reworded again")
    with pytest.raises(GitError, match="stale info"):
        await repo.push("feature", force_with_lease=True)
    assert remote.files("feature")["b.txt"] == b"someone else\n"


async def test_push_refuses_an_invalid_branch_before_running_git(remote: Remote, tmp_path: Path) -> None:
    log = tmp_path / "git.log"
    repo = await cloned(remote, tmp_path / "work")
    repo_logged = Git(repo.workdir, log_file=log)
    with pytest.raises(InvalidBranchName, match="'--force'"):
        await repo_logged.push("--force")
    assert not log.exists()


async def test_merge_conflict_is_aborted_and_names_the_files(remote: Remote, tmp_path: Path) -> None:
    remote.commit("other", {"README.md": "theirs\n", "x.txt": "x\n"}, start="main")
    repo = await cloned(remote, tmp_path / "work")
    write_files(repo.workdir, {"README.md": "ours\n"})
    before = await repo.commit_all("ours")
    with pytest.raises(MergeConflict) as caught:
        await repo.merge("origin/other", message="merge other")
    assert caught.value.files == ("README.md",)
    assert caught.value.message == "merging origin/other conflicts in README.md"
    assert await repo.head_sha() == before
    assert await repo.status_porcelain() == ""
    assert (await repo.run("rev-parse", "--verify", "--quiet", "MERGE_HEAD", check=False)).returncode == 1


# --- patches ---------------------------------------------------------------------------------------------


async def test_diff_patch_carries_every_change_and_applies_elsewhere(remote: Remote, tmp_path: Path) -> None:
    remote.commit(
        "main",
        {
            "change.txt": "one\ntwo\n",
            "gone.txt": "bye\n",
            "latin.txt": "caf\xe9\n".encode("latin-1"),
            "image.bin": bytes(range(256)),
        },
    )
    repo = await cloned(remote, tmp_path / "work")
    write_files(
        repo.workdir,
        {
            "change.txt": "one\n2\n",
            "gone.txt": None,
            "latin.txt": "na\xefve\n".encode("latin-1"),
            "image.bin": bytes(range(255, -1, -1)) + b"\0\0",
            "dir/new.txt": "brand new\n",
            "debug.log": "ignored\n",
        },
    )
    await repo.run("add", "change.txt")
    index_before = (await repo.run("diff", "--cached", "--name-only")).stdout

    patch = await repo.diff_patch("origin/main")
    files = await repo.changed_files("origin/main")

    assert files == ["change.txt", "dir/new.txt", "gone.txt", "image.bin", "latin.txt"]
    assert "GIT binary patch" in patch
    assert (await repo.run("diff", "--cached", "--name-only")).stdout == index_before
    assert "?? dir/new.txt" in await repo.status_porcelain()

    elsewhere = tmp_path / "elsewhere"
    git("clone", "--quiet", remote.url, str(elsewhere), cwd=tmp_path)
    patch_file = tmp_path / "changes.patch"
    patch_file.write_bytes(patch.encode("utf-8", "surrogateescape"))
    git("apply", str(patch_file), cwd=elsewhere)
    for name in ("change.txt", "latin.txt", "image.bin", "dir/new.txt"):
        assert (elsewhere / name).read_bytes() == (repo.workdir / name).read_bytes(), name
    assert not (elsewhere / "gone.txt").exists()
    assert not (elsewhere / "debug.log").exists()


async def test_diff_patch_of_a_clean_worktree_is_empty(remote: Remote, tmp_path: Path) -> None:
    repo = await cloned(remote, tmp_path / "work")
    assert await repo.diff_patch("origin/main") == ""
    assert await repo.changed_files("HEAD") == []


@pytest.mark.parametrize("rev", ["no-such-branch", "--output=/tmp/x"])
async def test_diff_patch_against_an_unknown_revision_is_a_clear_error(
    remote: Remote, tmp_path: Path, rev: str
) -> None:
    repo = await cloned(remote, tmp_path / "work")
    with pytest.raises(GitError, match=r"unknown revision|starts with '-'"):
        await repo.diff_patch(rev)
