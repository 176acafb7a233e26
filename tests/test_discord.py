"""The Discord adapter through the real discord.py client, over loopback, against the fake Discord
(gateway + REST) in tests/fakes/discord_server.py; answers come from the fake Ollama."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest
from sqlalchemy import select

from bot import router as router_mod
from bot.adapters import discord_render as render
from bot.adapters.discord import DiscordAdapter, DiscordSetupError
from bot.app import build_router
from bot.llm.base import Backend, ChatModel, ChatResult, ModelInfo
from bot.messages import Action, Citation, FileOut, Reply
from bot.models import AuditLog, Feedback, PendingAction
from tests.conftest import make_settings
from tests.fakes.discord_server import TOKEN, FakeDiscord
from tests.fakes.ollama_server import FakeOllama

MODEL = "llama3.1:8b"
D = FakeDiscord
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
TEST_COMMANDS = ("dtest_cite", "dtest_plot", "dtest_admin")


@router_mod.command("dtest_cite", help="test: a reply with citations", free_text=True)
async def _cite(msg, ctx):
    return Reply(text="Restart the worker. Ping @everyone!",
                 citations=(Citation(1, "Runbook", "https://wiki.test/runbook"), Citation(2, "Notes")))


@router_mod.command("dtest_plot", help="test: a reply with a PNG")
async def _plot(msg, ctx):
    return Reply(text="Loss curve attached.", files=(FileOut("loss.png", PNG, title="loss"),))


@router_mod.command("dtest_admin", help="test: admin only", admin=True)
async def _admin(msg, ctx):
    return Reply(text=f"admin ok for {msg.user}")


@pytest.fixture(scope="module", autouse=True)
def _unregister():
    yield
    for name in TEST_COMMANDS:  # keep the global registry clean for other test modules
        router_mod._REGISTRY.pop(name, None)


@pytest.fixture(scope="module")
async def ollama():
    async with FakeOllama() as server:
        server.add_model(MODEL, context_length=8192)
        yield server


@pytest.fixture(scope="module")
async def fake():
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()


def discord_settings(tmp, database_url, fake: FakeDiscord, ollama: FakeOllama, **extra):
    return make_settings(tmp, database_url, llm_backend="ollama", ollama_host=ollama.url, llm_model=MODEL,
                         discord_token=TOKEN, discord_api_url=fake.api_url, discord_guild_ids=str(D.GUILD),
                         discord_admin_role_ids=str(D.ADMIN_ROLE), discord_members_intent=True,
                         stream_edit_interval_s=0.2, **extra)


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url, fake, ollama):
    return discord_settings(tmp_path_factory.mktemp("data"), database_url, fake, ollama)


@pytest.fixture(scope="module")
async def adapter(ctx, fake):
    a = DiscordAdapter(build_router(ctx), ctx, guild_ready_timeout=0.1)
    task = asyncio.create_task(a.run())
    await asyncio.wait_for(a.ready.wait(), 15)
    yield a
    await a.close()
    await asyncio.wait_for(task, 10)


def replied(call) -> str:
    """The id of the message a bot message replies to (discord.py sends it as an int)."""
    return str((call.json or {}).get("message_reference", {}).get("message_id"))


def content(call) -> str:
    return (call.json or {}).get("content") or ""


async def reply_to(fake: FakeDiscord, message: dict, channel: int | None = None, timeout: float = 10.0):
    """The bot's messages that reply to `message` (waits for at least one)."""
    channel = channel or int(message["channel_id"])

    def found():
        return [c for c in fake.created(channel)
                if replied(c) == message["id"]]

    await fake.wait_for(lambda: bool(found()), timeout)
    return found()


async def test_identifies_with_message_content_intent_and_syncs_ladder(adapter, fake):
    identify = fake.ops(2)[0]
    assert identify["token"] == TOKEN and identify["intents"] & (1 << 15)  # MESSAGE_CONTENT
    group = fake.commands[str(D.GUILD)][0]
    subs = [o["name"] for o in group["options"]]
    assert group["name"] == "ladder" and subs[:2] == ["ask", "help"] and "dtest_cite" in subs


