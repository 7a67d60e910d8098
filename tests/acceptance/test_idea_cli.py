"""`facteur idea submit|list|show|events` against `facteur serve` running as its own process, as a user
would use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facteur.domain.plans import plan_from_json, render_plan
from tests.acceptance.test_canary import serve
from tests.integration.cli.test_cli import facteur
from tests.support.services import free_port

pytestmark = pytest.mark.acceptance

TOKEN = "cli-token-1"


def test_submit_list_show_and_events(tmp_path: Path) -> None:
    port = free_port()
    plan = tmp_path / "plan.md"
    plan.write_text(
        render_plan(
            plan_from_json(
                {
                    "tasks": [
                        {"key": "a", "title": "A", "acceptance_criteria": ["a works"]},
                        {"key": "b", "title": "B", "depends_on": ["a"], "acceptance_criteria": ["b works"]},
                    ]
                }
            )
        )
    )
    server_env = {"FACTEUR_SERVER__API_TOKEN": TOKEN, "FACTEUR_EXECUTOR__KIND": "none"}
    with serve(tmp_path, port, tmp_path / "serve.log", server_env):
        env = {"FACTEUR_URL": f"http://127.0.0.1:{port}", "FACTEUR_API_TOKEN": TOKEN}
        args = ["--title", "Faster widgets", "--goal", "p99 halved", "--repository", "acme/widgets"]
        args += ["--metric", "p99 < 120 ms", "--priority", "1", "--plan", str(plan), "--json"]
        submitted = facteur("idea", "submit", *args, cwd=tmp_path, env=env)
        assert submitted.returncode == 0, submitted.stderr
        idea = json.loads(submitted.stdout)
        # no approval needed: its tasks are built at once, and the scheduler may already have taken "a"
        assert idea["state"] in {"awaiting_dependencies", "running_tasks"}
        assert [t["key"] for t in idea["tasks"]] == ["a", "b"]

        listed = facteur("idea", "list", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        assert "Faster widgets" in listed.stdout and idea["id"][:8] in listed.stdout
        shown = facteur("idea", "show", idea["id"], cwd=tmp_path, env=env)
        assert shown.returncode == 0
        assert "plan v1 (approved)" in shown.stdout
        timeline = json.loads(facteur("idea", "events", idea["id"], "--json", cwd=tmp_path, env=env).stdout)
        assert [e["kind"] for e in timeline][:3] == ["idea.registered", "plan.received", "idea.transition"]

        unknown = facteur("idea", "show", "00000000-0000-0000-0000-000000000000", cwd=tmp_path, env=env)
        assert unknown.returncode == 2 and "404" in unknown.stderr
        no_token = facteur("idea", "list", cwd=tmp_path, env={"FACTEUR_URL": env["FACTEUR_URL"]})
        assert no_token.returncode == 1 and "401" in no_token.stderr
        bad = facteur(
            "idea", "submit", "--title", "x", "--goal", "y", "--repository", "nope", cwd=tmp_path, env=env
        )
        assert bad.returncode == 2 and "repository" in bad.stderr
