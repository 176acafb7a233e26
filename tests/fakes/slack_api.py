"""A fake Slack Web API (and Socket Mode server) on loopback that records every call, scripted per test.

    >>> fake = FakeSlack()
    >>> fake.add_channel("C1", "general", members=["UANN", "UBOT"])
    >>> fake.add_user("UANN", "ann", is_admin=False)
    >>> fake.rate_limit("chat.postMessage", retry_after=1)    # the next postMessage answers 429
    >>> fake.fail("conversations.members", "channel_not_found")
    >>> # await fake.start(); AsyncWebClient(base_url=fake.api_url); fake.calls_to("chat.postMessage")

Socket Mode: `apps.connections.open` hands out a `ws://` URL on this server; `send_envelope(...)` pushes an
envelope to the connected client and `acks` collects what it answers. `sign(...)` signs HTTP requests the
way Slack does (v0 HMAC-SHA256 of `v0:timestamp:body`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections import defaultdict, deque
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from tests.fakes.ollama_server import LoopbackServer

TEAM, BOT_USER, BOT_ID = "T1", "UBOT", "BBOT"


def sign(body: str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request: timestamp and v0 signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def event_body(event: dict[str, Any], event_id: str, team: str = TEAM) -> dict[str, Any]:
    """An Events API `event_callback` wrapping `event`."""
    return {"token": "legacy", "team_id": team, "api_app_id": "A1", "event": event, "type": "event_callback",
            "event_id": event_id, "event_time": int(time.time()),
            "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}]}


class FakeSlack(LoopbackServer):
    """Slack's Web API methods Ladder uses, plus files upload v2, response URLs and a Socket Mode socket."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.messages: dict[str, list[dict[str, Any]]] = defaultdict(list)  # channel -> what the bot posted
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)  # channel -> seeded messages
        self.channels: dict[str, dict[str, Any]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, bytes] = {}
        self.responses: list[dict[str, Any]] = []  # bodies posted to response_url
        self.acks: list[dict[str, Any]] = []  # Socket Mode acknowledgements
        self.sockets: list[web.WebSocketResponse] = []
        self._script: dict[str, deque[tuple[int, str, float]]] = defaultdict(deque)
        self._ts = itertools.count(1)
        self._files = itertools.count(1)
        self.add_user(BOT_USER, "ladder", is_bot=True)

    # -- scripting ----------------------------------------------------------------------------------
    def add_channel(self, cid: str, name: str, *, members: list[str] = (), is_private: bool = False,
                    is_im: bool = False) -> None:
        self.channels[cid] = {"id": cid, "name": name, "is_private": is_private, "is_im": is_im,
                              "is_channel": not (is_private or is_im), "members": list(members)}

    def add_user(self, uid: str, name: str, *, is_admin: bool = False, is_owner: bool = False,
                 is_bot: bool = False, display_name: str = "") -> None:
        self.users[uid] = {"id": uid, "team_id": TEAM, "name": name, "real_name": name.title(), "is_bot": is_bot,
                           "is_admin": is_admin, "is_owner": is_owner, "deleted": False,
                           "profile": {"display_name": display_name, "real_name": name.title()}}

    def fail(self, method: str, error: str, times: int = 1, status: int = 200) -> None:
        """The next `times` calls of `method` answer `{"ok": false, "error": error}`."""
        self._script[method].extend([(status, error, 0.0)] * times)

    def rate_limit(self, method: str, retry_after: float = 1, times: int = 1) -> None:
        """The next `times` calls of `method` answer HTTP 429 with `Retry-After`."""
        self._script[method].extend([(429, "ratelimited", retry_after)] * times)

    def calls_to(self, method: str) -> list[dict[str, Any]]:
        return [args for m, args in list(self.calls) if m == method]

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    # -- Socket Mode --------------------------------------------------------------------------------
    def send_envelope(self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0,
                      retry_reason: str = "") -> str:
        """Push one envelope (events_api | slash_commands | interactive) to the newest socket."""
        envelope_id = str(uuid.uuid4())
        envelope = {"envelope_id": envelope_id, "type": kind, "payload": payload,
                    "accepts_response_payload": kind != "events_api",
                    "retry_attempt": retry_attempt, "retry_reason": retry_reason}
        assert self._loop is not None and self.sockets, "no Socket Mode client is connected"
        asyncio.run_coroutine_threadsafe(self.sockets[-1].send_json(envelope), self._loop).result(5)
        return envelope_id

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.calls.append(("socket.connect", {}))
        self.sockets.append(ws)
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data))
        return ws

    # -- HTTP ---------------------------------------------------------------------------------------
    def routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{file_id}", self._download)
        app.router.add_post("/response/{rid}", self._response)
        app.router.add_get("/socket", self._socket)

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(parse_qsl((await request.read()).decode(), keep_blank_values=True))
        for key in ("blocks", "files", "attachments"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = json.loads(args[key])
                except ValueError:
                    pass
        auth = request.headers.get("Authorization", "")
        args["_token"] = auth.removeprefix("Bearer ") if auth else args.pop("token", "")
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        self.calls.append((method, args))
        self.requests.append((method, args))
        if self._script[method]:
            status, error, retry_after = self._script[method].popleft()
            headers = {"Retry-After": str(int(retry_after))} if status == 429 else {}
            return web.json_response({"ok": False, "error": error}, status=status, headers=headers)
        if not args["_token"]:
            return web.json_response({"ok": False, "error": "not_authed"})
        impl = getattr(self, "m_" + method.replace(".", "_"), None)
        if impl is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        result = impl(args)
        return web.json_response({"ok": True, **result} if "error" not in result else {"ok": False, **result})

    async def _upload(self, request: web.Request) -> web.Response:
        self.uploads[request.match_info["file_id"]] = await request.read()
        self.calls.append(("upload", {"file_id": request.match_info["file_id"]}))
        return web.Response(text="OK - 1")

    def share_file(self, file_id: str, name: str, data: bytes, mime: str = "text/plain") -> dict[str, Any]:
        """A file users shared; returns the file object an event carries (downloadable with the bot token)."""
        self.uploads[file_id] = data
        return {"id": file_id, "name": name, "mimetype": mime, "size": len(data),
                "url_private_download": f"{self.url}/files/{file_id}"}

    async def _download(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        self.calls.append(("download", {"file_id": request.match_info["file_id"], "_token": auth[7:]}))
        if not auth.startswith("Bearer xoxb-") or request.match_info["file_id"] not in self.uploads:
            return web.Response(status=404)
        return web.Response(body=self.uploads[request.match_info["file_id"]])

    async def _response(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        return web.Response(text="ok")

    # -- methods ------------------------------------------------------------------------------------
    def _new_ts(self) -> str:
        n = next(self._ts)
        return f"{1700000000 + n}.{n:06d}"

    def _channel(self, args: dict[str, Any], key: str = "channel") -> dict[str, Any] | None:
        return self.channels.get(args.get(key, ""))

    @staticmethod
    def _page(items: list[Any], args: dict[str, Any], key: str) -> dict[str, Any]:
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 100)
        rest = items[start:start + limit]
        nxt = str(start + limit) if start + limit < len(items) else ""
        return {key: rest, "has_more": bool(nxt), "response_metadata": {"next_cursor": nxt}}

    def m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://fake.slack.test/", "team": "Test Team", "user": "ladder", "team_id": TEAM,
                "user_id": BOT_USER, "bot_id": BOT_ID, "is_enterprise_install": False}

    def m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not str(args["_token"]).startswith("xapp-"):
            return {"error": "not_allowed_token_type"}
        return {"url": self.url.replace("http://", "ws://") + "/socket"}

    def m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = args.get("channel", "")
        if channel not in self.channels:
            return {"error": "channel_not_found"}
        msg = {"ts": self._new_ts(), "channel": channel, "text": args.get("text", ""),
               "blocks": args.get("blocks", []), "thread_ts": args.get("thread_ts"), "user": BOT_USER,
               "bot_id": BOT_ID, "edits": 0}
        self.messages[channel].append(msg)
        return {"channel": channel, "ts": msg["ts"], "message": msg}

    def m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        for msg in self.messages.get(args.get("channel", ""), []):
            if msg["ts"] == args.get("ts"):
                msg.update(text=args.get("text", ""), blocks=args.get("blocks", []), edits=msg["edits"] + 1)
                return {"channel": msg["channel"], "ts": msg["ts"], "text": msg["text"]}
        return {"error": "message_not_found"}

    def m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        msgs = self.messages.get(args.get("channel", ""), [])
        self.messages[args.get("channel", "")] = [m for m in msgs if m["ts"] != args.get("ts")]
        return {"channel": args.get("channel"), "ts": args.get("ts")}

    def m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel") not in self.channels:
            return {"error": "channel_not_found"}
        return {"message_ts": self._new_ts()}

    def m_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        chan = self._channel(args)
        if chan is None:
            return {"error": "channel_not_found"}
        return {"channel": {k: v for k, v in chan.items() if k != "members"}}

    def m_conversations_members(self, args: dict[str, Any]) -> dict[str, Any]:
        chan = self._channel(args)
        return {"error": "channel_not_found"} if chan is None else self._page(chan["members"], args, "members")

    def m_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        oldest = float(args.get("oldest") or 0)
        msgs = [m for m in self.history.get(args.get("channel", ""), []) if float(m["ts"]) > oldest  # as Slack:
                and (m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast")]  # no replies
        msgs.sort(key=lambda m: float(m["ts"]), reverse=True)  # newest first, as Slack answers
        return self._page(msgs, args, "messages")

    def m_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        ts = args.get("ts")
        msgs = [m for m in self.history.get(args.get("channel", ""), [])
                if m["ts"] == ts or m.get("thread_ts") == ts]
        msgs.sort(key=lambda m: float(m["ts"]))
        return self._page(msgs, args, "messages")

    def m_users_conversations(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user") or BOT_USER
        types = str(args.get("types") or "public_channel").split(",")
        chans = [{k: v for k, v in c.items() if k != "members"} for c in self.channels.values()
                 if user in c["members"] and ("private_channel" if c["is_private"] else
                                              "im" if c["is_im"] else "public_channel") in types]
        return self._page(chans, args, "channels")

    def m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(args.get("user", ""))
        return {"error": "user_not_found"} if user is None else {"user": user}

    def m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._files)}"
        return {"upload_url": f"{self.url}/upload/{file_id}", "file_id": file_id}

    def m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files") or []
        return {"files": [{"id": f["id"], "title": f.get("title", "")} for f in files]}
