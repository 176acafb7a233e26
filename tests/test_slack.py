"""The Slack adapter through real slack-bolt in HTTP mode (and Socket Mode) over loopback.

Requests are signed with the test signing secret and sent to the adapter's aiohttp server; its Web API
calls go to `FakeSlack`, the model is the real `ollama` client against `FakeOllama`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from bot import channels
from bot.actions import on_confirm
from bot.adapters.slack import SlackAdapter
from bot.context import Context
from bot.messages import Action, Incoming, Reply
from bot.middleware import DEFAULT_CHAIN
from bot.models import AuditLog, Feedback, PendingAction, ProcessedEvent
from bot.router import Router
from tests.conftest import make_settings
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.slack_api import TEAM, FakeSlack, event_body
from tests.slack_helpers import MODEL, PNG, SECRET, GatedBackend, SlackClient, add_test_commands, button, dm, mention

CHANNELS = ["CASK", "CSIG", "CDUP", "CCON", "CSAFE", "CTHR", "CSTR", "CFLD", "CPNG", "CFB", "CDEP", "CCNF",
            "C429", "CSLOW", "CERR", "CADM", "CFOREVER"]
USERS = ["UANN", "UBOB", "UOWNER", "UADMIN"]


@pytest.fixture(scope="module")
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    for cid in CHANNELS:
        fake.add_channel(cid, cid.lower(), members=USERS + ["UBOT"])
    fake.add_channel("DANN", "", members=["UANN", "UBOT"], is_im=True)
    fake.add_user("UANN", "ann", display_name="Ann")
    fake.add_user("UBOB", "bob")
    fake.add_user("UOWNER", "olga", is_owner=True)
    fake.add_user("UADMIN", "ada")
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    fake = FakeOllama(canned="Hello from the fake Ollama, answering at some length for streaming purposes.")
    fake.add_model(MODEL, context_length=8192)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, database_url: str, fake_slack: FakeSlack,
             fake_ollama: FakeOllama):
    return make_settings(tmp_path_factory.mktemp("data"), database_url, slack_bot_token="xoxb-test",
                         slack_signing_secret=SECRET, slack_api_url=fake_slack.api_url, llm_backend="ollama",
                         ollama_host=fake_ollama.url, llm_model=MODEL, admin_users="UADMIN",
                         link_allowlist="docs.example.com")


@pytest.fixture(scope="module")
def deploys() -> list[Incoming]:
    return []


@pytest.fixture(scope="module")
async def adapter(ctx: Context, deploys: list[Incoming]) -> AsyncIterator[SlackAdapter]:
    import handlers.ask  # noqa: F401  (only the handlers these tests use: others are being written)
    import handlers.help  # noqa: F401

    router = Router(ctx, DEFAULT_CHAIN)
    add_test_commands(router, deploys)
    slack = SlackAdapter(router, ctx)
    ctx.platforms["slack"] = slack
    slack.url = f"http://127.0.0.1:{await slack.start_http(0, host='127.0.0.1')}/slack/events"
    yield slack
    await slack.drain()
    await slack.stop()


@pytest.fixture(scope="module")
async def slack(adapter: SlackAdapter, fake_slack: FakeSlack) -> AsyncIterator[SlackClient]:
    async with aiohttp.ClientSession() as session:
        yield SlackClient(session, adapter.url, fake_slack.url)


def posted(fake: FakeSlack, channel: str, thread: str | None = None) -> list[dict[str, Any]]:
    return [m for m in fake.messages[channel] if thread is None or m["thread_ts"] == thread]


def ephemerals(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c for c in fake.calls_to("chat.postEphemeral") if c["channel"] == channel]


async def final_answer(fake: FakeSlack, channel: str, thread: str | None = None) -> dict[str, Any]:
    """The bot's message once its last edit (with the model footer) landed."""
    await fake.wait_for(lambda: any(f"{MODEL} via ollama" in m["text"] for m in posted(fake, channel, thread)), 20)
    return next(m for m in posted(fake, channel, thread) if f"{MODEL} via ollama" in m["text"])


