"""What the chat-channel sources (slack_channel, discord_channel) share: a channel read through its `Platform`.

    async with platform_services(ctx) as services:   # the running adapters, or ones built from settings
        await sync_source(ctx.db, "eng-chat", embedder=embedder, services=services)

A thread is one document (its replies included); other messages are grouped into one document per
channel-day (UTC). The ACL is the platform's `readers(channel)`. At every sync the channel's member list is
recorded (`knowledge.acl.set_members`), so membership changes take effect at the next sync; when the
platform cannot say who is in a private channel, `membership_failed` is recorded and private replies use
public documents only (and say so) until a later sync succeeds.

Incremental: the cursor keeps the newest channel message read (`last`, a Slack ts or a Discord snowflake)
and each thread's newest message. A sync reads only messages after `last`; when they continue the day
of `last`, that day is read again from its start so its document is rebuilt whole. The channel cursor rides
on the last document of the scan, so it advances only once everything before it has committed. The first
sync, and any sync after the channel's readers changed, reads everything and removes documents that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from bot.errors import UserError
from bot.messages import HistoryMessage, Platform
from knowledge.acl import membership_failed, set_members
from knowledge.sources import Connector, Found
from knowledge.types import PUBLIC, SourceDocument

Connect = Callable[[Any, str], Awaitable[tuple[Platform, Callable[[], Awaitable[None]]]]]
DEFAULT_THREAD_DAYS = 30


@asynccontextmanager
async def platform_services(ctx: Any) -> AsyncIterator[dict[str, Any]]:
    """Services for one sync run: `platform(name)` is the running adapter (`ladder run`), else one built from
    settings on first use by the factory `bot.app` registers as `ctx.services["connect_platform"]` (so
    knowledge never imports an adapter), closed when the run ends."""
    connect: Connect | None = ctx.services.get("connect_platform")
    opened: dict[str, tuple[Platform, Callable[[], Awaitable[None]]]] = {}
    lock = asyncio.Lock()

    async def platform(name: str) -> Platform:
        if name in ctx.platforms:
            return ctx.platforms[name]
        async with lock:
            if name not in opened:
                if connect is None:
                    raise UserError(f"This source reads {name.title()}, which is not connected here; "
                                    "sync it from `ladder run` or `ladder sync`.")
                opened[name] = await connect(ctx, name)
        return opened[name][0]

    try:
        yield {"platform": platform}
    finally:
        for _, close in opened.values():
            with contextlib.suppress(Exception):
                await close()


def describe_error(err: BaseException) -> str:
    """One line for an API failure: the platform's error code when it gave one (never a token or URL)."""
    resp = getattr(err, "response", None)
    code = resp.get("error") if hasattr(resp, "get") else None
    detail = code or next(iter(str(err).splitlines()), "")
    return f"{type(err).__name__}: {detail}"[:300] if detail else type(err).__name__


def day_of(m: HistoryMessage) -> str:
    return f"{m.created_at.astimezone(UTC):%Y-%m-%d}"