async def test_slash_command_is_deferred_then_answered_while_the_model_is_slow(adapter, ctx, fake, monkeypatch):
    release = asyncio.Event()

    class SlowModel(ChatModel):
        name, backend = "slow", "ollama"

        async def chat(self, messages, **kw):
            await asyncio.wait_for(release.wait(), 10)  # the model takes up to 10 s
            return ChatResult("Retrieval-augmented generation.", self.name, self.backend)

    class SlowBackend(Backend):
        name, default_model = "ollama", "slow"

        async def ping(self):
            return True

        async def list_models(self):
            return [ModelInfo("slow", "ollama")]

        def model(self, name):
            return SlowModel()

    monkeypatch.setitem(ctx.models.backends, "ollama", SlowBackend())
    payload = await fake.slash("ask", "What is RAG?")
    callback = f"/interactions/{payload['id']}/"
    await fake.wait_for(lambda: fake.find("POST", callback), 5)
    assert fake.find("POST", callback)[0].json["type"] == 5  # deferred ("thinking")
    assert not fake.find("PATCH", f"{payload['token']}/messages/@original")  # the model is still working
    release.set()
    await fake.wait_for(lambda: any("Retrieval-augmented" in content(c)
                                    for c in fake.find("PATCH", f"{payload['token']}/messages/@original")), 15)


async def test_slash_errors_are_ephemeral(adapter, fake):
    payload = await fake.slash("ask", "hi template=nope")  # bad option: answered at once, only to the user
    await fake.wait_for(lambda: fake.find("POST", f"/interactions/{payload['id']}/"), 5)
    data = fake.find("POST", f"/interactions/{payload['id']}/")[0].json
    assert data["type"] == 4 and data["data"]["flags"] & 64 and "template" in data["data"]["content"]
    payload = await fake.slash("dtest_admin", author=D.BOB)  # refused by the admin gate after the defer
    await fake.wait_for(lambda: fake.find("POST", f"/webhooks/{D.APP}/{payload['token']}"), 5)
    follow = fake.find("POST", f"/webhooks/{D.APP}/{payload['token']}")[0].json
    assert follow["flags"] & 64 and "admins only" in follow["content"]
    assert fake.find("DELETE", f"{payload['token']}/messages/@original")


async def test_duplicate_interaction_delivery_is_answered_once(adapter, fake):
    payload = await fake.slash("help")
    await fake.slash("help", payload=payload)
    await fake.wait_for(lambda: fake.find("POST", f"/webhooks/{D.APP}/{payload['token']}"), 5)
    sentinel = await fake.slash("help")  # handled after both deliveries of the first
    await fake.wait_for(lambda: fake.find("POST", f"/webhooks/{D.APP}/{sentinel['token']}"), 5)
    assert len(fake.find("POST", f"/interactions/{payload['id']}/")) == 1


async def test_mention_gets_a_reply_with_citations_that_pings_nobody(adapter, fake):
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True)
    [call] = await reply_to(fake, msg)
    text = content(call)
    assert text.startswith("Restart the worker.") and "@everyone" not in text and "@\u200beveryone" in text
    assert text.endswith("**Sources**\n[1] [Runbook](<https://wiki.test/runbook>)\n[2] Notes")
    assert call.json["allowed_mentions"]["parse"] == []


async def test_model_answer_in_a_dm_and_feedback_is_stored(adapter, ctx, fake, ollama):
    ollama.reply("Paris is the capital of France.")
    dm = 5000 + D.ALICE
    msg = await fake.user_message(dm, "What is the capital of France?")
    [call] = await reply_to(fake, msg)
    await fake.wait_for(lambda: "Paris" in fake.messages[dm][-1]["content"] and fake.messages[dm][-1]["components"])
    answer = fake.messages[dm][-1]
    ids = [c["custom_id"] for row in answer["components"] for c in row["components"]]
    assert ids == ["ladder:feedback_up:", "ladder:feedback_down:"]
    press = await fake.press(answer, "ladder:feedback_down:", author=D.ALICE)
    await fake.wait_for(lambda: fake.find("POST", f"/interactions/{press['id']}/"), 5)
    async with ctx.db() as s:
        row = (await s.execute(select(Feedback).where(Feedback.message_id == answer["id"]))).scalar_one()
    assert (row.score, row.user_id, row.platform) == (-1, str(D.ALICE), "discord") and "Paris" in row.answer