async def test_slash_command_is_acked_at_once_while_the_model_is_slow(slack, adapter, ctx, fake_slack) -> None:
    gate = asyncio.Event()
    ctx.models.backends["slow"] = GatedBackend(gate)
    where = Incoming(platform="slack", workspace=TEAM, channel="CSLOW", user="UANN", text="")
    await channels.update(ctx.db, where, backend="slow", model="slow-model")
    start = time.monotonic()
    status = await slack.command("ask are you slow?", "CSLOW")
    acked_after = time.monotonic() - start
    assert status == 200
    assert acked_after < 3.0, f"ack took {acked_after:.2f}s"  # Slack's limit; the model is still blocked
    assert posted(fake_slack, "CSLOW") == []
    gate.set()  # the model answers now (it would after 10 s anyway)
    await fake_slack.wait_for(lambda: any("Slow but sure." in m["text"] for m in posted(fake_slack, "CSLOW")), 15)
    message = posted(fake_slack, "CSLOW")[-1]
    assert message["thread_ts"] is None  # slash commands answer in the channel
    assert "/ladder ask are you slow?" in json.dumps(message["blocks"])


async def test_bad_signature_missing_headers_and_stale_timestamp_are_rejected(slack, adapter, ctx, fake_slack):
    event = mention("CSIG", "100.1", "hello")
    body = json.dumps(event_body(event, "EvSIG"))
    bad, _ = await slack.send(body, "application/json", secret="wrong-secret")
    stale, _ = await slack.send(body, "application/json", timestamp=int(time.time()) - 600)
    tampered, _ = await slack.send(body.replace("hello", "hullo"), "application/json",
                                   headers={"X-Slack-Signature": "v0=" + "0" * 64})
    async with slack.session.post(slack.url, data=body, headers={"Content-Type": "application/json"}) as resp:
        missing = resp.status
    assert (bad, stale, tampered, missing) == (401, 401, 401, 401)
    await adapter.drain()
    assert posted(fake_slack, "CSIG") == []
    async with ctx.db() as session:
        assert (await session.execute(select(ProcessedEvent).where(ProcessedEvent.key == f"{TEAM}:EvSIG"))).first() \
            is None


async def test_redelivered_event_over_http_and_socket_mode_gets_one_reply(slack, adapter, fake_slack) -> None:
    event = mention("CDUP", "200.1", "say hi once")
    assert await slack.event(event, "EvDUP") == 200
    await final_answer(fake_slack, "CDUP", "200.1")
    for retry in (1, 2):
        assert await slack.event(event, "EvDUP", retry=retry) == 200
    await adapter.connect_socket_mode("xapp-test")  # the same app over Socket Mode, as after a reconnect
    await fake_slack.wait_for(lambda: len(fake_slack.sockets) > 0)
    envelope = fake_slack.send_envelope("events_api", event_body(event, "EvDUP"), retry_attempt=0)
    await fake_slack.wait_for(lambda: any(a.get("envelope_id") == envelope for a in fake_slack.acks), 10)
    await adapter.drain()
    assert len(posted(fake_slack, "CDUP")) == 1
    assert fake_slack.calls_to("apps.connections.open")[-1]["_token"] == "xapp-test"


async def test_socket_mode_delivery_is_answered(adapter, fake_slack) -> None:
    if not fake_slack.sockets:
        await adapter.connect_socket_mode("xapp-test")
        await fake_slack.wait_for(lambda: len(fake_slack.sockets) > 0)
    fake_slack.send_envelope("events_api", event_body(mention("CASK", "250.1", "over the socket"), "EvSOCK"))
    message = await final_answer(fake_slack, "CASK", "250.1")
    assert message["thread_ts"] == "250.1"


