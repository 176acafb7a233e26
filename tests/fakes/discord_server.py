"""A fake Discord on loopback: the gateway (websocket) and the REST API, recording every call.

    >>> fake = FakeDiscord()
    >>> # url = await fake.start(); settings.discord_api_url = fake.api_url
    >>> # await fake.wait_ready(); await fake.user_message(CHANNEL, "<@BOT> hi", mention_bot=True)
    >>> # fake.created(CHANNEL) -> messages the bot posted there

Gateway: HELLO, IDENTIFY -> READY + GUILD_CREATE, RESUME -> replay of missed events + RESUMED,
heartbeat ACKs, op 7 RECONNECT, server-side closes (any code, e.g. 4014). REST: users/@me,
gateway/bot, application info, channel messages (create, edit, delete, list with `after`), threads,
interaction callbacks, webhook follow-ups and @original edits, application command overwrites,
guild members. `rate_limit(path_fragment)` answers the next matching request with a 429 carrying a
`Via` header, as Discord's edge does. Serves from its own thread (see `LoopbackServer`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.ollama_server import LoopbackServer

TOKEN = "fake-discord-token"
ALL_TEXT = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 35) | (1 << 38)  # view..threads
ADMINISTRATOR = 1 << 3
VIEW_CHANNEL = 1 << 10


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """Exactly `application/json` (no charset), as Discord sends and discord.py checks."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def _ts() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    json: Any = None
    files: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200


def user(uid: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(uid), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
            "bot": bot, "public_flags": 0}


