"""Slack: slack-bolt's AsyncApp over Socket Mode or HTTP, a thin I/O shell around pure translators.

    adapter = SlackAdapter(router, ctx, http_port=None)
    await adapter.run()  # Socket Mode when SLACK_APP_TOKEN is set, else HTTP (Events API) on http_port

Every listener only acknowledges, translates and starts a task, so Slack's 3-second limit holds however
slow the model is (bolt runs with `process_before_response=True`: the ack is sent once the listener
returned, which is at once). Signatures are checked by bolt; redeliveries are dropped by the router's
dedupe middleware keyed on `team:event_id`; model output goes through `bot.safety` when rendered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.actions import ADMIN_ACTIONS, CANCEL, CONFIRM, DEPLOY, FEEDBACK_UP, record_feedback, resolve
from bot.adapters.slack_blocks import body_text, escape, render, resolved_blocks
from bot.adapters.slack_incoming import (
    MAX_ATTACHMENT_BYTES,
    action_incoming,
    command_incoming,
    display_name,
    event_incoming,
    file_refs,
    is_workspace_admin,
    should_ignore,
)
from bot.adapters.slack_stream import NOT_POSTABLE, ReplyStream
from bot.audit import audit
from bot.context import Context
from bot.errors import UserError
from bot.messages import Attachment, FileOut, HistoryMessage, Incoming, Reply
from bot.router import Router
from bot.safety import parse_allowlist

log = logging.getLogger(__name__)

SLASH = "/ladder"  # must match slack/manifest.yaml (a test checks both)
EVENTS = ("app_mention", "message.im")  # the manifest's bot_events; `message.im` arrives as a `message` event
BUTTONS = re.compile(r"^(feedback_up|feedback_down|confirm|cancel|deploy)$")
CACHE_TTL_S = 300.0  # users.info / conversations.info answers are reused this long
NOISE = {"channel_join", "channel_leave", "channel_topic", "channel_purpose", "channel_name", "channel_archive",
         "channel_unarchive", "bot_add", "bot_remove", "tombstone", "pinned_item", "group_join", "group_leave"}


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


class SlackAdapter:
    """One Slack workspace: answers mentions, DMs, `/ladder` and buttons; offers the Platform methods."""

    name = "slack"

    def __init__(self, router: Router, ctx: Context, http_port: int | None = None):
        s = ctx.settings
        self.router, self.ctx, self.http_port = router, ctx, http_port
        self.allowlist = parse_allowlist(s.link_allowlist)
        self.edit_interval = s.stream_edit_interval_s
        self.app = AsyncApp(token=_secret(s.slack_bot_token), signing_secret=_secret(s.slack_signing_secret) or "",
                            process_before_response=True, name="ladder")
        # The Web API URL is a setting (a proxy, a test double); 429s are retried after Retry-After, 3 times.
        self.client: AsyncWebClient = self.app.client
        self.client.base_url = s.slack_api_url.rstrip("/") + "/"
        self.client.retry_handlers = [AsyncConnectionErrorRetryHandler(),
                                      AsyncRateLimitErrorRetryHandler(max_retry_count=3)]
        self.tasks: set[asyncio.Task[None]] = set()
        self._cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self.app.command(SLASH)(self._on_command)
        for event in {e.split(".")[0] for e in EVENTS}:
            self.app.event(event)(self._on_event)
        self.app.action(BUTTONS)(self._on_action)

    # -- connection -------------------------------------------------------------------------------
    async def run(self) -> None:
        """Socket Mode with an app token (unless an HTTP port was asked for), else HTTP; until cancelled."""
        try:
            app_token = _secret(self.ctx.settings.slack_app_token)
            await self._check_token("SLACK_BOT_TOKEN", self.client.auth_test())
            if app_token and self.http_port is None:
                await self._check_token("SLACK_APP_TOKEN", self.client.apps_connections_open(app_token=app_token))
                await self.connect_socket_mode(app_token)
                log.info("Slack: connected over Socket Mode")
            else:
                if not self.ctx.settings.slack_signing_secret:
                    raise RuntimeError("Slack HTTP mode needs SLACK_SIGNING_SECRET (Basic Information in the app's "
                                       "settings), or set SLACK_APP_TOKEN and drop --http-port for Socket Mode.")
                port = await self.start_http(self.http_port or 3000)
                log.info("Slack: serving the Events API on port %s at /slack/events", port)
            await asyncio.Event().wait()
        finally:
            await self.stop()

    @staticmethod
    async def _check_token(name: str, call: Any) -> None:
        """One clear error for a bad token, instead of bolt's endless reconnect loop."""
        try:
            await call
        except SlackApiError as err:
            raise RuntimeError(f"Slack rejected {name}: {err.response.get('error')}. Check the token in the "
                               "app's settings (OAuth & Permissions / Basic Information).") from None

    async def start_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve bolt's aiohttp app at /slack/events; returns the bound port (0 picks a free one)."""
        self._runner = web.AppRunner(self.app.web_app(path="/slack/events", port=port))
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        return self._runner.addresses[0][1]

    async def connect_socket_mode(self, app_token: str) -> AsyncSocketModeHandler:
        self._socket = AsyncSocketModeHandler(self.app, app_token)
        await self._socket.connect_async()
        return self._socket

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
            self._socket = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait (bounded) until every started task finished, e.g. before shutdown."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self.tasks), timeout=max(0.0, deadline - time.monotonic()))

    # -- listeners: acknowledge, translate, start a task --------------------------------------------
    async def _on_command(self, ack: Any, command: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._command(command))

    async def _on_event(self, body: dict[str, Any], event: dict[str, Any], context: Any) -> None:
        if should_ignore(event, bot_user_id=context.bot_user_id, bot_id=context.bot_id,
                         allow_bots=self.ctx.settings.slack_allow_bots):
            return
        self._spawn(self._event(body, event, context.bot_user_id))

    async def _on_action(self, ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        self._spawn(self._action(body, action))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._guard(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except SlackApiError as err:
            log.error("Slack API call failed: %s", err.response.get("error", "unknown error"))
        except Exception:
            log.exception("Slack task failed")

    # -- work ---------------------------------------------------------------------------------------
    async def _event(self, body: dict[str, Any], event: dict[str, Any], bot_user_id: str | None) -> None:
        msg = await self._enrich(event_incoming(body, event, bot_user_id=bot_user_id))
        if event.get("files"):
            msg = msg.evolve(attachments=await self._download(event))
        await self._deliver(msg, msg.thread)

    async def _command(self, command: dict[str, Any]) -> None:
        msg = await self._enrich(command_incoming(command))
        shown = escape(f"{SLASH} {command.get('text', '')}".strip())
        await self._deliver(msg, None, command.get("response_url"), f"`{shown}`")

    async def _deliver(self, msg: Incoming, thread: str | None, response_url: str | None = None,
                       context: str | None = None) -> None:
        with contextlib.suppress(UserError):  # parsed here too, so 👍/👎 carry the question, not the command
            msg = self.router.resolve(msg)
        stream = ReplyStream(self, msg, thread, response_url, context)
        async for reply in self.router.dispatch(msg):
            await stream.send(reply)

    async def _action(self, body: dict[str, Any], action: dict[str, Any]) -> None:
        kind, value = action.get("action_id", ""), action.get("value", "")
        msg = await self._enrich(action_incoming(body))
        response_url = body.get("response_url")
        stream = ReplyStream(self, msg, msg.thread, response_url)
        message = body.get("message") or {}
        try:
            if kind in ADMIN_ACTIONS and not msg.is_admin:
                await audit(self.ctx.db, msg, f"button:{kind}", allowed=False, value=value[:200])
                log.warning("refused button %s for non-admin slack:%s", kind, msg.user)
                raise UserError("Only admins can press this button.")
            if kind == DEPLOY:
                await self._deliver(msg.evolve(text=f"/deploy {value}"), msg.thread, response_url)
                return
            if kind in (CONFIRM, CANCEL):
                result = await resolve(self.ctx, msg, value, confirm=kind == CONFIRM)
                note = f"{'✅ Confirmed' if kind == CONFIRM else '✖️ Cancelled'} by <@{msg.user}>"
                if message.get("ts"):
                    await self.client.chat_update(channel=msg.channel, ts=message["ts"], text=note,
                                                  blocks=resolved_blocks(message.get("blocks") or [], note))
                await stream.send(result)
                return
            await record_feedback(self.ctx, msg, score=1 if kind == FEEDBACK_UP else -1,
                                  message_id=message.get("ts"), answer=message.get("text", ""), value=value)
            await stream.send(Reply(text="Thanks, your feedback was recorded.", ephemeral=True))
        except UserError as err:
            await stream.send(Reply.fail(str(err)))

    async def _download(self, event: dict[str, Any]) -> tuple[Attachment, ...]:
        """Files shared with the message (e.g. a JSONL for /train), fetched with the bot token."""
        out = []
        headers = {"Authorization": f"Bearer {self.client.token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            for name, url, mime in file_refs(event, self.client.base_url):
                try:
                    async with session.get(url, headers=headers) as resp:
                        resp.raise_for_status()
                        data = b""
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            data += chunk
                            if len(data) > MAX_ATTACHMENT_BYTES:
                                break
                except aiohttp.ClientError as err:
                    log.warning("could not download the shared file %s: %s", name, type(err).__name__)
                    continue
                if len(data) <= MAX_ATTACHMENT_BYTES:
                    out.append(Attachment(name=name, data=data, mime=mime))
        return tuple(out)

    async def _enrich(self, msg: Incoming) -> Incoming:
        """What needs the Web API: admin (settings or workspace role), display name, channel privacy."""
        user = await self._user(msg.user)
        private = msg.is_private_channel
        if not msg.is_dm and not private:
            private = bool((await self.channel_info(msg.channel)).get("is_private", True))
        return msg.evolve(is_admin=await self.is_admin(msg.user), user_name=display_name(user) or msg.user_name,
                          is_private_channel=private)

    async def is_admin(self, user: str) -> bool:
        """Configured admin ids, or a workspace admin/owner per users.info; checked on every request."""
        return user in self.ctx.settings.admins or is_workspace_admin(await self._user(user))

    async def _cached(self, kind: str, key: str, fetch: Any) -> dict[str, Any]:
        hit = self._cache.get((kind, key))
        if hit and hit[0] > time.monotonic():
            return hit[1]
        try:
            value = await fetch()
        except SlackApiError as err:
            log.warning("Slack %s lookup for %s failed: %s", kind, key, err.response.get("error"))
            return {}
        self._cache[(kind, key)] = (time.monotonic() + CACHE_TTL_S, value)
        return value

    async def _user(self, user: str) -> dict[str, Any]:
        async def fetch() -> dict[str, Any]:
            return (await self.client.users_info(user=user))["user"]

        return await self._cached("user", user, fetch) if user else {}

    # -- Platform: what handlers, notifier, sync and ACL use ----------------------------------------
    async def post(self, channel: str, reply: Reply, thread: str | None = None, *, feedback: str | None = None,
                   context: str | None = None) -> str:
        """Post a reply (and upload its files) in the channel or thread; returns the message ts."""
        resp = await self.client.chat_postMessage(channel=channel, thread_ts=thread, unfurl_links=False,
                                                  unfurl_media=False,
                                                  **render(reply, self.allowlist, feedback=feedback, context=context))
        for file in reply.files if not reply.partial else ():
            await self.upload(channel, file, thread)
        return str(resp["ts"])

    async def update(self, channel: str, message_id: str, reply: Reply, *, thread: str | None = None,
                     feedback: str | None = None, context: str | None = None) -> None:
        """Edit a posted message; a final reply's files are uploaded into `thread` (or under the message)."""
        await self.client.chat_update(channel=channel, ts=message_id,
                                      **render(reply, self.allowlist, feedback=feedback, context=context))
        for file in reply.files if not reply.partial else ():
            await self.upload(channel, file, thread or message_id)

    async def upload(self, channel: str, file: FileOut, thread: str | None = None) -> str:
        """Files upload v2 (getUploadURLExternal, upload, completeUploadExternal); returns the file id."""
        resp = await self.client.files_upload_v2(channel=channel, thread_ts=thread, content=file.data,
                                                 filename=file.name, title=file.title or file.name)
        return str(resp["files"][0]["id"])

    async def ephemeral(self, msg: Incoming, reply: Reply, thread: str | None = None,
                        response_url: str | None = None) -> None:
        """Only the user sees it; through the response URL when the bot cannot post in the channel."""
        text = body_text(reply, self.allowlist)
        try:
            await self.client.chat_postEphemeral(channel=msg.channel, user=msg.user, text=text, thread_ts=thread)
        except SlackApiError as err:
            if not response_url or err.response.get("error") not in NOT_POSTABLE:
                raise
            await AsyncWebhookClient(response_url).send(text=text, response_type="ephemeral")

    async def delete(self, channel: str, message_id: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self.client.chat_delete(channel=channel, ts=message_id)

    async def _paged(self, method: str, key: str, **kwargs: Any) -> list[Any]:
        """Every page of a cursor-paginated Web API method."""
        out: list[Any] = []
        cursor = None
        while True:
            resp = await getattr(self.client, method)(cursor=cursor, limit=200, **kwargs)
            out += resp.get(key) or []
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                return out

    async def history(self, channel: str, *, after: str | datetime | None = None, thread: str | None = None,
                      limit: int | None = None) -> AsyncIterator[HistoryMessage]:
        """The Platform read: messages after the ts (or time) `after`, oldest first, with display names;
        join/leave and other channel events left out. With `thread`: the thread's parent and replies."""
        count = 0
        names: dict[str, str] = {}  # per read: a user whose lookup fails is asked once, not once per message
        for m in await self.raw_history(channel, after, thread=thread):
            if m.get("subtype") in NOISE or not (m.get("text") or m.get("files")):
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield await self._history_message(channel, m, names)

    async def _history_message(self, channel: str, m: dict[str, Any], names: dict[str, str]) -> HistoryMessage:
        user = m.get("user") or m.get("bot_id") or ""
        name = (m.get("user_profile") or {}).get("display_name") or m.get("username") or ""
        if not name and m.get("user"):
            if m["user"] not in names:
                names[m["user"]] = await self.user_name(m["user"])
            name = names[m["user"]]
        text = m.get("text") or ""
        for f in m.get("files") or []:
            text += f"\n[file: {f.get('title') or f.get('name') or 'attachment'}]"
        return HistoryMessage(id=m["ts"], user=user, user_name=name or (m.get("bot_profile") or {}).get("name", ""),
                              text=text, created_at=datetime.fromtimestamp(float(m["ts"]), UTC),
                              thread=m.get("thread_ts"), is_bot=bool(m.get("bot_id")), channel=channel)

    async def raw_history(self, channel: str, oldest: str | datetime | None = None, *,
                          thread: str | None = None) -> list[dict[str, Any]]:
        """Slack message dicts newer than `oldest` (a ts or a datetime), oldest first, all pages: the
        channel's own messages, or with `thread` that thread's parent and replies."""
        if isinstance(oldest, datetime):
            oldest = f"{oldest.timestamp():.6f}"
        if thread:
            return [m for m in await self.replies(channel, thread) if float(m.get("ts", 0)) > float(oldest or 0)]
        msgs = await self._paged("conversations_history", "messages", channel=channel, oldest=oldest)
        return sorted(msgs, key=lambda m: float(m.get("ts", 0)))

    async def replies(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """A thread: its parent and replies, oldest first, all pages."""
        msgs = await self._paged("conversations_replies", "messages", channel=channel, ts=ts)
        return sorted(msgs, key=lambda m: float(m.get("ts", 0)))

    async def members(self, channel: str) -> list[str]:
        return await self._paged("conversations_members", "members", channel=channel)

    async def readers(self, channel: str) -> tuple[str, ...]:
        """`public` for a public channel; otherwise (private, DM, or the lookup failed) the channel's own."""
        info = await self.channel_info(channel)
        public = bool(info) and not info.get("is_private", True) and not info.get("is_im")
        return ("public",) if public else (f"channel:{self.name}:{channel}",)

    async def user_channels(self, user: str) -> list[str]:
        """Channels (public and private) the user is a member of, as far as the bot can see."""
        chans = await self._paged("users_conversations", "channels", user=user,
                                  types="public_channel,private_channel", exclude_archived=True)
        return [c["id"] for c in chans]

    async def channel_info(self, channel: str) -> dict[str, Any]:
        """`{"id", "name", "is_private", "is_im"}`; unknown (lookup failed) -> {} (callers treat as private)."""
        async def fetch() -> dict[str, Any]:
            c = (await self.client.conversations_info(channel=channel))["channel"]
            return {"id": c["id"], "name": c.get("name", ""), "is_private": bool(c.get("is_private")),
                    "is_im": bool(c.get("is_im"))}

        return await self._cached("channel", channel, fetch)

    async def user_name(self, user: str) -> str:
        """The name Slack shows for the user (for citations); the id when it cannot be looked up."""
        return display_name(await self._user(user)) or user