async def test_two_concurrent_deliveries_get_one_reply(slack, adapter, fake_slack) -> None:
    event = mention("CCON", "300.1", "twice at once")
    statuses = await asyncio.gather(slack.event(event, "EvCON"), slack.event(event, "EvCON", retry=1))
    assert statuses == [200, 200]
    await final_answer(fake_slack, "CCON", "300.1")
    await adapter.drain()
    assert len(posted(fake_slack, "CCON")) == 1


async def test_model_output_cannot_ping_or_link_outside(slack, fake_slack, fake_ollama) -> None:
    fake_ollama.reply("Attention <!channel> and <!here|here> and <@UADMIN> @everyone "
                      "![x](https://evil.test/a.png?d=secret) [leak](https://evil.test/?q=secret) "
                      "[guide](https://docs.example.com/guide)")
    assert await slack.event(mention("CSAFE", "400.1", "ping everyone"), "EvSAFE") == 200
    message = await final_answer(fake_slack, "CSAFE", "400.1")
    everything = message["text"] + json.dumps(message["blocks"])
    for bad in ("<!channel>", "<!here", "<@UADMIN>", "evil.test/a.png", "q=secret", "](https://evil"):
        assert bad not in everything
    assert "<https://docs.example.com/guide|guide>" in message["text"]
    assert "channel" in message["text"] and "everyone" in message["text"]  # still readable
    call = [c for c in fake_slack.calls_to("chat.postMessage") if c["channel"] == "CSAFE"][-1]
    assert call["unfurl_links"] is False and call["unfurl_media"] is False


async def test_mention_in_thread_replies_in_thread_with_its_memory(slack, fake_slack, fake_ollama) -> None:
    fake_ollama.reply("The magic number is 42, as the docs say in several places.")
    assert await slack.event(mention("CTHR", "500.1", "what is the magic number?"), "EvTHR1") == 200
    first = await final_answer(fake_slack, "CTHR", "500.1")
    assert "42" in first["text"]
    fake_ollama.reply("Doubled, it is 84, which is twice the magic number from before.")
    follow_up = mention("CTHR", "500.2", "and doubled?", thread_ts="500.1")
    assert await slack.event(follow_up, "EvTHR2") == 200
    await fake_slack.wait_for(lambda: any("84" in m["text"] for m in posted(fake_slack, "CTHR", "500.1")), 20)
    assert {m["thread_ts"] for m in posted(fake_slack, "CTHR")} == {"500.1"}
    chat = [body for path, body in fake_ollama.requests if path == "/api/chat"][-1]
    contents = [m["content"] for m in chat["messages"]]
    assert "what is the magic number?" in contents and any("magic number is 42" in c for c in contents)
    assert contents[-1] == "and doubled?"


async def test_dm_is_answered_in_a_thread(slack, fake_slack) -> None:
    assert await slack.event(dm("DANN", "550.1", "hi in private"), "EvDM") == 200
    message = await final_answer(fake_slack, "DANN", "550.1")
    assert message["thread_ts"] == "550.1"


async def test_streamed_answer_edits_the_placeholder_and_ends_with_citations(slack, fake_slack, fake_ollama):
    words = " ".join(f"word{i}" for i in range(40))
    fake_ollama.reply(f"The runbook says: {words}.")
    assert await slack.event(mention("CSTR", "600.1", "/cite what does the runbook say?"), "EvSTR") == 200
    message = await final_answer(fake_slack, "CSTR", "600.1")
    assert len(posted(fake_slack, "CSTR")) == 1  # one message, edited
    first_post = [c for c in fake_slack.calls_to("chat.postMessage") if c["channel"] == "CSTR"][0]
    assert first_post["text"].endswith(" …")  # the placeholder was a partial answer
    assert message["edits"] >= 1
    assert "<https://docs.example.com/runbook|Runbook>" in message["text"]
    assert "[2] Team notes" in message["text"]
    assert f"{MODEL} via ollama" in message["text"]
    assert button(message, "feedback_up") and button(message, "feedback_down")


