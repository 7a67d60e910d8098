"""A fake of Discord's REST API for one guild: its channels and their messages, with the refusals Discord
makes (a full category, an empty or too long message, a bad token)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from facteur.domain import discord_channels as rules

TOKEN = "bot-token-0123456789-secret"
GUILD = "111"
API = "http://discord.test/api/v10"


class FakeDiscord:
    """One guild's channels and messages; ``fail_next`` queues answers served before the real ones."""

    def __init__(self) -> None:
        self.channels: list[dict[str, Any]] = []
        self.messages: dict[str, list[str]] = {}
        self.requests: list[httpx.Request] = []
        self.fail_next: list[Callable[[httpx.Request], httpx.Response]] = []
        self._next_id = 1000

    def add_category(self, name: str, children: int = 0) -> str:
        cid = self._new_id()
        self.channels.append({"id": cid, "type": 4, "name": name, "position": len(self.channels)})
        for n in range(children):
            self.channels.append({"id": self._new_id(), "type": 0, "name": f"old-{n}", "parent_id": cid})
        return cid

    def _new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bot {TOKEN}":
            return httpx.Response(401, json={"message": "401: Unauthorized", "code": 0})
        if self.fail_next:
            return self.fail_next.pop(0)(request)
        path = request.url.path.removeprefix("/api/v10")
        if path == f"/guilds/{GUILD}/channels" and request.method == "GET":
            return httpx.Response(200, json=self.channels)
        if path == f"/guilds/{GUILD}/channels" and request.method == "POST":
            body = json.loads(request.content)
            parent = body.get("parent_id")
            siblings = sum(1 for c in self.channels if parent is not None and c.get("parent_id") == parent)
            if body["type"] == 0 and siblings >= rules.CATEGORY_CAPACITY:
                return httpx.Response(400, json={"message": "Maximum number of channels in category"})
            channel = {"id": self._new_id(), "type": body["type"], "name": body["name"], "parent_id": parent}
            self.channels.append(channel)
            if body["type"] == 0:
                self.messages[channel["id"]] = []
            return httpx.Response(201, json=channel)
        if path.startswith("/channels/") and path.endswith("/messages") and request.method == "POST":
            cid = path.split("/")[2]
            content = json.loads(request.content)["content"]
            if cid not in self.messages or not content or len(content) > rules.MAX_MESSAGE:
                return httpx.Response(400, json={"message": "Invalid Form Body"})
            self.messages[cid].append(content)
            return httpx.Response(200, json={"id": self._new_id(), "channel_id": cid, "content": content})
        return httpx.Response(404, json={"message": "404: Not Found"})

    def channel(self, name: str) -> dict[str, Any]:
        return next(c for c in self.channels if c.get("name") == name)
