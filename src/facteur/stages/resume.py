"""Resume archives: what a failed implementation attempt leaves for the next one.

On failure the stage saves the worktree's changes against the commit it started from (a binary-safe patch,
untracked files included) and the agent's session id under ``stage.resume_dir/<idea>/<task>/``. The next
attempt of the same task restores the patch onto its fresh checkout and, when the backend can, resumes the
agent's session instead of starting over. A successful attempt removes the archive.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from facteur.stages.git import Git, GitError

logger = logging.getLogger(__name__)

PATCH = "changes.patch"
META = "resume.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Restored:
    session_id: str | None
    patch_applied: bool
    attempt: int


class ResumeArchive:
    def __init__(self, root: Path, *, idea: str, task: str) -> None:
        self.directory = root / _part(idea) / _part(task)

    def exists(self) -> bool:
        return (self.directory / META).is_file()

    async def save(
        self, git: Git, *, started_from: str, session_id: str | None, attempt: int, reason: str
    ) -> Path:
        """Write the archive (replacing an older one); return its directory."""
        self.directory.mkdir(parents=True, exist_ok=True)
        patch = await git.diff_patch(started_from)
        # git's bytes that are not UTF-8 come back as surrogates: write them back as they were
        (self.directory / PATCH).write_bytes(patch.encode("utf-8", "surrogateescape"))
        meta = {
            "session_id": session_id,
            "attempt": attempt,
            "reason": reason[:2000],
            "started_from": started_from,
        }
        (self.directory / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        logger.info(
            "resume archive saved: dir=%s patch_bytes=%s session=%s", self.directory, len(patch), session_id
        )
        return self.directory

    async def restore(self, git: Git) -> Restored | None:
        """Apply the archive to the checkout; None when there is none. A patch that no longer applies is
        reported and skipped (the agent then starts from the branch as it is)."""
        if not self.exists():
            return None
        try:
            meta = json.loads((self.directory / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("resume archive unreadable, ignored: dir=%s error=%s", self.directory, exc)
            return None
        applied = False
        patch_file = self.directory / PATCH
        if patch_file.is_file() and patch_file.stat().st_size > 0:
            try:
                await git.run("apply", "--whitespace=nowarn", str(patch_file.resolve()))
                applied = True
            except GitError as exc:
                logger.warning(
                    "resume patch does not apply, ignored: dir=%s error=%s", self.directory, exc.message
                )
        session = meta.get("session_id")
        return Restored(
            session_id=session if isinstance(session, str) and session else None,
            patch_applied=applied,
            attempt=int(meta.get("attempt") or 0),
        )

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _part(text: str) -> str:
    return _UNSAFE.sub("-", text).strip("-.") or "_"