async def test_partial_edits_are_rate_limited(slack, adapter, fake_slack) -> None:
    adapter.edit_interval = 3600.0
    try:
        assert await slack.event(mention("CFLD", "650.1", "/flood"), "EvFLD") == 200
        await fake_slack.wait_for(lambda: any(m["text"] == "flood done" for m in posted(fake_slack, "CFLD")), 20)
        await adapter.drain()
    finally:
        adapter.edit_interval = 0.0
    assert len([c for c in fake_slack.calls_to("chat.postMessage") if c["channel"] == "CFLD"]) == 1
    assert len([c for c in fake_slack.calls_to("chat.update") if c["channel"] == "CFLD"]) == 1  # the final


async def test_png_is_uploaded_into_the_thread(slack, fake_slack) -> None:
    assert await slack.event(mention("CPNG", "700.1", "/plot"), "EvPNG") == 200
    await fake_slack.wait_for(lambda: any(c.get("channel_id") == "CPNG"
                                          for c in fake_slack.calls_to("files.completeUploadExternal")), 20)
    complete = [c for c in fake_slack.calls_to("files.completeUploadExternal") if c["channel_id"] == "CPNG"][0]
    assert complete["thread_ts"] == "700.1"
    file_id = complete["files"][0]["id"]
    assert fake_slack.uploads[file_id] == PNG
    assert complete["files"][0]["title"] == "Loss"
    assert "loss curve" in posted(fake_slack, "CPNG", "700.1")[0]["text"]


async def test_feedback_button_is_stored_with_question_answer_and_sources(slack, adapter, ctx, fake_slack):
    assert await slack.event(mention("CFB", "800.1", "/cite where is the runbook?"), "EvFB") == 200
    message = await final_answer(fake_slack, "CFB", "800.1")
    down = button(message, "feedback_down")
    assert await slack.press("feedback_down", down["value"], user="UBOB", message=message) == 200
    await fake_slack.wait_for(lambda: ephemerals(fake_slack, "CFB"), 10)
    async with ctx.db() as session:
        row = (await session.execute(select(Feedback).where(Feedback.channel == "CFB"))).scalar_one()
    assert (row.score, row.user_id, row.platform, row.workspace) == (-1, "UBOB", "slack", TEAM)
    assert row.question == "where is the runbook?"
    assert row.answer == message["text"]
    assert row.sources[0] == {"title": "Runbook", "url": "https://docs.example.com/runbook"}
    assert (row.thread, row.message_id) == ("800.1", message["ts"])
    assert "feedback was recorded" in ephemerals(fake_slack, "CFB")[-1]["text"]


async def test_admin_button_refused_for_non_admin_and_run_for_admins(slack, adapter, ctx, fake_slack, deploys):
    ts = await adapter.post("CDEP", Reply(text="Job 12 finished.", actions=(Action("deploy", "Deploy", "12"),)))
    message = posted(fake_slack, "CDEP")[-1]
    assert message["ts"] == ts and button(message, "deploy")["value"] == "12"
    assert await slack.press("deploy", "12", user="UANN", message=message) == 200
    await fake_slack.wait_for(lambda: ephemerals(fake_slack, "CDEP"), 10)
    assert "Only admins" in ephemerals(fake_slack, "CDEP")[-1]["text"]
    assert deploys == []
    async with ctx.db() as session:
        audit = (await session.execute(select(AuditLog).where(AuditLog.action == "button:deploy"))).scalar_one()
    assert (audit.user_id, audit.allowed) == ("UANN", False)
    for admin in ("UOWNER", "UADMIN"):  # workspace owner per users.info; configured admin id
        assert await slack.press("deploy", "12", user=admin, message=message) == 200
    await fake_slack.wait_for(lambda: len(deploys) == 2, 10)
    assert sorted((d.user, d.user_name, d.text, d.is_admin, d.thread) for d in deploys) == [
        ("UADMIN", "Ada", "/deploy 12", True, ts), ("UOWNER", "Olga", "/deploy 12", True, ts)]


