"""Git for stage runs: every command non-interactive, bounded in time, and logged without secrets.

Each command is an asyncio subprocess in its own process group (a timeout kills git and whatever it
started), with stdin on /dev/null, no pager, no editor and no prompt. Git never looks for a repository
above the working directory, so a missing checkout is an error rather than a command run on the
repository around it. A token reaches git only through the environment (:class:`GitAuth`): never argv, a
remote URL or ``.git/config``; the log file and error messages show neither it nor a URL's credentials.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from facteur.domain.branches import branch_name_problem
from facteur.errors import FacteurError

logger = logging.getLogger(__name__)

#: ``git -c`` options of every command
_OPTIONS = (
    *("-c", "core.pager=cat"),
    *("-c", "advice.detachedHead=false"),
    *("-c", "init.defaultBranch=main"),
    # signing would ask for a passphrase or a key the stage does not have
    *("-c", "commit.gpgSign=false"),
)
#: inherited variables that would point git at another repository, index, identity or configuration
_DROPPED_ENV = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
        "GIT_QUARANTINE_PATH",
        "GIT_CEILING_DIRECTORIES",
        "GIT_DISCOVERY_ACROSS_FILESYSTEM",
        "GIT_CONFIG_PARAMETERS",
        "GIT_CONFIG_COUNT",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_DATE",
        "SSH_ASKPASS",
    }
)
#: Facteur's own settings carry secrets; numbered config entries belong to :class:`GitAuth`
_DROPPED_PREFIXES = ("FACTEUR_", "GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")
#: the log keeps at most this much of one stream of one command
LOG_OUTPUT_LIMIT = 64 * 1024
#: lines of git's error output quoted in a :class:`GitError`
ERROR_LINES = 5
_URL_CREDENTIALS = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


class GitError(FacteurError):
    """A git command failed."""


class InvalidBranchName(GitError, ValueError):
    """A branch name is not one git accepts."""


class MergeConflict(GitError):
    """A merge stopped on conflicting changes; it was aborted."""

    def __init__(self, message: str, files: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.files = tuple(files)


def check_branch_name(name: str) -> str:
    """``name`` when git accepts it as a branch name (``git check-ref-format --branch``), else
    :class:`InvalidBranchName` saying why. ``HEAD`` and ``@`` are refused too: they name a commit."""
    problem = branch_name_problem(name)
    if problem is not None:
        raise InvalidBranchName(f"invalid branch name {name!r}: {problem}")
    return name


def without_credentials(text: str) -> str:
    """``text`` with the user and password of every URL in it removed."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>", text)