async def test_long_answer_is_split_in_order_never_inside_a_code_block(adapter, fake, ollama):
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum " * 33 for i in range(10)]
    code = "```python\n" + "\n".join(f"x{i} = {i}" for i in range(60)) + "\n```"
    text = "\n\n".join(paragraphs[:6] + [code] + paragraphs[6:])
    assert len(text) >= 4500
    ollama.reply(text)
    msg = await fake.user_message(D.NO_THREADS, f"<@{D.BOT}> write a lot", mention_bot=True)
    await fake.wait_for(lambda: any("Paragraph 9" in content(c) for c in fake.created(D.NO_THREADS))
                        and "via ollama" in fake.messages[D.NO_THREADS][-1]["content"], 20)
    bot_msgs = [m["content"] for m in fake.messages[D.NO_THREADS] if m["author"]["id"] == str(D.BOT)]
    assert len(bot_msgs) >= 3 and all(len(m) <= 2000 for m in bot_msgs)
    assert all(m.count("```") % 2 == 0 for m in bot_msgs)
    joined = "\n\n".join(bot_msgs)
    assert [joined.index(f"Paragraph {i}:") for i in range(10)] == sorted(joined.index(f"Paragraph {i}:")
                                                                          for i in range(10))
    assert "x59 = 59" in joined and not fake.find("POST", "/threads")
    assert msg["id"] in {replied(c) for c in fake.created(D.NO_THREADS)}


async def test_long_answer_goes_to_a_thread_where_allowed(adapter, fake, ollama):
    ollama.reply("\n\n".join(f"Part {i}: " + "words " * 80 for i in range(8)))
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> explain at length", mention_bot=True)
    await fake.wait_for(lambda: fake.find("POST", f"/messages/{msg['id']}/threads"), 20)
    await fake.wait_for(lambda: any("via ollama" in content(c) for c in fake.created(int(msg["id"]))), 20)
    in_thread = [content(c) for c in fake.created(int(msg["id"]))]  # thread id = starter message id
    assert "Part 0" in in_thread[0] and "Part 7" in in_thread[-1]
    ollama.reply("Yes, as I said.")
    follow = await fake.user_message(int(msg["id"]), "and then?")  # no mention needed in the bot's thread
    await fake.wait_for(lambda: any("as I said" in content(c) for c in fake.created(int(msg["id"]))), 10)
    history = "\n".join(str(m.get("content")) for m in ollama.requests[-1][1]["messages"])
    assert "explain at length" in history and follow["content"] in history  # thread memory


async def test_png_is_attached(adapter, fake):
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_plot", mention_bot=True)
    [call] = await reply_to(fake, msg)
    assert [(f["filename"], f["data"]) for f in call.files] == [("loss.png", PNG)]


async def test_admin_command_by_role_and_refused_for_others(adapter, fake):
    ok = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_admin", mention_bot=True, author=D.ALICE)
    refused = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_admin", mention_bot=True, author=D.BOB)
    assert "admin ok" in content((await reply_to(fake, ok))[0])
    assert "admins only" in content((await reply_to(fake, refused))[0])


async def test_admin_and_confirm_buttons_refuse_other_users(adapter, ctx, fake):
    await adapter.post(str(D.GENERAL), Reply(text="Job 12 finished.", actions=(Action("deploy", "Deploy", "12"),)))
    report = fake.messages[D.GENERAL][-1]
    press = await fake.press(report, "ladder:deploy:12", author=D.BOB)
    await fake.wait_for(lambda: fake.find("POST", f"/interactions/{press['id']}/"), 5)
    answer = fake.find("POST", f"/interactions/{press['id']}/")[0].json
    assert answer["data"]["flags"] & 64 and "Only admins" in answer["data"]["content"]
    await adapter.post(str(D.GENERAL), Reply(text="Run it?", actions=(Action("dtest_admin", "Run", "x"),)))
    press = await fake.press(fake.messages[D.GENERAL][-1], "ladder:dtest_admin:x", author=D.OWNER)  # Administrator
    await fake.wait_for(lambda: any(f"admin ok for {D.OWNER}" in content(c)
                                    for c in fake.find("PATCH", f"{press['token']}/messages/@original")), 5)
    now = datetime.now(UTC)
    async with ctx.db() as s, s.begin():
        s.add(PendingAction(id="pa1", platform="discord", workspace=str(D.GUILD), channel=str(D.GENERAL),
                            user_id=str(D.ALICE), kind="tool", summary="post to #general", payload={},
                            status="pending", created_at=now, expires_at=now + timedelta(minutes=5)))
    await adapter.post(str(D.GENERAL), Reply(text="Confirm?", actions=(Action("confirm", "Confirm", "pa1"),
                                                                       Action("cancel", "Cancel", "pa1"))))
    proposal = fake.messages[D.GENERAL][-1]
    press = await fake.press(proposal, "ladder:confirm:pa1", author=D.BOB)
    await fake.wait_for(lambda: fake.find("POST", f"/webhooks/{D.APP}/{press['token']}"), 5)
    assert "Only the person who asked" in content(fake.find("POST", f"/webhooks/{D.APP}/{press['token']}")[0])
    press = await fake.press(proposal, "ladder:cancel:pa1", author=D.ALICE)
    await fake.wait_for(lambda: fake.find("PATCH", f"{press['token']}/messages/@original"), 5)
    async with ctx.db() as s:
        assert (await s.get(PendingAction, "pa1")).status == "cancelled"
        refusals = (await s.execute(select(AuditLog).where(AuditLog.allowed.is_(False)))).scalars().all()
    assert {r.action for r in refusals} >= {"button:deploy", "confirm:tool"}