async def test_admin_slash_command_is_checked_on_the_server(slack, adapter, fake_slack, deploys) -> None:
    before = len(deploys)
    assert await slack.command("deploy 7", "CADM", user="UBOB") == 200
    await fake_slack.wait_for(lambda: ephemerals(fake_slack, "CADM"), 10)
    assert "for admins only" in ephemerals(fake_slack, "CADM")[-1]["text"]
    await adapter.drain()
    assert len(deploys) == before and posted(fake_slack, "CADM") == []


confirmed: list[str] = []


@on_confirm("slack_test_action")
async def _run_test_action(ctx: Context, row: PendingAction) -> Reply:
    confirmed.append(row.id)
    return Reply(text=f"Done: {row.summary}")


async def _pending(ctx: Context, action_id: str, user: str) -> None:
    from datetime import UTC, datetime, timedelta

    async with ctx.db() as session, session.begin():
        session.add(PendingAction(id=action_id, platform="slack", workspace=TEAM, channel="CCNF", thread=None,
                                  user_id=user, kind="slack_test_action", summary=f"post the notes ({action_id})",
                                  payload={}, expires_at=datetime.now(UTC) + timedelta(minutes=10)))


async def test_confirm_only_by_requester_or_admin_and_only_once(slack, adapter, ctx, fake_slack) -> None:
    await _pending(ctx, "pa1", "UANN")
    await _pending(ctx, "pa2", "UANN")
    ask = Reply(text="Post the notes?", actions=(Action("confirm", "Confirm", "pa1", "primary"),
                                                 Action("cancel", "Cancel", "pa1", "danger")))
    await adapter.post("CCNF", ask)
    message = posted(fake_slack, "CCNF")[-1]
    assert await slack.press("confirm", "pa1", user="UBOB", message=message) == 200
    await fake_slack.wait_for(lambda: ephemerals(fake_slack, "CCNF"), 10)
    assert "Only the person who asked" in ephemerals(fake_slack, "CCNF")[-1]["text"]
    assert confirmed == []
    assert await slack.press("confirm", "pa1", user="UANN", message=message) == 200
    await fake_slack.wait_for(lambda: any("Done: post the notes (pa1)" in m["text"]
                                          for m in posted(fake_slack, "CCNF")), 10)
    assert confirmed == ["pa1"]
    assert posted(fake_slack, "CCNF", message["ts"])  # the result went into the message's thread
    assert "Confirmed by <@UANN>" in json.dumps(message["blocks"]) and button.__name__  # buttons replaced
    assert not any(b["type"] == "actions" for b in message["blocks"])
    assert await slack.press("confirm", "pa1", user="UANN", message=message) == 200
    await fake_slack.wait_for(lambda: "already confirmed" in ephemerals(fake_slack, "CCNF")[-1]["text"], 10)
    assert await slack.press("cancel", "pa2", user="UADMIN", message=message) == 200  # an admin may cancel
    await fake_slack.wait_for(lambda: any("Cancelled: post the notes (pa2)" in m["text"]
                                          for m in posted(fake_slack, "CCNF")), 10)
    async with ctx.db() as session:
        rows = {r.id: (r.status, r.resolved_by) for r in (await session.execute(select(PendingAction))).scalars()}
    assert rows == {"pa1": ("confirmed", "UANN"), "pa2": ("cancelled", "UADMIN")}
    assert confirmed == ["pa1"]


async def test_rate_limited_post_is_retried_after_the_delay_once(slack, adapter, fake_slack) -> None:
    fake_slack.rate_limit("chat.postMessage", retry_after=1)
    assert await slack.event(mention("C429", "900.1", "/plot"), "Ev429") == 200
    await fake_slack.wait_for(lambda: posted(fake_slack, "C429"), 20)
    await adapter.drain()
    attempts = [c for c in fake_slack.calls_to("chat.postMessage") if c["channel"] == "C429"]
    assert len(attempts) == 2 and len(posted(fake_slack, "C429")) == 1