class ChatChannelSource(Connector):
    """Base of the chat-channel connectors; a subclass names its platform and may override the hooks."""

    platform_name: ClassVar[str] = ""
    lists_all = False  # an incremental scan names only what changed; a full scan sets it on the instance
    example_channel: ClassVar[str] = "C0123ABC"

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        channel = str(config.get("channel") or "").strip().lstrip("#")
        if not channel:
            raise UserError(f"A {cls.kind} source needs channel=ID, e.g. "
                            f"/sources add team-chat kind={cls.kind} channel={cls.example_channel}")
        cls.check_channel(channel)
        config["channel"] = channel
        try:
            config["thread_days"] = int(config.get("thread_days", DEFAULT_THREAD_DAYS))
        except ValueError:
            raise UserError("thread_days= must be a whole number of days.") from None
        return config

    @classmethod
    def check_channel(cls, channel: str) -> None:
        """Raise UserError when `channel` cannot be an id on this platform."""

    # -- hooks --------------------------------------------------------------------------------------
    async def thread_ids(self, platform: Platform, channel: str, messages: list[HistoryMessage],
                         tracked: dict[str, str]) -> tuple[set[str], set[str]]:
        """(threads to read, tracked threads to forget). Default: threads the new messages belong to, plus
        tracked ones with activity in the last `thread_days` (older ones are forgotten)."""
        new = {m.thread for m in messages if m.thread}
        cutoff = datetime.now(UTC) - timedelta(days=self.config["thread_days"])
        keep = {t for t, stamp in tracked.items() if self.id_time(stamp) >= cutoff}
        return new | keep, set(tracked) - new - keep

    def id_time(self, message_id: str) -> datetime:
        raise NotImplementedError

    def clean(self, text: str, names: dict[str, str]) -> str:
        return text

    async def label(self, platform: Platform, channel: str) -> str:
        return "#" + str(self.config.get("name") or channel).lstrip("#")

    def url(self, channel: str, first: HistoryMessage) -> str | None:
        return first.url

    # -- scan ---------------------------------------------------------------------------------------
    async def platform(self) -> Platform:
        get = self.services.get("platform")
        if get is None:
            raise UserError(f"Source '{self.info.name}' reads a {self.platform_name.title()} channel; "
                            "sync it with /sync or `ladder sync`.")
        return await get(self.platform_name)

    async def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        platform = await self.platform()
        channel = self.config["channel"]
        acl = tuple(sorted(set(await platform.readers(channel))))
        problem = await self.record_members(platform, channel, acl)
        if problem:
            yield Found(f"{channel}/members", error=problem)
        state = dict(cursor.get("chat") or {})
        if state.get("acl") != list(acl):  # first sync, or the channel's readers changed: read it all again
            self.lists_all = True
            state = {}
        messages = [m async for m in platform.history(channel, after=state.get("last"))]
        if messages and state.get("last_day") == day_of(messages[0]):  # rebuild that day's document whole
            start = datetime.fromisoformat(state["last_day"]).replace(tzinfo=UTC) - timedelta(milliseconds=1)
            messages = [m async for m in platform.history(channel, after=start)]
        label = await self.label(platform, channel)
        found = [f async for f in self.threads(platform, channel, label, acl, messages, state.get("threads") or {})]
        days: dict[str, list[HistoryMessage]] = defaultdict(list)
        for m in messages:
            if not m.thread:
                days[day_of(m)].append(m)
        for day, msgs in sorted(days.items()):
            found.append(Found(f"{channel}/{day}", doc=self.document(f"{channel}/{day}", f"{label} {day}", channel,
                                                                     acl, msgs, day=day)))
        if found:
            patch: dict[str, Any] = {"acl": list(acl)}
            if messages:
                patch.update(last=messages[-1].id, last_day=day_of(messages[-1]))
            found[-1].cursor = {**found[-1].cursor, "chat": {**found[-1].cursor.get("chat", {}), **patch}}
        for f in found:
            yield f

    async def threads(self, platform: Platform, channel: str, label: str, acl: tuple[str, ...],
                      messages: list[HistoryMessage], tracked: dict[str, str]) -> AsyncIterator[Found]:
        """One document per thread that has news; a tracked thread with nothing new costs one small read."""
        read, forget = await self.thread_ids(platform, channel, messages, tracked)
        for tid in sorted(forget):
            yield Found(f"{channel}/thread/{tid}", cursor={"chat": {"threads": {tid: None}}})
        for tid in sorted(read, key=lambda t: (len(t), t)):
            ext = f"{channel}/thread/{tid}"
            stamp = tracked.get(tid)
            if stamp and not [m async for m in platform.history(channel, thread=tid, after=stamp, limit=1)]:
                yield Found(ext)
                continue
            msgs = [m async for m in platform.history(channel, thread=tid)]
            if not msgs:
                continue
            head = self.clean(msgs[0].text, {}).split("\n", 1)[0][:80] or day_of(msgs[0])
            yield Found(ext, doc=self.document(ext, f"{label} thread: {head}", channel, acl, msgs, thread=tid),
                        cursor={"chat": {"threads": {tid: msgs[-1].id}}})

    def document(self, external_id: str, title: str, channel: str, acl: tuple[str, ...],
                 msgs: list[HistoryMessage], **meta: Any) -> SourceDocument:
        msgs = sorted({m.id: m for m in msgs}.values(), key=lambda m: (m.created_at, m.id))
        names = {m.user: m.user_name for m in msgs if m.user_name}
        lines = [f"[{m.created_at.astimezone(UTC):%Y-%m-%d %H:%M}] {m.user_name or m.user}: {self.clean(m.text, names)}"
                 for m in msgs if m.text]
        meta.update(channel=channel, messages=len(msgs), platform=self.platform_name)
        return SourceDocument(external_id, title, "\n".join(lines), self.url(channel, msgs[0]), acl, meta,
                              msgs[-1].created_at)

    async def record_members(self, platform: Platform, channel: str, acl: tuple[str, ...]) -> str | None:
        """Record who is in the channel now (a public channel: nobody needs to be); returns a problem to report."""
        members: list[str] = []
        error = None
        if PUBLIC not in acl:
            try:
                got = await platform.members(channel)
            except Exception as err:  # the platform API failed: recorded, never a crash of the sync
                got, error = None, describe_error(err)
            if got is None and error is None:
                error = "the platform cannot list who may read this channel"
            members = list(got or [])
        db = self.services.get("db")
        if db is not None:
            async with db() as session, session.begin():
                if error:
                    await membership_failed(session, self.platform_name, channel, error)
                else:
                    await set_members(session, self.platform_name, channel, members)
        if error:
            return (f"members of {channel} could not be fetched ({error}); private replies use public documents "
                    "only until a sync succeeds")
        return None
