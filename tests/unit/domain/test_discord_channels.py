"""The naming, category choice, intro and chunking rules of a stage run's Discord channel."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from facteur.domain import discord_channels as dc

STARTED = datetime(2025, 10, 7, 12, 34, 56, tzinfo=UTC)


# --- names ----------------------------------------------------------------------------------------------


def test_the_reference_example() -> None:
    name = dc.channel_name(
        repo="proompteng/lab",
        issue=1243,
        stage="planning",
        started=dc.parse_timestamp("2025-10-07T12:34:56Z"),
        run_id="channel-xyz123",
    )
    assert name == "lab-issue-1243-planning-20251007t1234-channel-xyz123"


def test_segments_are_sanitised() -> None:
    name = dc.channel_name(
        repo="Acme/My_Widgets.py", issue="7", stage="Review!!", started=STARTED, run_id="--Run  ID__9--"
    )
    assert name == "my-widgets-py-issue-7-review-20251007t1234-run-id-9"


def test_long_names_are_cut_to_95_without_a_trailing_dash() -> None:
    name = dc.channel_name(
        repo="acme/" + "x" * 60, issue=1, stage="implementation", started=STARTED, run_id="r" * 60
    )
    assert len(name) <= dc.MAX_NAME and name.startswith("x" * 60 + "-issue-1-implementation-")
    dashed = dc.channel_name(repo="a/" + "y" * 94, issue=None, stage=None, started=STARTED, run_id="z")
    assert dashed == "y" * 94  # the cut fell just after a dash, which is dropped


def test_a_random_suffix_stands_in_for_a_missing_run_id() -> None:
    name = dc.channel_name(repo="acme/lab", issue=3, stage="planning", started=STARTED, run_id=None)
    prefix = "lab-issue-3-planning-20251007t1234-"
    assert name.startswith(prefix)
    suffix = name.removeprefix(prefix)
    assert len(suffix) == 4 and suffix.isalnum() and suffix == suffix.lower()
    fixed = dc.channel_name(
        repo=None, issue=None, stage=None, started=STARTED, run_id="", suffix=lambda: "ab12"
    )
    assert fixed == "20251007t1234-ab12"


def test_the_fallback_name_when_nothing_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dc, "timestamp_segment", lambda _moment: "")
    name = dc.channel_name(repo="acme/???", issue=None, stage="###", started=STARTED, run_id="@@@")
    assert name == "codex-run"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-10-07T12:34:56Z", "20251007t1234"),
        ("2025-10-07T12:34:56.789+00:00", "20251007t1234"),
        ("2025-10-07T14:34:56+02:00", "20251007t1234"),
        ("2025-10-07T12:34", "20251007t1234"),
    ],
)
def test_timestamps_become_utc_segments(raw: str, expected: str) -> None:
    assert dc.timestamp_segment(dc.parse_timestamp(raw)) == expected


@pytest.mark.parametrize("raw", ["yesterday", "2025-13-01T00:00:00Z", "", "12:34"])
def test_bad_timestamps_are_refused(raw: str) -> None:
    with pytest.raises(dc.BadTimestamp, match="ISO 8601"):
        dc.parse_timestamp(raw)


def test_an_offset_is_converted() -> None:
    moment = datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert dc.timestamp_segment(moment) == "20241231t2330"


# --- categories -----------------------------------------------------------------------------------------


def category(cid: str, name: str, position: int = 0) -> dict[str, Any]:
    return {"id": cid, "type": dc.CATEGORY, "name": name, "position": position}


def children(parent: str, count: int) -> list[dict[str, Any]]:
    return [{"id": f"{parent}-{n}", "type": dc.TEXT_CHANNEL, "parent_id": parent} for n in range(count)]


def test_the_configured_category_comes_first() -> None:
    channels = [category("10", "Codex Channel - Petit Colis"), category("20", "Ops"), *children("20", 3)]
    assert dc.choose_category(channels, "20") == "20"


def test_a_named_category_when_none_is_configured_or_the_configured_one_is_full() -> None:
    channels = [
        category("20", "Ops"),
        *children("20", 50),
        category("30", "General"),
        category("40", "Codex Channel - Grand Pigeon", position=5),
        *children("40", 49),
        category("50", "Codex Channel - Vieux Sac", position=2),
        *children("50", 50),
    ]
    assert dc.choose_category(channels, None) == "40"
    assert dc.choose_category(channels, "20") == "40"
    assert dc.choose_category(channels, "999") == "40"  # a configured id the guild lacks is skipped


def test_none_when_every_candidate_is_full() -> None:
    channels = [category("40", "Codex Channel - Bon Cachet"), *children("40", 50), category("41", "Misc")]
    assert dc.choose_category(channels, None) is None
    assert dc.choose_category([], None) is None


def test_new_category_names_avoid_taken_ones() -> None:
    def first(options: Sequence[str]) -> str:
        return options[0]

    taken = ["Codex Channel - Grand Colis"]
    assert dc.new_category_name(taken, first) == "Codex Channel - Grand Timbre"
    every = [f"Codex Channel - {a} {n}" for a in dc.ADJECTIVES for n in dc.NOUNS]
    assert dc.new_category_name(every, first) == "Codex Channel - Grand Colis 2"
    name = dc.new_category_name([])
    adjective, noun = name.removeprefix(dc.CATEGORY_PREFIX).split(" ")
    assert adjective in dc.ADJECTIVES and noun in dc.NOUNS


# --- intro ----------------------------------------------------------------------------------------------


def test_the_intro_names_everything() -> None:
    text = dc.intro_message(
        channel="lab-issue-5-planning-20251007t1234-r1",
        started=STARTED,
        title="Add   a cache",
        repo="proompteng/lab",
        issue=5,
        stage="planning",
        summary="Plan the cache.",
    )
    assert text.splitlines() == [
        "**Codex Channel Started**",
        "**Title:** Add a cache",
        "**Repository:** [proompteng/lab](<https://github.com/proompteng/lab>)",
        "**Issue:** [#5](<https://github.com/proompteng/lab/issues/5>)",
        "**Stage:** planning",
        "**Channel:** lab-issue-5-planning-20251007t1234-r1",
        "**Started:** 2025-10-07T12:34:56Z",
        "**Summary:**",
        "Plan the cache.",
    ]


def test_review_links_the_pull_request_and_a_given_url_wins() -> None:
    text = dc.intro_message(
        channel="c", started=STARTED, repo="acme/lab", issue=9, stage="review", url="https://x.test/pr/9"
    )
    assert "**Pull Request:** [#9](<https://x.test/pr/9>)" in text
    derived = dc.intro_message(channel="c", started=STARTED, repo="acme/lab", issue=9, stage="review")
    assert "(<https://github.com/acme/lab/pull/9>)" in derived


def test_a_long_summary_is_trimmed_to_fit_one_message() -> None:
    text = dc.intro_message(channel="c", started=STARTED, repo="acme/lab", issue=1, summary="word " * 1000)
    assert len(text) == dc.MAX_MESSAGE and text.endswith("…")
    assert "**Summary:**" in text


# --- output ---------------------------------------------------------------------------------------------


def test_output_waits_for_900_characters() -> None:
    buffer = dc.OutputBuffer()
    assert buffer.feed("a" * 500 + "\n") == []
    assert buffer.feed("b" * 397 + "\n") == []  # 899 waiting
    sent = buffer.feed("c\n")
    assert sent == ["a" * 500 + "\n" + "b" * 397 + "\nc"]
    assert buffer.flush() == []


def test_the_rest_is_sent_at_the_end() -> None:
    assert dc.messages_of(["short\n", "lines\n"]) == ["short\nlines"]
    assert dc.messages_of([]) == []
    assert dc.messages_of(["   \n", "\n"]) == []


def test_long_output_is_cut_at_a_newline_in_the_last_400_characters() -> None:
    first = "x" * 1600
    second = "y" * 1000
    pieces = dc.split_message(f"{first}\n{second}")
    assert pieces == [first, second]
    assert all(len(p) <= dc.MAX_CHUNK for p in pieces)


def test_without_a_near_newline_the_cut_is_hard() -> None:
    early = "x" * 1000 + "\n" + "y" * 2000  # the newline is 900 characters before the limit
    pieces = dc.split_message(early)
    assert [len(p) for p in pieces] == [1900, 1101]
    assert "".join(pieces) == early


def test_many_chunks_keep_order_and_size() -> None:
    lines = [f"line {n:04d} " + "z" * 80 + "\n" for n in range(100)]
    messages = dc.messages_of(lines)
    assert all(0 < len(m) <= dc.MAX_CHUNK for m in messages)
    assert "\n".join(messages).split("\n") == [line.rstrip("\n") for line in lines]


def test_literal_escapes_are_unescaped() -> None:
    assert dc.unescape("a\\nb\\tc") == "a\nb\tc"
    assert dc.messages_of(["step 1\\nstep 2\\tdone\n"]) == ["step 1\nstep 2\tdone"]