@dataclass(frozen=True, slots=True)
class GitAuth:
    """A token git sends as HTTP basic authentication (``x-access-token``) to ``https://<host>/``."""

    token: str = field(repr=False)
    host: str = "github.com"

    def __post_init__(self) -> None:
        if not self.token or not self.token.isprintable() or any(char.isspace() for char in self.token):
            raise GitError("the git token is empty or contains spaces or control characters")
        if not _HOST.fullmatch(self.host):
            raise GitError(
                f"invalid git host {self.host!r}: expected a host such as github.com, or host:port"
            )

    @property
    def header(self) -> str:
        basic = base64.b64encode(f"x-access-token:{self.token}".encode()).decode("ascii")
        return f"Authorization: basic {basic}"

    def env(self) -> dict[str, str]:
        """Environment entries that give git the header as configuration (``http.<url>.extraheader``)."""
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.https://{self.host}/.extraheader",
            "GIT_CONFIG_VALUE_0": self.header,
        }

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown: the token and its encoded form."""
        return (self.token, self.header.rsplit(" ", 1)[1])


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


class Git:
    """Git commands on the repository checked out at ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        *,
        auth: GitAuth | None = None,
        log_file: Path | None = None,
        timeout_seconds: float = 600.0,
        user_name: str = "Facteur",
        user_email: str = "facteur@localhost",
    ) -> None:
        if timeout_seconds <= 0:
            raise GitError(f"the git timeout must be positive, not {timeout_seconds}")
        self._workdir = workdir.absolute()
        self._auth = auth
        self._log_file = log_file
        self._timeout = timeout_seconds
        self._identity = {
            "GIT_AUTHOR_NAME": user_name,
            "GIT_AUTHOR_EMAIL": user_email,
            "GIT_COMMITTER_NAME": user_name,
            "GIT_COMMITTER_EMAIL": user_email,
        }

    @property
    def workdir(self) -> Path:
        return self._workdir

    def authenticate(self, auth: GitAuth | None) -> None:
        """Use ``auth`` from the next command on (GitHub App installation tokens expire within the hour)."""
        self._auth = auth

    # --- commands ------------------------------------------------------------------------------------------

    async def run(self, *args: str, check: bool = True) -> GitResult:
        """``git <args>`` in the working directory; :class:`GitError` when it fails and ``check`` is set."""
        return await self._execute(args, cwd=self._workdir, check=check)

    async def clone(self, url: str, *, branch: str | None = None, checkout: bool = True) -> None:
        """Clone ``url`` into the working directory (which must be missing or empty)."""
        args = ["clone"]
        if branch is not None:
            args += ["--branch", check_branch_name(branch)]
        if not checkout:
            args.append("--no-checkout")
        try:
            self._workdir.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GitError(f"cannot create {self._workdir.parent}: {exc.strerror}") from None
        # run from Facteur's own directory, so that a relative path to a local remote means what it says
        await self._execute([*args, "--", url, str(self._workdir)], cwd=None, check=True)

    async def fetch(self) -> None:
        await self.run("fetch", "--prune", "origin")

    async def head_sha(self) -> str:
        return (await self.run("rev-parse", "--verify", "HEAD^{commit}")).stdout.strip()

    async def current_branch(self) -> str | None:
        """The checked-out branch, or None when HEAD is detached."""
        result = await self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    async def remote_branch_exists(self, name: str) -> bool:
        """Whether origin had branch ``name`` at the last fetch (``refs/remotes/origin/<name>``)."""
        ref = f"refs/remotes/origin/{check_branch_name(name)}^{{commit}}"
        return (await self.run("rev-parse", "--verify", "--quiet", ref, check=False)).returncode == 0

    async def has_remote_branches(self) -> bool:
        """Whether origin had any branch at the last fetch (an empty repository has none)."""
        result = await self.run("for-each-ref", "--count=1", "--format=%(refname)", "refs/remotes/origin/")
        return bool(result.stdout.strip())

    async def origin_url(self) -> str | None:
        result = await self.run("config", "--get", "remote.origin.url", check=False)
        if result.returncode != 0:
            return None
        return result.stdout.strip() or None

    async def worktree_problem(self) -> str | None:
        """None when the working directory is the top of a git work tree, else what it is instead."""
        result = await self.run("rev-parse", "--show-toplevel", check=False)
        if result.returncode != 0:
            return _tail(result.stderr) or "not a git work tree"
        top = Path(result.stdout.strip())
        return None if _same_path(top, self._workdir) else f"it is inside the work tree {top}"

    async def status_porcelain(self) -> str:
        return (await self.run("status", "--porcelain=v1", "--untracked-files=all")).stdout

    async def has_changes(self) -> bool:
        """Whether a tracked file changed or an untracked one appeared (ignored files do not count)."""
        return bool((await self.status_porcelain()).strip())

    async def commit_all(self, message: str) -> str | None:
        """Stage every change (untracked files too, ignored ones not) and commit it; the new commit's
        sha, or None when there was nothing to commit. Hooks are not run."""
        if not message.strip():
            raise GitError("a commit needs a message")
        await self.run("add", "--all")
        staged = await self.run("diff", "--cached", "--quiet", check=False)
        if staged.returncode == 0:
            return None
        if staged.returncode != 1:
            raise GitError(_failure("diff --cached --quiet", staged))
        await self.run("commit", "--quiet", "--no-verify", "-m", message)
        return await self.head_sha()

    async def push(self, branch: str, *, force_with_lease: bool = False) -> None:
        """Push HEAD to ``branch`` at origin. With ``force_with_lease`` it may replace the branch, but only
        while origin still has what the last fetch saw (a branch unknown then must not exist)."""
        name = check_branch_name(branch)
        args = ["push", "--no-verify"]
        if force_with_lease:
            args.append(f"--force-with-lease=refs/heads/{name}")
        await self.run(*args, "origin", f"HEAD:refs/heads/{name}")

    async def merge(self, ref: str, *, message: str) -> None:
        """Merge ``ref`` into HEAD with a merge commit. On conflicts the merge is aborted and
        :class:`MergeConflict` names the files."""
        sha = await self.resolve(ref)
        result = await self.run("merge", "--no-ff", "--no-edit", "-m", message, sha, check=False)
        if result.returncode == 0:
            return
        conflicts = await self.run("diff", "--name-only", "--diff-filter=U", "-z", check=False)
        files = sorted(name for name in conflicts.stdout.split("\0") if name)
        if (await self.run("rev-parse", "--verify", "--quiet", "MERGE_HEAD", check=False)).returncode == 0:
            await self.run("merge", "--abort")
        if files:
            raise MergeConflict(f"merging {ref} conflicts in {', '.join(files)}", files)
        raise GitError(_failure(f"merge {ref}", result))

    async def resolve(self, rev: str) -> str:
        """The sha of the commit ``rev`` names."""
        if rev.startswith("-"):
            raise GitError(f"invalid revision {rev!r}: it starts with '-'")
        result = await self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        if result.returncode != 0:
            raise GitError(f"unknown revision {rev!r} in {self._workdir}")
        return result.stdout.strip()

    async def diff_patch(self, against: str) -> str:
        """The work tree (untracked files included, ignored ones not) as a patch against ``against``,
        binary files included, for ``git apply``. Bytes that are not UTF-8 are kept as surrogates: write
        the patch with ``encode("utf-8", "surrogateescape")``. The index is left as it was."""
        sha = await self.resolve(against)
        options = ("--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--src-prefix=a/")
        result = await self._against_worktree("diff", "--cached", *options, "--dst-prefix=b/", sha, "--")
        return result.stdout

    async def changed_files(self, against: str) -> list[str]:
        """Paths added, modified or deleted in the work tree since ``against`` (untracked files included,
        ignored ones not), sorted."""
        sha = await self.resolve(against)
        result = await self._against_worktree(
            "diff", "--cached", "--name-only", "--no-renames", "-z", sha, "--"
        )
        return sorted(name for name in result.stdout.split("\0") if name)

    async def discard_local_changes(self) -> None:
        """Throw away what an earlier attempt left: a stale index lock, a merge in progress, changes to
        tracked files, untracked and ignored files."""
        lock = (await self.run("rev-parse", "--git-path", "index.lock")).stdout.strip()
        _remove(Path(self._workdir, lock))
        if (await self.run("rev-parse", "--verify", "--quiet", "HEAD", check=False)).returncode == 0:
            await self.run("reset", "--quiet", "--hard")
        await self.run("clean", "-ffdx", "--quiet")

    async def _against_worktree(self, *args: str) -> GitResult:
        """``git <args>`` with a scratch index holding the whole work tree; the real index is untouched."""
        real = Path(self._workdir, (await self.run("rev-parse", "--git-path", "index")).stdout.strip())
        with tempfile.TemporaryDirectory(prefix="facteur-git-index-") as scratch:
            index = Path(scratch, "index")
            _copy_if_present(real, index)
            env = {"GIT_INDEX_FILE": str(index)}
            await self._execute(("add", "--all"), cwd=self._workdir, check=True, env=env)
            return await self._execute(args, cwd=self._workdir, check=True, env=env)

    # --- the runner ----------------------------------------------------------------------------------------

    def _environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in _DROPPED_ENV and not key.startswith(_DROPPED_PREFIXES)
        }
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="",
            GCM_INTERACTIVE="never",
            GIT_PAGER="cat",
            PAGER="cat",
            GIT_EDITOR="true",
            GIT_SEQUENCE_EDITOR="true",
            LC_ALL="C",
            # never the repository around the working directory
            GIT_CEILING_DIRECTORIES=os.path.realpath(self._workdir.parent),
        )
        env.update(self._identity)
        if self._auth is not None:
            env.update(self._auth.env())
        env.update(extra)
        return env

    def _redact(self, text: str) -> str:
        text = without_credentials(text)
        for secret in self._auth.secrets() if self._auth is not None else ():
            text = text.replace(secret, "***")
        return text

    async def _execute(
        self, args: Sequence[str], *, cwd: Path | None, check: bool, env: Mapping[str, str] | None = None
    ) -> GitResult:
        shown = self._redact(shlex.join(args))
        if cwd is not None and not _is_dir(cwd):
            raise GitError(f"cannot run git {shown}: {cwd} is not a directory")
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                "git",
                *_OPTIONS,
                *args,
                cwd=cwd,
                env=self._environment(env or {}),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise GitError(f"cannot run git {shown}: {exc.strerror or exc}") from None
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), self._timeout)
        except TimeoutError:
            self._record(shown, "", "", f"killed: timed out after {self._timeout:g}s", started)
            raise GitError(f"git {shown} timed out after {self._timeout:g}s and was killed") from None
        finally:
            await _kill(process)
        result = GitResult(
            returncode=process.returncode if process.returncode is not None else -1,
            stdout=stdout.decode("utf-8", "surrogateescape"),
            stderr=stderr.decode("utf-8", "replace"),
        )
        self._record(shown, result.stdout, result.stderr, f"exit {result.returncode}", started)
        logger.debug("git_command: args=%s returncode=%s", shown, result.returncode)
        if check and result.returncode != 0:
            raise GitError(self._redact(_failure(shown, result)))
        return result

    def _record(self, shown: str, stdout: str, stderr: str, end: str, started: float) -> None:
        if self._log_file is None:
            return
        entry = [f"$ git {shown}"]
        entry += [self._redact(_clip(text)).rstrip("\n") for text in (stdout, stderr) if text]
        entry.append(f"[{end}, {time.monotonic() - started:.2f}s]")
        try:
            self._log_file.parent.mkdir(parents=True, exist_ok=True)
            with self._log_file.open("a", encoding="utf-8", errors="backslashreplace") as log:
                log.write("\n".join(entry) + "\n")
        except OSError as exc:
            logger.warning("git_log_unwritable: path=%s error=%s", self._log_file, exc.strerror or exc)


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Kill git's process group if git still runs (a timeout, or the caller's cancellation), and reap it."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    await process.wait()


def _is_dir(path: Path) -> bool:
    return path.is_dir()


def _same_path(a: Path, b: Path) -> bool:
    return a.exists() and b.exists() and a.samefile(b)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _copy_if_present(source: Path, target: Path) -> None:
    if source.is_file():
        shutil.copyfile(source, target)


def _clip(text: str) -> str:
    if len(text) <= LOG_OUTPUT_LIMIT:
        return text
    return f"{text[:LOG_OUTPUT_LIMIT]}\n… {len(text) - LOG_OUTPUT_LIMIT} more characters not logged"


def _tail(text: str) -> str:
    """Git's last lines, and its first ``fatal:`` or ``error:`` line when those do not include it."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("hint:")]
    tail = lines[-ERROR_LINES:]
    first = next((line for line in lines if line.startswith(("fatal:", "error:"))), None)
    if first is not None and first not in tail:
        tail = [first, *lines[1 - ERROR_LINES :]]
    return " | ".join(tail)


def _failure(shown: str, result: GitResult) -> str:
    tail = _tail(result.stderr) or _tail(result.stdout)
    return f"git {shown} failed (exit {result.returncode})" + (f": {tail}" if tail else "")