async def test_ignores_itself_and_other_bots(adapter, fake):
    ignored = [await fake.user_message(D.GENERAL, f"<@{D.BOT}> /help", mention_bot=True, author=D.OTHER_BOT),
               await fake.user_message(D.GENERAL, f"<@{D.BOT}> /help", mention_bot=True, author=D.BOT),
               await fake.user_message(D.GENERAL, "/help without a mention", author=D.BOB)]
    sentinel = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True, author=D.BOB)
    await reply_to(fake, sentinel)  # handled after the three before it
    answered = {replied(c) for c in fake.created(D.GENERAL)}
    assert not answered.intersection(m["id"] for m in ignored)


async def test_rest_429_on_send_is_retried_after_the_delay_once(adapter, fake):
    fake.rate_limit(f"/channels/{D.GENERAL}/messages", retry_after=0.3)
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True)
    calls = await reply_to(fake, msg)
    assert len(calls) == 1 and any(c.status == 429 for c in fake.calls)


async def test_gateway_dropped_by_the_server_resumes_and_answers_once(adapter, fake):
    identifies, seq = len(fake.ops(2)), fake.seq
    await fake.drop(4000)
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True)  # sent while down
    await fake.wait_for(lambda: fake.ops(6), 15)
    resume = fake.ops(6)[-1]
    assert resume["session_id"] == fake.session_id and resume["seq"] == seq and len(fake.ops(2)) == identifies
    await reply_to(fake, msg)
    after = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True)
    await reply_to(fake, after)
    assert len(await reply_to(fake, msg)) == 1


async def test_op7_reconnect_resumes_same_session_and_sequence_without_duplicates(adapter, fake):
    resumes, seq = len(fake.ops(6)), fake.seq
    await fake.reconnect()
    await fake.wait_for(lambda: len(fake.ops(6)) > resumes, 15)
    assert fake.ops(6)[-1] == {"seq": seq, "session_id": fake.session_id, "token": TOKEN}
    msg = await fake.user_message(D.GENERAL, f"<@{D.BOT}> /dtest_cite", mention_bot=True)
    await reply_to(fake, msg)
    assert len(fake.delivered) == len(set(fake.delivered))  # nothing dispatched twice
    assert len(await reply_to(fake, msg)) == 1


async def test_history_readers_and_members(adapter, fake):
    channel = 2004
    first = fake.message(channel, D.ALICE, "m0")
    for i in range(1, 130):
        fake.message(channel, D.BOB, f"m{i}")
    seen = [m async for m in adapter.history(str(channel), after=first["id"])]
    assert [m.text for m in seen] == [f"m{i}" for i in range(1, 130)]
    assert len(fake.find("GET", f"/channels/{channel}/messages")) >= 2  # paginated
    assert await adapter.readers(str(D.GENERAL)) == ("public",)
    assert await adapter.readers(str(D.PRIVATE)) == (f"channel:discord:{D.PRIVATE}",)
    assert sorted(await adapter.members(str(D.PRIVATE))) == sorted([str(D.OWNER), str(D.ALICE)])