async def test_rate_limited_forever_gives_up_and_the_bot_stays_up(slack, adapter, fake_slack) -> None:
    fake_slack.rate_limit("chat.postMessage", retry_after=0, times=4)  # 1 try + 3 retries
    assert await slack.event(mention("CFOREVER", "950.1", "/plot"), "EvFOREVER1") == 200
    await fake_slack.wait_for(lambda: len([c for c in fake_slack.calls_to("chat.postMessage")
                                           if c["channel"] == "CFOREVER"]) == 4, 20)
    await adapter.drain()
    assert posted(fake_slack, "CFOREVER") == []
    assert await slack.event(mention("CFOREVER", "950.2", "/plot"), "EvFOREVER2") == 200
    await fake_slack.wait_for(lambda: posted(fake_slack, "CFOREVER"), 20)


async def test_own_and_other_bots_messages_are_ignored(slack, adapter, fake_slack) -> None:
    fake_slack.add_channel("DIGN", "", members=["UANN", "UBOT"], is_im=True)
    assert await slack.event(dm("DIGN", "1000.1", "echo", user="UBOT", bot_id="BBOT"), "EvSELF") == 200
    assert await slack.event(dm("DIGN", "1000.2", "beep", user="UOTHERBOT", bot_id="B9"), "EvBOT") == 200
    assert await slack.event(dm("DIGN", "1000.3", "edited", subtype="message_changed"), "EvEDIT") == 200
    await adapter.drain()
    assert posted(fake_slack, "DIGN") == []
    assert await slack.event(dm("DIGN", "1000.4", "/plot"), "EvHUMAN") == 200
    await fake_slack.wait_for(lambda: posted(fake_slack, "DIGN"), 20)
    await adapter.drain()
    assert [m["thread_ts"] for m in posted(fake_slack, "DIGN")] == ["1000.4"]


async def test_slash_command_errors_are_ephemeral(slack, adapter, fake_slack) -> None:
    assert await slack.command("modles list", "CERR", user="UBOB") == 200
    await fake_slack.wait_for(lambda: ephemerals(fake_slack, "CERR"), 10)
    error = ephemerals(fake_slack, "CERR")[-1]
    assert error["user"] == "UBOB" and "Unknown command /modles" in error["text"]
    await adapter.drain()
    assert posted(fake_slack, "CERR") == []


async def test_slash_command_where_the_bot_cannot_post_answers_via_response_url(slack, adapter, fake_slack):
    assert await slack.command("plot", "CNOTJOINED", response_url=f"{fake_slack.url}/response/x") == 200
    await fake_slack.wait_for(lambda: fake_slack.responses, 10)
    response = fake_slack.responses[-1]
    assert response["response_type"] == "in_channel" and "loss curve" in response["text"]


