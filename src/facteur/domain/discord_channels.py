"""A Discord channel per stage run: its name, the category it goes in, its intro message, and how the
run's output is cut into messages (what ``facteur discord-channel`` sends; no I/O here).

* The channel name joins sanitised segments with ``-``: the repository's name (after ``/``),
  ``issue-<n>``, the stage, the start time (``20251007t1234``) and the run id (else 4 random
  characters); lowercase, anything but ``a-z``, ``0-9`` and ``-`` becomes ``-``, dashes collapse, at most
  95 characters, ``codex-run`` when nothing is left.
* The category is the configured one, else a category named ``Codex Channel - …``, the first with fewer
  than 50 channels; when all are full a new ``Codex Channel - <Adjective> <Noun>`` is made.
* Output is read line by line, literal ``\\n`` and ``\\t`` un-escaped, and sent once 900 characters are
  waiting, as messages of at most 1,900 characters cut at a newline when one is in the last 400.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_NAME = 95
FALLBACK_NAME = "codex-run"
SUFFIX_LENGTH = 4
#: Discord's limit on a message's content
MAX_MESSAGE = 2000
#: waiting output is sent once this much has accumulated
FLUSH_AT = 900
#: the longest message sent from the output
MAX_CHUNK = 1900
#: how far back from the limit a newline is looked for to cut a message
NEWLINE_WINDOW = 400
#: Discord refuses a 51st channel in a category
CATEGORY_CAPACITY = 50
CATEGORY_PREFIX = "Codex Channel - "
TEXT_CHANNEL = 0
CATEGORY = 4
#: the stage whose link is a pull request rather than an issue
REVIEW_STAGE = "review"

#: words for new categories' names (adjectives that stand before a masculine noun in French)
ADJECTIVES = ("Grand", "Petit", "Bon", "Beau", "Jeune", "Vieux", "Nouveau", "Brave", "Joli", "Gros")
NOUNS = ("Colis", "Timbre", "Courrier", "Facteur", "Pigeon", "Bureau", "Cachet", "Guichet", "Tampon", "Sac")

_UNSAFE = re.compile(r"[^a-z0-9-]+")
_DASHES = re.compile(r"-{2,}")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


class BadTimestamp(ValueError):
    """The start time is not an ISO 8601 date and time."""


def parse_timestamp(raw: str) -> datetime:
    """An ISO 8601 time (``Z`` allowed) in UTC; a time without an offset is taken as UTC."""
    text = raw.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadTimestamp(f"{raw!r} is not an ISO 8601 date and time (e.g. 2025-10-07T12:34:56Z)") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def timestamp_segment(moment: datetime) -> str:
    """``20251007t1234``: the UTC ISO form without ``-`` and ``:``, to the minute."""
    return moment.astimezone(UTC).strftime("%Y%m%dt%H%M")


def sanitize(segment: str) -> str:
    lowered = _UNSAFE.sub("-", segment.lower())
    return _DASHES.sub("-", lowered).strip("-")


def random_suffix(choose: Callable[[str], str] = secrets.choice) -> str:
    return "".join(choose(_SUFFIX_ALPHABET) for _ in range(SUFFIX_LENGTH))


def channel_name(
    *,
    repo: str | None,
    issue: int | str | None,
    stage: str | None,
    started: datetime,
    run_id: str | None,
    suffix: Callable[[], str] = random_suffix,
) -> str:
    """The channel's name (see the module's docstring); ``suffix`` stands in for a missing run id."""
    segments: list[str] = []
    if repo:
        segments.append(repo.rsplit("/", 1)[-1])
    if issue is not None and str(issue).strip():
        segments.append(f"issue-{str(issue).strip()}")
    if stage:
        segments.append(stage)
    segments.append(timestamp_segment(started))
    segments.append(run_id if run_id and run_id.strip() else suffix())
    name = sanitize("-".join(s for s in (sanitize(part) for part in segments) if s))
    name = name[:MAX_NAME].rstrip("-")
    return name or FALLBACK_NAME


# --- categories -------------------------------------------------------------------------------------------


def _children(channels: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for channel in channels:
        parent = channel.get("parent_id")
        if parent is not None:
            counts[str(parent)] = counts.get(str(parent), 0) + 1
    return counts


def choose_category(channels: Sequence[Mapping[str, Any]], configured: str | None) -> str | None:
    """The id of the category the new channel goes in, or None when a new category is needed: the
    configured category, then those named ``Codex Channel - …`` in the guild's order; the first with
    room for one more channel."""
    categories = [c for c in channels if c.get("type") == CATEGORY and c.get("id") is not None]
    candidates: list[str] = []
    if configured:
        candidates.extend(str(c["id"]) for c in categories if str(c["id"]) == configured)
    ordered = sorted(categories, key=lambda c: (_position(c), str(c["id"])))
    candidates.extend(
        str(c["id"])
        for c in ordered
        if str(c.get("name", "")).startswith(CATEGORY_PREFIX) and str(c["id"]) not in candidates
    )
    counts = _children(channels)
    return next((cid for cid in candidates if counts.get(cid, 0) < CATEGORY_CAPACITY), None)


def _position(channel: Mapping[str, Any]) -> int:
    position = channel.get("position")
    return position if isinstance(position, int) and not isinstance(position, bool) else 0


def new_category_name(
    existing: Iterable[str], choose: Callable[[Sequence[str]], str] = secrets.choice
) -> str:
    """``Codex Channel - <Adjective> <Noun>``, one no category has yet when any is left."""
    taken = set(existing)
    free = [
        f"{CATEGORY_PREFIX}{adjective} {noun}"
        for adjective in ADJECTIVES
        for noun in NOUNS
        if f"{CATEGORY_PREFIX}{adjective} {noun}" not in taken
    ]
    if free:
        return choose(free)
    base = f"{CATEGORY_PREFIX}{choose(ADJECTIVES)} {choose(NOUNS)}"
    number = 2
    while f"{base} {number}" in taken:
        number += 1
    return f"{base} {number}"


# --- the intro message ------------------------------------------------------------------------------------


def issue_link(repo: str, issue: int | str, stage: str | None) -> str:
    kind = "pull" if stage == REVIEW_STAGE else "issues"
    return f"https://github.com/{repo}/{kind}/{issue}"


def intro_message(
    *,
    channel: str,
    started: datetime,
    title: str | None = None,
    repo: str | None = None,
    issue: int | str | None = None,
    url: str | None = None,
    stage: str | None = None,
    summary: str | None = None,
) -> str:
    """The channel's first message; the summary is trimmed so that the whole fits in one message."""
    lines = ["**Codex Channel Started**"]
    if title and title.strip():
        lines.append(f"**Title:** {_trim(' '.join(title.split()), 200)}")
    if repo:
        lines.append(f"**Repository:** [{repo}](<https://github.com/{repo}>)")
    link = url.strip() if url and url.strip() else None
    if link is None and repo and issue is not None:
        link = issue_link(repo, issue, stage)
    if link is not None:
        label = "Pull Request" if stage == REVIEW_STAGE else "Issue"
        shown = f"#{issue}" if issue is not None else link
        lines.append(f"**{label}:** [{shown}](<{link}>)")
    if stage:
        lines.append(f"**Stage:** {stage}")
    lines.append(f"**Channel:** {channel}")
    lines.append(
        f"**Started:** {started.astimezone(UTC).isoformat(timespec='seconds').replace('+00:00', 'Z')}"
    )
    head = "\n".join(lines)
    text = summary.strip() if summary else ""
    if not text:
        return head[:MAX_MESSAGE]
    label = "\n**Summary:**\n"
    room = MAX_MESSAGE - len(head) - len(label)
    if room < 20:
        return head[:MAX_MESSAGE]
    return f"{head}{label}{_trim(text, room)}"


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- output as messages -----------------------------------------------------------------------------------


