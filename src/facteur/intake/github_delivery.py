"""A GitHub webhook delivery: its signature, its envelope (delivery id, event, action) and the header set
that every message derived from it carries (reference §2.2)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facteur.bus.port import Headers
from facteur.errors import InvalidInput

SIGNATURE_HEADER = "x-hub-signature-256"
#: a JSON escape of a UTF-16 surrogate, or a surrogate encoded in the bytes (json decodes "surrogatepass")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SIGNATURE_PREFIX = "sha256="


def signature_of(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return _SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the HMAC-SHA256 of ``body`` under ``secret`` (compared in constant time)."""
    if not header:
        return False
    return hmac.compare_digest(signature_of(secret, body).encode(), header.strip().encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookDelivery:
    """A verified delivery: what GitHub said it is, and its payload (untrusted in shape and content)."""

    delivery_id: str
    event: str
    action: str | None
    payload: Mapping[str, Any]
    raw: bytes
    #: reused on every message published for this delivery
    headers: Headers


def parse_delivery(body: bytes, headers: Mapping[str, str], *, fallback_id: str) -> WebhookDelivery:
    """Decode a signed body; raise :class:`InvalidInput` when it is not a JSON object."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"Invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput(f"Invalid JSON body: expected an object, got {type(payload).__name__}")
    if _SURROGATE_ESCAPE.search(body):  # escapes of surrogates: valid only in pairs
        try:
            json.dumps(payload, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise InvalidInput("Invalid JSON body: a string holds an unpaired UTF-16 surrogate") from None
    delivery_id = (headers.get("x-github-delivery") or "").strip() or fallback_id
    if len(delivery_id) > 200:
        raise InvalidInput("X-GitHub-Delivery is longer than 200 characters")
    event = (headers.get("x-github-event") or "").strip() or "unknown"
    action = payload.get("action")
    action = action if isinstance(action, str) and action else None
    pairs: list[tuple[str, bytes]] = [
        ("x-github-delivery", delivery_id.encode()),
        ("x-github-event", event.encode()),
        ("x-github-hook-id", (headers.get("x-github-hook-id") or "unknown").encode()),
        ("content-type", (headers.get("content-type") or "application/json").encode()),
        (SIGNATURE_HEADER, (headers.get(SIGNATURE_HEADER) or "").encode()),
    ]
    if action is not None:
        pairs.append(("x-github-action", action.encode()))
    return WebhookDelivery(
        delivery_id=delivery_id, event=event, action=action, payload=payload, raw=body, headers=tuple(pairs)
    )
