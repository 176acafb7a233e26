"""Chat-channel sources through the real clients: slack_sdk against FakeSlack (an adapter built from settings,
as `ladder sync` does) and discord.py against FakeDiscord (the running adapter, as in `ladder run`).

ACL from the platform's readers, members recorded at each sync, threads as one document, incremental reads
by cursor (checked on the fakes' recorded `oldest`/`after`), and what membership changes and failures do
to `/search` in a DM.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import discord
import pytest
from sqlalchemy import select

from bot.app import build_router
from bot.messages import Incoming
from knowledge import admin
from knowledge.acl import DEGRADED_NOTE, audience_for
from knowledge.models import ChannelMember, Document, MembershipSync
from knowledge.sources.chat import platform_services
from knowledge.sync import embedder_for, sync_source
from tests.conftest import make_settings
from tests.fakes.discord_server import TOKEN, FakeDiscord
from tests.fakes.slack_api import FakeSlack

D = FakeDiscord
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY1, DAY2, DAY3 = TODAY - timedelta(days=4), TODAY - timedelta(days=3), TODAY - timedelta(days=2)
SECRET = "HRSECRET-4410"


def ts(day: datetime, minutes: int) -> str:
    return f"{(day + timedelta(hours=9, minutes=minutes)).timestamp():.6f}"


def msg(when: str, user: str, text: str, **extra: object) -> dict:
    return {"type": "message", "ts": when, "user": user, "text": text, **extra}


PARENT = ts(DAY1, 5)


@pytest.fixture(scope="module")
async def fake_slack():
    fake = FakeSlack()
    fake.add_user("UANN", "ann", display_name="Ann")
    fake.add_user("UBOB", "bob", display_name="Bob")
    fake.add_channel("GHR", "hr", members=["UANN", "UBOT"], is_private=True)
    fake.add_channel("CGEN", "general", members=["UANN", "UBOB", "UBOT"])
    fake.history["GHR"] = [
        msg(ts(DAY1, 0), "UANN", f"Salary bands for engineers are in the HR sheet, reference {SECRET}."),
        msg(PARENT, "UANN", "Who approves salary band changes?", thread_ts=PARENT, reply_count=2),
        msg(ts(DAY1, 6), "UBOB", "The compensation committee approves them.", thread_ts=PARENT),
        msg(ts(DAY1, 7), "UANN", "Thanks <@UBOB>, noted.", thread_ts=PARENT),
        msg(ts(DAY1, 8), "UANN", "", subtype="channel_join"),
        msg(ts(DAY2, 0), "UANN", "Payroll runs on the 25th of each month."),
    ]
    fake.history["CGEN"] = [msg(ts(DAY1, 0), "UBOB", "Holiday policy: the office is closed from 24 December.")]
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def fake_discord():
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url, fake_slack, fake_discord):
    return make_settings(tmp_path_factory.mktemp("data"), database_url, slack_bot_token="xoxb-test",
                         slack_api_url=fake_slack.api_url, discord_token=TOKEN, discord_api_url=fake_discord.api_url,
                         discord_guild_ids=str(D.GUILD), discord_members_intent=True)


@pytest.fixture(scope="module")
def embedder(ctx):
    return embedder_for(ctx)


async def sync(ctx, name, embedder):
    async with platform_services(ctx) as services:
        return await sync_source(ctx.db, name, embedder=embedder, services=services)


async def docs(ctx, source: str) -> dict[str, Document]:
    async with ctx.db() as session:
        src = (await admin.source_rows(ctx))
        sid = next(r["source"].id for r in src if r["source"].name == source)
        rows = (await session.execute(select(Document).where(Document.source_id == sid))).scalars().all()
        return {d.external_id: d for d in rows}


async def doc_text(ctx, external_id: str) -> str:
    from knowledge.models import Chunk

    async with ctx.db() as session:
        doc = (await session.execute(select(Document).where(Document.external_id == external_id))).scalar_one()
        return "\n".join((await session.execute(select(Chunk.text).where(Chunk.document_id == doc.id)
                                                .order_by(Chunk.ord))).scalars())


def history_calls(fake: FakeSlack, channel: str) -> list[dict]:
    return [c for c in fake.calls_to("conversations.history") if c["channel"] == channel]


async def dm_search(bot, user: str, query: str):
    return await bot.push(f"/search {query}", platform="slack", workspace="T1", channel=f"D{user}", user=user,
                          is_dm=True, is_admin=False)


def dm(user: str) -> Incoming:
    return Incoming(platform="slack", workspace="T1", channel=f"D{user}", user=user, text="", is_dm=True)


async def test_private_slack_channel_gets_channel_acl_members_and_one_document_per_thread(ctx, embedder, fake_slack):
    await admin.add_source(ctx, "hr-chat", kind="slack_channel", config={"channel": "GHR"}, platform="slack")
    await admin.add_source(ctx, "general-chat", kind="slack_channel", config={"channel": "#CGEN"}, platform="slack")
    report = await sync(ctx, "hr-chat", embedder)
    assert (report.added, report.skipped) == (3, [])
    got = await docs(ctx, "hr-chat")
    day1, day2 = f"{DAY1:%Y-%m-%d}", f"{DAY2:%Y-%m-%d}"
    assert set(got) == {f"GHR/{day1}", f"GHR/{day2}", f"GHR/thread/{PARENT}"}
    assert {tuple(d.acl) for d in got.values()} == {("channel:slack:GHR",)}
    thread = await doc_text(ctx, f"GHR/thread/{PARENT}")
    assert "Who approves" in thread and "compensation committee" in thread and "Thanks @Bob, noted." in thread
    assert got[f"GHR/thread/{PARENT}"].title == "#hr thread: Who approves salary band changes?"
    day_text = await doc_text(ctx, f"GHR/{day1}")
    assert SECRET in day_text and "compensation" not in day_text and "Ann:" in day_text  # display names
    assert [c["ts"] for c in fake_slack.calls_to("conversations.replies")] == [PARENT]
    async with ctx.db() as session:
        members = (await session.execute(select(ChannelMember.user_id).where(
            ChannelMember.platform == "slack", ChannelMember.channel == "GHR"))).scalars().all()
    assert sorted(members) == ["UANN", "UBOT"]

    public = await sync(ctx, "general-chat", embedder)
    assert public.added == 1
    assert [tuple(d.acl) for d in (await docs(ctx, "general-chat")).values()] == [("public",)]


async def test_incremental_sync_reads_only_newer_messages(ctx, embedder, fake_slack):
    before = len(history_calls(fake_slack, "GHR"))
    fake_slack.history["GHR"] += [msg(ts(DAY3, 0), "UBOB", "Expense reports are due on Fridays."),
                                  msg(ts(DAY3, 1), "UANN", "The committee meets monthly.", thread_ts=PARENT)]
    report = await sync(ctx, "hr-chat", embedder)
    calls = history_calls(fake_slack, "GHR")[before:]
    assert [c["oldest"] for c in calls] == [ts(DAY2, 0)]  # only after the newest message already read
    assert (report.added, report.updated, report.removed) == (1, 1, 0)  # DAY3 added; the thread re-read
    assert "meets monthly" in await doc_text(ctx, f"GHR/thread/{PARENT}")

    before = len(history_calls(fake_slack, "GHR"))
    fake_slack.history["GHR"].append(msg(ts(DAY3, 30), "UANN", "Receipts go to finance."))
    again = await sync(ctx, "hr-chat", embedder)
    calls = history_calls(fake_slack, "GHR")[before:]
    assert calls[0]["oldest"] == ts(DAY3, 0)
    assert float(calls[1]["oldest"]) < DAY3.timestamp() < float(ts(DAY3, 0))  # the day re-read from its start
    assert (again.added, again.updated, again.unchanged) == (0, 1, 1)  # thread checked, nothing new
    day3 = await doc_text(ctx, f"GHR/{DAY3:%Y-%m-%d}")
    assert "Expense reports" in day3 and "Receipts" in day3


async def test_member_removed_loses_access_at_next_sync(ctx, embedder, bot, fake_slack):
    ann = await dm_search(bot, "UANN", "salary bands reference")
    assert any(h["source"] == "hr-chat" for h in ann.data["hits"]) and SECRET in ann.text
    bob = await dm_search(bot, "UBOB", "salary bands reference")
    assert all(h["source"] != "hr-chat" for h in bob.data["hits"]) and SECRET not in bob.text
    assert "channel:slack:GHR" in (await audience_for(ctx, dm("UANN"), private_reply=True)).principals

    fake_slack.channels["GHR"]["members"].remove("UANN")
    still = await dm_search(bot, "UANN", "salary bands reference")
    assert SECRET in still.text  # membership changes take effect at the next sync
    await sync(ctx, "hr-chat", embedder)
    assert "channel:slack:GHR" not in (await audience_for(ctx, dm("UANN"), private_reply=True)).principals
    after = await dm_search(bot, "UANN", "salary bands reference")
    assert all(h["source"] != "hr-chat" for h in after.data["hits"]) and SECRET not in after.text
    fake_slack.channels["GHR"]["members"].append("UANN")
    await sync(ctx, "hr-chat", embedder)


async def test_membership_error_is_recorded_and_private_replies_use_public_documents(ctx, embedder, bot, fake_slack):
    fake_slack.fail("conversations.members", "missing_scope")
    report = await sync(ctx, "hr-chat", embedder)
    assert report.skipped == [{"document": "GHR/members", "error": report.skipped[0]["error"]}]
    assert "missing_scope" in report.skipped[0]["error"] and "xoxb" not in report.skipped[0]["error"]
    async with ctx.db() as session:
        row = await session.get(MembershipSync, ("slack", "GHR"))
    assert (row.ok, row.error) == (False, "SlackApiError: missing_scope")
    audience = await audience_for(ctx, dm("UANN"), private_reply=True)
    assert audience.principals == ("public",) and audience.degraded
    reply = await dm_search(bot, "UANN", "salary bands holiday policy")
    assert DEGRADED_NOTE in reply.text and SECRET not in reply.text
    assert {h["source"] for h in reply.data["hits"]} == {"general-chat"}  # public documents still answer

    await sync(ctx, "hr-chat", embedder)  # the next sync succeeds: access is back
    assert "channel:slack:GHR" in (await audience_for(ctx, dm("UANN"), private_reply=True)).principals


async def test_bad_channel_and_missing_token_are_one_line_errors(ctx, embedder, bot):
    reply = await bot.push("/sources add x kind=slack_channel channel=general")
    assert reply.error and "not a Slack channel id" in reply.text
    reply = await bot.push("/sources add y kind=discord_channel")
    assert reply.error and "needs channel=ID" in reply.text
    no_token = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"slack_bot_token": None}))
    with pytest.raises(Exception, match="set SLACK_BOT_TOKEN"):
        await sync(no_token, "hr-chat", embedder)
    src = next(r["source"] for r in await admin.source_rows(ctx) if r["source"].name == "hr-chat")
    assert src.status == "error" and "SLACK_BOT_TOKEN" in src.last_error  # the failed run is on the source


async def test_summarize_reads_the_platform_history_and_falls_back_to_memory(ctx, fake_slack):
    from bot import memory
    from bot.adapters.slack import SlackAdapter
    from bot.models import Turn
    from handlers.tools import ToolContext
    from handlers.tools.summarize import gather

    ctx.platforms["slack"] = SlackAdapter(build_router(ctx), ctx)
    try:
        asked = Incoming(platform="slack", workspace="T1", channel="GHR", user="UANN", text="", thread=PARENT)
        channel = await gather(ToolContext(asked, ctx), "channel", 30)
        assert len(channel) == 5 and channel[0].startswith(f"[{DAY1:%Y-%m-%d} 09:00] Ann: Salary bands")
        thread = await gather(ToolContext(asked, ctx), "thread", 30)
        assert [line.split("] ", 1)[1] for line in thread] == [
            "Ann: Who approves salary band changes?", "Bob: The compensation committee approves them.",
            "Ann: Thanks <@UBOB>, noted.", "Ann: The committee meets monthly."]
        await memory.append(ctx.db, await memory.conversation_id(ctx.db, asked),
                            [Turn(role="user", content="remembered question", tokens=2, user_id="UANN")])
        fake_slack.fail("conversations.replies", "internal_error")
        assert await gather(ToolContext(asked, ctx), "thread", 30) == ["UANN: remembered question"]
    finally:
        ctx.platforms.pop("slack")


# -- Discord ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def discord_adapter(ctx, fake_discord):
    from bot.adapters.discord import DiscordAdapter

    adapter = DiscordAdapter(build_router(ctx), ctx, guild_ready_timeout=0.1)
    task = asyncio.create_task(adapter.run())
    await asyncio.wait_for(adapter.ready.wait(), 20)
    ctx.platforms["discord"] = adapter
    yield adapter
    ctx.platforms.pop("discord", None)
    await adapter.close()
    await asyncio.wait_for(task, 10)


async def test_discord_private_channel_acl_members_threads_and_after_cursor(ctx, embedder, discord_adapter,
                                                                            fake_discord):
    first = fake_discord.message(D.PRIVATE, D.ALICE, "Interview loop for the staff role is on Thursday.")
    await admin.add_source(ctx, "hr-discord", kind="discord_channel", config={"channel": str(D.PRIVATE)},
                           platform="discord")
    report = await sync(ctx, "hr-discord", embedder)
    assert report.added == 1 and report.skipped == []
    assert [tuple(d.acl) for d in (await docs(ctx, "hr-discord")).values()] == [(f"channel:discord:{D.PRIVATE}",)]
    async with ctx.db() as session:
        members = (await session.execute(select(ChannelMember.user_id).where(
            ChannelMember.platform == "discord", ChannelMember.channel == str(D.PRIVATE)))).scalars().all()
    assert sorted(members) == sorted([str(D.OWNER), str(D.ALICE)])  # from the permission overwrites

    fake_discord.message(D.PRIVATE, D.BOB, "Remember to send the feedback forms.")
    fake_discord.calls.clear()
    again = await sync(ctx, "hr-discord", embedder)
    gets = fake_discord.find("GET", f"/channels/{D.PRIVATE}/messages")
    assert gets[0].query["after"] == first["id"] and again.updated == 1  # only after the cursor; day rebuilt

    thread = fake_discord.add_thread(D.GENERAL, "release plan")
    fake_discord.message(D.GENERAL, D.BOB, "Release train leaves at noon.")
    fake_discord.message(thread, D.ALICE, "Release plan: freeze on Monday.")
    fake_discord.message(thread, D.BOB, "Rollback owner is Carol.")
    await admin.add_source(ctx, "general-discord", kind="discord_channel", config={"channel": str(D.GENERAL)},
                           platform="discord")
    pub = await sync(ctx, "general-discord", embedder)
    got = await docs(ctx, "general-discord")
    assert pub.added == 2 and {tuple(d.acl) for d in got.values()} == {("public",)}
    text = await doc_text(ctx, f"{D.GENERAL}/thread/{thread}")
    assert "freeze on Monday" in text and "Rollback owner" in text and "Release train" not in text
    fake_discord.calls.clear()
    quiet = await sync(ctx, "general-discord", embedder)
    assert quiet.added == quiet.updated == 0
    assert fake_discord.find("GET", f"/channels/{thread}/messages")[0].query["after"]  # a cheap check, not a re-read


async def test_sync_outside_ladder_run_connects_discord_from_settings(ctx, embedder, discord_adapter, fake_discord):
    standup = fake_discord.message(D.GENERAL, D.ALICE, "Standup moved to 10:00.")
    day = f"{discord.utils.snowflake_time(int(standup['id'])):%Y-%m-%d}"  # discord.py dates a message by its id
    identifies = len(fake_discord.ops(2))
    report = await sync(dataclasses.replace(ctx, platforms={}), "general-discord", embedder)  # as `ladder sync`
    assert report.updated == 1 and "Standup moved" in await doc_text(ctx, f"{D.GENERAL}/{day}")
    assert len(fake_discord.ops(2)) == identifies + 1  # its own client logged in, and was closed afterwards
