"""The bounded memory of recent answers used for fast replays."""

from __future__ import annotations

from facteur.intake.codex_tasks import RecentAnswers


def test_keeps_the_most_recently_used_answers() -> None:
    answers = RecentAnswers(capacity=3)
    for n in range(3):
        answers.remember(f"d{n}", {"n": n})
    assert answers.get("d0") == {"n": 0}  # d0 is now the most recent
    answers.remember("d3", {"n": 3})
    assert answers.get("d1") is None
    assert answers.get("d0") == {"n": 0}
    assert answers.get("d3") == {"n": 3}