def unescape(text: str) -> str:
    """Literal ``\\n`` and ``\\t`` (as agents often print them) become a newline and a tab."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def split_message(text: str, limit: int = MAX_CHUNK, window: int = NEWLINE_WINDOW) -> list[str]:
    """``text`` as messages of at most ``limit`` characters, each cut at the last newline within the last
    ``window`` characters when there is one; blank pieces are dropped."""
    pieces: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", limit - window, limit + 1)
        if cut > 0:
            pieces.append(rest[:cut])
            rest = rest[cut + 1 :]
        else:
            pieces.append(rest[:limit])
            rest = rest[limit:]
    pieces.append(rest)
    return [piece.rstrip("\n") for piece in pieces if piece.strip()]


@dataclass
class OutputBuffer:
    """Collects output lines and gives back the messages to send: once ``flush_at`` characters wait, and
    what is left at the end."""

    flush_at: int = FLUSH_AT
    limit: int = MAX_CHUNK
    window: int = NEWLINE_WINDOW
    _waiting: list[str] = field(default_factory=list)
    _size: int = 0

    def feed(self, line: str) -> list[str]:
        text = unescape(line)
        self._waiting.append(text)
        self._size += len(text)
        return self.flush() if self._size >= self.flush_at else []

    def flush(self) -> list[str]:
        text = "".join(self._waiting)
        self._waiting.clear()
        self._size = 0
        return split_message(text, self.limit, self.window)


def messages_of(lines: Iterable[str]) -> list[str]:
    """Every message the lines make, in order (what streaming them sends)."""
    buffer = OutputBuffer()
    messages: list[str] = []
    for line in lines:
        messages.extend(buffer.feed(line))
    messages.extend(buffer.flush())
    return messages
