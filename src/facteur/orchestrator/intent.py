"""What ``codex.intent`` carries about a new idea: one JSON document, keyed by idea, whichever intake
registered it (a GitHub idea spec, the REST API, the CLI)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

from facteur.bus.port import Message
from facteur.domain.ideas import IdeaSource, IdeaState


def intent_message(
    topic: str,
    idea_id: uuid.UUID,
    *,
    source: IdeaSource,
    source_ref: str,
    repository: str,
    title: str,
    priority: int,
    state: IdeaState,
    spec: Mapping[str, Any],
) -> Message:
    document = {
        "ideaId": str(idea_id),
        "source": source.value,
        "sourceRef": source_ref,
        "repository": repository,
        "title": title,
        "priority": priority,
        "state": state.value,
        "spec": dict(spec),
    }
    return Message(
        topic=topic,
        key=f"idea-{idea_id}".encode(),
        value=json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode(),
        headers=(("content-type", b"application/json"),),
    )