async def test_platform_reads_paginate_and_tell_private_from_public(adapter, fake_slack) -> None:
    members = [f"U{i:04d}" for i in range(450)]
    fake_slack.add_channel("CHIST", "history", members=members)
    fake_slack.add_channel("GPRIV", "secret", members=["UANN", "UBOT"], is_private=True)
    fake_slack.history["CHIST"] = [{"ts": f"{1000 + i}.000100", "user": "UANN", "text": f"m{i}", "type": "message"}
                                   for i in range(450)]
    fake_slack.history["CHIST"] += [{"ts": f"1001.{i:06d}", "thread_ts": "1001.000100", "user": "UBOB",
                                     "text": f"reply {i}", "type": "message"} for i in range(201, 461)]
    history = await adapter.raw_history("CHIST", oldest="1100.000100")
    assert [m["text"] for m in history][:2] == ["m101", "m102"] and len(history) == 349  # oldest first
    pages = [c for c in fake_slack.calls_to("conversations.history") if c["channel"] == "CHIST"]
    assert len(pages) == 2 and pages[1]["cursor"] == "200"
    thread = await adapter.replies("CHIST", "1001.000100")
    assert thread[0]["text"] == "m1" and len(thread) == 261
    since = datetime.fromtimestamp(1001.000300, UTC)
    assert [m["text"] for m in await adapter.raw_history("CHIST", since, thread="1001.000100")][:1] == ["reply 301"]
    assert await adapter.members("CHIST") == members
    assert set(await adapter.user_channels("UANN")) >= {"GPRIV", "CASK"}
    assert "GPRIV" not in await adapter.user_channels("UBOB")
    assert (await adapter.channel_info("GPRIV"))["is_private"] is True
    assert (await adapter.channel_info("CHIST"))["is_private"] is False
    assert await adapter.user_name("UANN") == "Ann" and await adapter.user_name("UBOB") == "Bob"
    fake_slack.fail("users.info", "user_not_found")
    assert await adapter.user_name("UNOBODY") == "UNOBODY"  # unknown: the id, not a crash


async def test_private_channel_and_admin_role_reach_the_handler(slack, adapter, fake_slack, deploys) -> None:
    fake_slack.add_channel("GADM", "ops", members=["UOWNER", "UBOT"], is_private=True)
    assert await slack.event(mention("GADM", "1200.1", "/deploy 9", user="UOWNER"), "EvPRIV") == 200
    await fake_slack.wait_for(lambda: any(d.body == "9" for d in deploys), 10)
    msg = next(d for d in deploys if d.body == "9")
    assert (msg.is_private_channel, msg.is_admin, msg.is_dm, msg.event_id) == (True, True, False, f"{TEAM}:EvPRIV")


async def test_http_mode_without_signing_secret_says_what_to_set(adapter, ctx) -> None:
    unsigned = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update={"slack_signing_secret": None}))
    with pytest.raises(RuntimeError, match="SLACK_SIGNING_SECRET"):
        await SlackAdapter(adapter.router, unsigned, http_port=0).run()


async def test_rejected_tokens_give_one_clear_error(adapter, ctx, fake_slack) -> None:
    with_app_token = dataclasses.replace(ctx, settings=ctx.settings.model_copy(
        update={"slack_app_token": SecretStr("xoxb-not-an-app-token")}))
    with pytest.raises(RuntimeError, match="Slack rejected SLACK_APP_TOKEN: not_allowed_token_type") as err:
        await SlackAdapter(adapter.router, with_app_token).run()
    assert "xoxb-not" not in str(err.value)
    fake_slack.fail("auth.test", "invalid_auth")
    with pytest.raises(RuntimeError, match="Slack rejected SLACK_BOT_TOKEN: invalid_auth"):
        await SlackAdapter(adapter.router, with_app_token).run()


async def test_files_shared_with_a_message_reach_the_handler(slack, adapter, fake_slack) -> None:
    fake_slack.add_channel("DFILE", "", members=["UANN", "UBOT"], is_im=True)
    shared = fake_slack.share_file("F77", "data.jsonl", b'{"q": 1}\n', "application/json")
    outside = {**fake_slack.share_file("F78", "x.txt", b"x"), "url_private_download": "https://evil.test/F78"}
    event = dm("DFILE", "1300.1", "/attached", subtype="file_share", files=[shared, outside])
    assert await slack.event(event, "EvFILE") == 200
    await fake_slack.wait_for(lambda: posted(fake_slack, "DFILE"), 20)
    assert posted(fake_slack, "DFILE")[0]["text"] == "data.jsonl application/json b'{\"q\": 1}\\n'"
    downloads = fake_slack.calls_to("download")
    assert [d["file_id"] for d in downloads] == ["F77"] and downloads[0]["_token"] == "xoxb-test"