async def test_platform_post_update_upload_for_notifications(adapter, fake):
    long = Reply(text="\n\n".join(f"Step {i}: " + "x " * 500 for i in range(3)), files=(FileOut("r.png", PNG),))
    first = await adapter.post(str(D.PRIVATE), long, thread=None)
    posted = fake.created(D.PRIVATE)
    assert [c.json["content"][:6] for c in posted] == ["Step 0", "Step 1", "Step 2"] and posted[-1].files
    assert fake.messages[D.PRIVATE][0]["id"] == first
    await adapter.update(str(D.PRIVATE), first, Reply(text="Job 3: 50% @here"))
    [edit] = fake.find("PATCH", f"/channels/{D.PRIVATE}/messages/{first}")
    assert edit.json["content"] == "Job 3: 50% @\u200bhere"
    file_id = await adapter.upload(str(D.PRIVATE), FileOut("loss.png", PNG), text="Loss curve")
    assert fake.messages[D.PRIVATE][-1]["id"] == file_id and fake.created(D.PRIVATE)[-1].files[0]["data"] == PNG


async def test_missing_message_content_intent_is_one_clear_error_and_others_keep_running(ctx, caplog):
    fake = FakeDiscord()
    fake.close_on_identify = 4014
    await fake.start()
    try:
        own = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"discord_api_url": fake.api_url}))
        adapter = DiscordAdapter(build_router(own), own)
        other = asyncio.create_task(asyncio.sleep(0.2, result="still running"))
        results = await asyncio.wait_for(asyncio.gather(adapter.run(), other, return_exceptions=True), 20)
    finally:
        await fake.stop()
    discord.http.Route.BASE = ctx.settings.discord_api_url  # the module's adapter keeps its fake
    err, still = results
    assert isinstance(err, DiscordSetupError) and still == "still running"
    assert "Message Content Intent" in str(err) and "Developer Portal" in str(err)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # app.py logs it, once


async def test_ladder_run_connects_with_discord_token(tmp_path, database_url, ollama):
    fake = FakeDiscord()
    await fake.start()
    env = dict(os.environ, DISCORD_TOKEN=TOKEN, DISCORD_API_URL=fake.api_url, DATABASE_URL=database_url,
               LADDER_DATA_DIR=str(tmp_path), LLM_BACKEND="ollama", OLLAMA_HOST=ollama.url, LLM_MODEL=MODEL,
               SLACK_BOT_TOKEN="")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "ladder"), "run"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        await fake.wait_ready(timeout=90)
        assert fake.ops(2)[0]["token"] == TOKEN and fake.commands
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
        await fake.stop()
    assert TOKEN not in out


async def test_ladder_run_exits_non_zero_when_its_only_adapter_lacks_the_intent(tmp_path, database_url, ollama):
    fake = FakeDiscord()
    fake.close_on_identify = 4014
    await fake.start()
    env = dict(os.environ, DISCORD_TOKEN=TOKEN, DISCORD_API_URL=fake.api_url, DATABASE_URL=database_url,
               LADDER_DATA_DIR=str(tmp_path), LLM_BACKEND="ollama", OLLAMA_HOST=ollama.url, LLM_MODEL=MODEL,
               SLACK_BOT_TOKEN="")
    try:
        proc = await asyncio.create_subprocess_exec(str(Path(sys.executable).parent / "ladder"), "run", env=env,
                                                    cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = (await asyncio.wait_for(proc.communicate(), 120))[0].decode()
    finally:
        await fake.stop()
    assert proc.returncode == 1 and "Message Content Intent" in out
    assert "Traceback" not in out and TOKEN not in out


def test_split_keeps_code_blocks_whole_and_reopens_oversized_ones():
    block = "```py\n" + "\n".join(f"line {i}" for i in range(400)) + "\n```"
    chunks = render.split_message("intro\n\n" + block + "\n\noutro")
    assert all(len(c) <= 2000 and c.count("```") % 2 == 0 for c in chunks)
    assert chunks[0].startswith("intro") and chunks[-1].endswith("outro")
    assert all(c.startswith("```py") for c in chunks[1:-1])
    small = render.split_message("a" * 1500 + "\n\n```\n" + "b" * 1000 + "\n```")
    assert small[1].startswith("```") and small[1].endswith("```")  # moved whole, not cut