class FakeDiscord(LoopbackServer):
    GUILD, GENERAL, PRIVATE, NO_THREADS = 1001, 2001, 2002, 2003
    BOT, APP, OWNER, ALICE, BOB, OTHER_BOT, ADMIN_ROLE = 9001, 9002, 3001, 3002, 3003, 3004, 4001

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.calls: list[Call] = []
        self.received: list[dict[str, Any]] = []  # gateway payloads from the client (heartbeats excluded)
        self.heartbeats = 0
        self.connections = 0
        self.session_id = ""
        self.seq = 0
        self.sent: list[dict[str, Any]] = []  # every dispatch, with its sequence number
        self.delivered: list[int] = []  # sequence numbers written to a socket (replays included)
        self.close_on_identify: int | None = None
        self.limits: list[tuple[str, float]] = []  # (path fragment, retry_after) for the next matches
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.archived: dict[int, list[dict[str, Any]]] = {}  # channel -> its archived public threads
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> synced commands
        self.ids = itertools.count(1_200_000_000_000_000_000)
        self.users = {self.BOT: user(self.BOT, "Ladder", bot=True), self.OWNER: user(self.OWNER, "owner"),
                      self.ALICE: user(self.ALICE, "alice"), self.BOB: user(self.BOB, "bob"),
                      self.OTHER_BOT: user(self.OTHER_BOT, "otherbot", bot=True)}
        self.roles = {self.ALICE: [str(self.ADMIN_ROLE)]}
        self._ws: web.WebSocketResponse | None = None
        self._tasks: set[asyncio.Future[None]] = set()

    # -- URLs -------------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self.gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self.rest)

    # -- payloads ---------------------------------------------------------------------------------
    def member(self, uid: int, *, with_user: bool = True, permissions: int | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"roles": self.roles.get(uid, []), "joined_at": _ts(), "deaf": False, "mute": False,
                                "flags": 0, "nick": None, "pending": False}
        if with_user:
            data["user"] = self.users[uid]
        if permissions is not None:
            data["permissions"] = str(permissions)
        return data

    def channel(self, cid: int) -> dict[str, Any]:
        names = {self.GENERAL: "general", self.PRIVATE: "hr", self.NO_THREADS: "no-threads"}
        overwrites = []
        if cid == self.PRIVATE:  # @everyone may not view; alice may
            overwrites = [{"id": str(self.GUILD), "type": 0, "allow": "0", "deny": str(VIEW_CHANNEL)},
                          {"id": str(self.ALICE), "type": 1, "allow": str(VIEW_CHANNEL), "deny": "0"},
                          {"id": str(self.BOT), "type": 1, "allow": str(ALL_TEXT), "deny": "0"}]
        if cid == self.NO_THREADS:
            overwrites = [{"id": str(self.GUILD), "type": 0, "allow": "0", "deny": str(1 << 35)}]
        return {"id": str(cid), "type": 0, "guild_id": str(self.GUILD), "name": names.get(cid, str(cid)),
                "position": 0, "permission_overwrites": overwrites, "nsfw": False, "parent_id": None,
                "topic": None, "last_message_id": None, "rate_limit_per_user": 0, "flags": 0}

    def guild(self) -> dict[str, Any]:
        role = {"color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0, "icon": None,
                "unicode_emoji": None}
        return {
            "id": str(self.GUILD), "name": "Test Guild", "owner_id": str(self.OWNER), "icon": None, "splash": None,
            "discovery_splash": None, "afk_channel_id": None, "afk_timeout": 300, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "features": [], "mfa_level": 0,
            "roles": [{**role, "id": str(self.GUILD), "name": "@everyone", "position": 0,
                       "permissions": str(ALL_TEXT | (1 << 31))},
                      {**role, "id": str(self.ADMIN_ROLE), "name": "ladder-admins", "position": 1, "permissions": "0"}],
            "emojis": [], "stickers": [], "system_channel_id": None, "system_channel_flags": 0,
            "rules_channel_id": None, "vanity_url_code": None, "description": None, "banner": None,
            "premium_tier": 0, "preferred_locale": "en-US", "public_updates_channel_id": None, "nsfw_level": 0,
            "premium_progress_bar_enabled": False, "joined_at": _ts(), "large": False, "unavailable": False,
            "member_count": len(self.users), "voice_states": [], "presences": [], "threads": [],
            "members": [self.member(uid) for uid in self.users],
            "channels": [self.channel(c) for c in (self.GENERAL, self.PRIVATE, self.NO_THREADS)],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    def message(self, channel_id: int, author: int, content: str, **extra: Any) -> dict[str, Any]:
        data = {"id": str(next(self.ids)), "channel_id": str(channel_id), "author": self.users[author],
                "content": content, "timestamp": _ts(), "edited_timestamp": None, "tts": False,
                "mention_everyone": False, "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
                "pinned": False, "type": 0, "flags": 0, "components": []}
        if channel_id not in self.dm_channels():
            data["guild_id"] = str(self.GUILD)
            data["member"] = self.member(author, with_user=False)
        data.update(extra)
        self.messages.setdefault(channel_id, []).append(data)
        return data

    def add_thread(self, parent: int, name: str, *, archived: bool = True) -> int:
        """A public thread users started in `parent` (listed by the archived-threads endpoint); post into it
        with `message(thread_id, ...)`. Returns the thread id."""
        tid = next(self.ids)
        self.archived.setdefault(parent, []).append(
            {**self.channel(parent), "id": str(tid), "type": 11, "parent_id": str(parent), "owner_id": str(self.ALICE),
             "name": name, "message_count": 0, "member_count": 1, "last_message_id": None,
             "thread_metadata": {"archived": archived, "auto_archive_duration": 1440, "locked": False,
                                 "archive_timestamp": _ts()}})
        return tid

    def dm_channels(self) -> set[int]:
        return {5000 + uid for uid in self.users}

    # -- what the test drives ---------------------------------------------------------------------
    async def user_message(self, channel_id: int, content: str, *, author: int | None = None,
                           mention_bot: bool = False, **extra: Any) -> dict[str, Any]:
        author = author or self.ALICE
        if mention_bot:
            extra["mentions"] = [self.users[self.BOT]]
        data = self.message(channel_id, author, content, **extra)
        await self.dispatch("MESSAGE_CREATE", data)
        return data

    async def slash(self, sub: str, args: str | None = None, *, author: int | None = None,
                    channel_id: int | None = None, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Deliver `/ladder SUB args:...`; pass `payload` back to redeliver the same interaction."""
        if payload is None:
            author = author or self.ALICE
            channel_id = channel_id or self.GENERAL
            options = [{"type": 3, "name": "args", "value": args}] if args is not None else []
            data: dict[str, Any] = {"id": "7777", "name": "ladder", "type": 1,
                                    "options": [{"type": 1, "name": sub, "options": options}]}
            if str(self.GUILD) in self.commands:
                data["guild_id"] = str(self.GUILD)
            payload = self.interaction(2, data, author, channel_id)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def press(self, message: dict[str, Any], custom_id: str, *, author: int) -> dict[str, Any]:
        payload = self.interaction(3, {"custom_id": custom_id, "component_type": 2}, author,
                                   int(message["channel_id"]), message=message)
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    def interaction(self, kind: int, data: dict[str, Any], author: int, channel_id: int,
                    **extra: Any) -> dict[str, Any]:
        perms = ALL_TEXT | (ADMINISTRATOR if author == self.OWNER else 0)
        return {"id": str(next(self.ids)), "application_id": str(self.APP), "type": kind, "data": data,
                "guild_id": str(self.GUILD), "channel_id": str(channel_id), "channel": self.channel(channel_id),
                "member": self.member(author, permissions=perms), "token": f"itoken{next(self.ids)}", "version": 1,
                "app_permissions": str(ALL_TEXT), "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
                "authorizing_integration_owners": {"0": str(self.GUILD)}, "context": 0,
                "attachment_size_limit": 10_485_760, **extra}

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a DISPATCH now, or keep it for the RESUME replay if nobody is connected."""
        await self._on_loop(self._dispatch(event, data))

    async def reconnect(self) -> None:
        """Gateway op 7: the client must reconnect and RESUME."""
        await self._on_loop(self._send({"op": 7, "d": None, "s": None, "t": None}))

    async def drop(self, code: int = 4000) -> None:
        """Close the gateway socket from the server side with `code`."""
        await self._on_loop(self._close(code))

    def rate_limit(self, fragment: str, retry_after: float = 0.5) -> None:
        self.limits.append((fragment, retry_after))

    # -- reading what happened --------------------------------------------------------------------
    def find(self, method: str, fragment: str = "") -> list[Call]:
        return [c for c in self.calls if c.method == method and fragment in c.path and c.status < 300]

    def created(self, channel_id: int) -> list[Call]:
        return self.find("POST", f"/channels/{channel_id}/messages")

    def ops(self, op: int) -> list[dict[str, Any]]:
        return [p["d"] for p in self.received if p.get("op") == op]

    async def wait_ready(self, sessions: int = 1, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: len(self.ops(2)) >= sessions and self._ws is not None, timeout)

    # -- gateway ----------------------------------------------------------------------------------
    async def _on_loop(self, coro: Any) -> Any:
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def _send(self, payload: dict[str, Any]) -> None:
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(json.dumps(payload))
            if payload.get("s") is not None:
                self.delivered.append(payload["s"])

    async def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.seq += 1
        payload = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.sent.append(payload)
        await self._send(payload)

    async def _close(self, code: int) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close(code=code, message=b"closed by the fake")

    async def gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}, "s": None, "t": None}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            payload = json.loads(msg.data)
            if payload["op"] == 1:
                self.heartbeats += 1
                await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                continue
            self.received.append(payload)
            if payload["op"] == 2:
                await self._identify(ws, payload["d"])
            elif payload["op"] == 6:
                await self._resume(ws, payload["d"])
        if self._ws is ws:
            self._ws = None
        return ws

    async def _identify(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> None:
        if d.get("token") != TOKEN:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if self.close_on_identify is not None:
            await ws.close(code=self.close_on_identify, message=b"Disallowed intent(s).")
            return
        self._ws = ws
        self.session_id = f"session-{next(self.ids)}"
        ready = {"v": 10, "user": {**self.users[self.BOT], "verified": True, "mfa_enabled": False, "flags": 0},
                 "guilds": [{"id": str(self.GUILD), "unavailable": True}], "session_id": self.session_id,
                 "resume_gateway_url": self.ws_url, "application": {"id": str(self.APP), "flags": 0},
                 "private_channels": [], "relationships": [], "session_type": "normal"}
        await self._dispatch("READY", ready)
        await self._dispatch("GUILD_CREATE", self.guild())

    async def _resume(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> None:
        if d.get("session_id") != self.session_id or d.get("token") != TOKEN:
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return
        self._ws = ws
        for payload in self.sent:
            if payload["s"] > (d.get("seq") or 0):
                await self._send(payload)
        await self._dispatch("RESUMED", {})

    # -- REST -------------------------------------------------------------------------------------
    async def rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        call = Call(request.method, path, dict(request.query))
        await self._read_body(request, call)
        self.calls.append(call)
        tokened = path.startswith(("/interactions/", "/webhooks/"))  # authorised by the token in the URL
        if not tokened and request.headers.get("Authorization") != f"Bot {TOKEN}":
            call.status = 401
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        for i, (fragment, retry_after) in enumerate(self.limits):
            if fragment in path:
                del self.limits[i]
                call.status = 429
                return _json(
                    {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                    status=429, headers={"Via": "1.1 google", "Retry-After": str(retry_after),
                                         "X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                         "X-RateLimit-Reset-After": str(retry_after), "X-RateLimit-Bucket": "b1"})
        answer = self._answer(request.method, path.strip("/").split("/"), call)
        if isinstance(answer, web.StreamResponse):
            return answer
        return _json(answer) if answer is not None else web.Response(status=204)

    async def _read_body(self, request: web.Request, call: Call) -> None:
        if not request.can_read_body:
            return
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            for name, value in form.items():
                if name == "payload_json":
                    call.json = json.loads(str(value))
                elif hasattr(value, "file"):
                    call.files.append({"name": name, "filename": value.filename, "content_type": value.content_type,
                                       "data": value.file.read()})
        else:
            text = await request.text()
            call.json = json.loads(text) if text else None

    def _answer(self, method: str, p: list[str], call: Call) -> Any:
        body = call.json or {}
        if p == ["users", "@me"]:
            return self.users[self.BOT]
        if p == ["gateway", "bot"]:
            return {"url": self.ws_url, "shards": 1, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}}
        if p == ["oauth2", "applications", "@me"]:
            return {"id": str(self.APP), "name": "Ladder", "description": "", "icon": None, "bot_public": True,
                    "bot_require_code_grant": False, "owner": self.users[self.OWNER], "verify_key": "00", "flags": 0,
                    "summary": ""}
        if p[0] == "applications" and method == "PUT":
            scope = p[3] if len(p) > 4 else "global"
            self.commands[scope] = [{**c, "id": str(next(self.ids)), "application_id": str(self.APP),
                                     "version": "1", "type": c.get("type", 1)} for c in body]
            return self.commands[scope]
        if p[0] == "interactions":  # callback
            return {"interaction": {"id": p[1], "type": 2, "response_message_loading": body.get("type") == 5,
                                    "response_message_ephemeral": bool((body.get("data") or {}).get("flags", 0) & 64)}}
        if p[0] == "webhooks":
            return self._webhook(method, p, call)
        if p[0] == "channels":
            return self._channels(method, p, call)
        if p[0] == "guilds" and p[-1] == "members":
            after = int(call.query.get("after", 0))
            limit = int(call.query.get("limit", 1000))
            return [self.member(u) for u in sorted(self.users) if u > after][:limit]
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _attachments(self, call: Call) -> list[dict[str, Any]]:
        return [{"id": str(next(self.ids)), "filename": f["filename"], "size": len(f["data"]),
                 "url": f"https://cdn.fake/{f['filename']}", "proxy_url": f"https://cdn.fake/{f['filename']}",
                 "content_type": f["content_type"]} for f in call.files]

    def _bot_message(self, channel_id: int, call: Call) -> dict[str, Any]:
        body = call.json or {}
        extra = {k: body[k] for k in ("components", "embeds") if k in body}
        if "message_reference" in body:
            extra["message_reference"] = body["message_reference"]
        msg = self.message(channel_id, self.BOT, body.get("content") or "", **extra)
        msg["attachments"] = self._attachments(call)
        return msg

    def _channels(self, method: str, p: list[str], call: Call) -> Any:
        cid = int(p[1])
        if len(p) == 2:
            return self.channel(cid)
        if p[2:] == ["messages"] and method == "POST":
            return self._bot_message(cid, call)
        if p[2:] == ["threads", "archived", "public"] and method == "GET":
            return {"threads": self.archived.get(cid, []), "members": [], "has_more": False}
        if p[2:] == ["messages"] and method == "GET":
            after = int(call.query.get("after", 0))
            limit = int(call.query.get("limit", 50))
            found = [m for m in self.messages.get(cid, []) if int(m["id"]) > after][:limit]
            return list(reversed(found))  # Discord answers newest first
        if len(p) == 4 and p[2] == "messages":
            msgs = self.messages.get(cid, [])
            msg = next((m for m in msgs if m["id"] == p[3]), None)
            if msg is None:
                return _json({"message": "Unknown Message", "code": 10008}, status=404)
            if method == "DELETE":
                msgs.remove(msg)
                return None
            body = call.json or {}
            msg.update({k: v for k, v in body.items() if k in ("content", "components", "embeds")})
            if call.files:
                msg["attachments"] = self._attachments(call)
            msg["edited_timestamp"] = _ts()
            return msg
        if len(p) == 5 and p[4] == "threads":  # thread from a message: same id as the message
            thread = {**self.channel(cid), "id": p[3], "type": 11, "parent_id": str(cid), "owner_id": str(self.BOT),
                      "name": (call.json or {}).get("name", "thread"), "message_count": 0, "member_count": 1,
                      "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                          "archive_timestamp": _ts()}}
            self._tasks.add(asyncio.ensure_future(self._dispatch("THREAD_CREATE", {**thread, "newly_created": True})))
            return thread
        return _json({"message": "404: Not Found", "code": 0}, status=404)

    def _webhook(self, method: str, p: list[str], call: Call) -> Any:
        key = f"webhook:{p[2]}"
        if len(p) == 3 and method == "POST":  # follow-up
            return self._bot_message(hash(key) % 10_000, call) | {"webhook_id": p[1]}
        msgs = self.messages.setdefault(hash(key) % 10_000 + 1, [])
        if method == "DELETE":
            msgs.clear()
            return None
        if not msgs:
            msgs.append(self.message(hash(key) % 10_000 + 1, self.BOT, ""))
        msgs[0].update({k: v for k, v in (call.json or {}).items() if k in ("content", "components", "embeds")})
        if call.files:
            msgs[0]["attachments"] = self._attachments(call)
        return msgs[0] | {"webhook_id": p[1]}
