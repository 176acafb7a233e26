"""Permissions: the reply's audience decides what may be used — answers, citations, /search and counts.

User A is a member of private channel #hr (CHR), user B is not. The model is the fake Ollama server,
so each test can read exactly what was sent to the model.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from knowledge.acl import DEGRADED_NOTE, membership_failed, set_members
from knowledge.answer import NOT_FOUND
from knowledge.sync import embedder_for
from knowledge.termstats import add_chunk_stats, refresh_term_stats
from tests.conftest import TestBot, make_settings
from tests.fakes.ollama_server import FakeOllama
from tests.kb_rows import add_document, add_source

MODEL = "llama3.1:8b"
SECRET = "HRSECRET-7731"
HR_TEXT = f"Salary bands 2025: engineers at level 3 earn between 90k and 110k per year. Reference {SECRET}."
HR_TITLE = "HR salary bands"
PUBLIC_TEXT = "Holiday policy: the office is closed from 24 December to 1 January. Everyone gets the days off."
QUESTION = "What are the salary bands for engineers?"
HR = "channel:slack:CHR"


@pytest.fixture(scope="module")
async def fake():
    async with FakeOllama() as server:
        server.add_model(MODEL, context_length=8192)
        yield server


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url, fake):
    return make_settings(tmp_path_factory.mktemp("data"), database_url, llm_backend="ollama", ollama_host=fake.url,
                         llm_model=MODEL, agent_in_ask=False, rag_min_similarity=0.3)


async def put(ctx, source: str, ext: str, title: str, body: str, acl: list[str]) -> None:
    emb = embedder_for(ctx)
    async with ctx.db() as session, session.begin():
        sid = await add_source(session, source, kind="slack_channel")
        doc = await add_document(session, sid, ext, title, [body], emb.encode([f"{title}\n{body}"]), acl,
                                 url=f"https://chat.example/{ext}")
        ids = (await session.execute(text("SELECT id FROM chunks WHERE document_id = :d"), {"d": doc})).scalars()
        await add_chunk_stats(session, list(ids))


@pytest.fixture(scope="module", autouse=True)
async def kb(ctx):
    await put(ctx, "hr", "hr-1", HR_TITLE, HR_TEXT, [HR])
    await put(ctx, "handbook", "holiday", "Holiday policy", PUBLIC_TEXT, ["public"])
    async with ctx.db() as session, session.begin():
        await refresh_term_stats(session)
        await set_members(session, "slack", "CHR", ["UA", "UC"])
        await set_members(session, "slack", "CGEN", ["UA", "UB", "UC"])


@pytest.fixture(autouse=True)
def clean(fake):
    fake.script.clear()
    fake.requests.clear()


def sent(fake: FakeOllama) -> str:
    return "\n".join(str(m.get("content", "")) for path, body in fake.requests if path == "/api/chat"
                     for m in body["messages"])


def dm(user: str) -> dict:
    return dict(platform="slack", workspace="T1", channel=f"D-{user}", user=user, is_dm=True, is_admin=False)


def in_general(user: str) -> dict:
    return dict(platform="slack", workspace="T1", channel="CGEN", user=user, is_dm=False, is_admin=False)


async def test_member_gets_hr_answer_and_search_hits_in_a_dm(bot: TestBot, fake: FakeOllama):
    fake.reply("Engineers at level 3 earn between 90k and 110k per year [1].")
    reply = await bot.push(QUESTION, **dm("UA"))
    assert "90k and 110k" in reply.text and SECRET in sent(fake)
    assert [c.title for c in reply.citations] == [HR_TITLE]
    assert reply.citations[0].url == "https://chat.example/hr-1"
    hits = await bot.push("/search salary bands engineers", **dm("UA"))
    assert HR_TITLE in hits.text and SECRET in hits.text


async def test_member_in_a_public_channel_gets_nothing_from_hr(bot: TestBot, fake: FakeOllama):
    fake.reply(f"Leaked {SECRET}")  # would show up if the model were asked with #hr context
    reply = await bot.push(QUESTION, **in_general("UA"))
    assert reply.text.startswith(NOT_FOUND) and not reply.citations
    assert SECRET not in sent(fake) and SECRET not in reply.text
    hits = await bot.push("/search salary bands engineers", **in_general("UA"))
    assert HR_TITLE not in hits.text and SECRET not in hits.text
    assert all(c.title != HR_TITLE for c in hits.citations)


@pytest.mark.parametrize("where", ["dm", "channel"])
async def test_non_member_gets_nothing_from_hr_anywhere(bot: TestBot, fake: FakeOllama, where: str):
    fields = dm("UB") if where == "dm" else in_general("UB")
    reply = await bot.push(QUESTION, **fields)
    assert reply.text.startswith(NOT_FOUND) and SECRET not in sent(fake) and not reply.citations
    hits = await bot.push("/search salary bands engineers", **fields)
    assert HR_TITLE not in hits.text and SECRET not in hits.text
    assert all(c.title != HR_TITLE for c in hits.citations)


async def test_hidden_documents_change_nothing_not_even_scores_or_counts(ctx, bot: TestBot):
    before = await bot.push("/search salary bands engineers k=10", **dm("UB"))
    await put(ctx, "finance", "fin-1", "Finance salary bands", "Salary bands for engineers in finance: 95k.",
              ["channel:slack:CFIN"])
    after = await bot.push("/search salary bands engineers k=10", **dm("UB"))
    assert after.text == before.text and after.data == before.data
    assert "Finance" not in after.text


async def test_leaving_the_channel_removes_access_at_the_next_sync(ctx, bot: TestBot, fake: FakeOllama):
    async with ctx.db() as session, session.begin():
        await set_members(session, "slack", "CHR", ["UC"])  # A left #hr; the source re-synced membership
    try:
        reply = await bot.push(QUESTION, **dm("UA"))
        assert reply.text.startswith(NOT_FOUND) and SECRET not in sent(fake)
        hits = await bot.push("/search salary bands engineers", **dm("UA"))
        assert HR_TITLE not in hits.text
        fake.reply("Level 3: 90k to 110k [1].")
        still = await bot.push(QUESTION, **dm("UC"))  # C is still a member
        assert [c.title for c in still.citations] == [HR_TITLE]
    finally:
        async with ctx.db() as session, session.begin():
            await set_members(session, "slack", "CHR", ["UA", "UC"])


async def test_membership_fetch_failure_means_public_only_and_the_user_is_told(ctx, bot: TestBot, fake: FakeOllama):
    async with ctx.db() as session, session.begin():
        await membership_failed(session, "slack", "CHR", "conversations.members: HTTP 500")
    try:
        reply = await bot.push(QUESTION, **dm("UA"))
        assert DEGRADED_NOTE in reply.text and NOT_FOUND in reply.text
        assert SECRET not in sent(fake) and not reply.citations
        hits = await bot.push("/search salary bands engineers", **dm("UA"))
        assert DEGRADED_NOTE in hits.text and HR_TITLE not in hits.text
        fake.reply("The office is closed from 24 December to 1 January [1].")
        public = await bot.push("When is the office closed for the holidays?", **dm("UA"))
        assert DEGRADED_NOTE in public.text and [c.title for c in public.citations] == ["Holiday policy"]
    finally:
        async with ctx.db() as session, session.begin():
            await set_members(session, "slack", "CHR", ["UA", "UC"])
    fake.reply("Level 3: 90k to 110k [1].")
    again = await bot.push(QUESTION, **dm("UA"))
    assert DEGRADED_NOTE not in again.text and [c.title for c in again.citations] == [HR_TITLE]


async def test_rag_off_in_a_channel_answers_without_the_knowledge_base(bot: TestBot, fake: FakeOllama):
    assert "now off" in (await bot.push("/rag off", **in_general("UA"))).text
    try:
        fake.reply("A plain answer.")
        reply = await bot.push("When is the office closed for the holidays?", **in_general("UA"))
        assert reply.text.startswith("A plain answer.") and not reply.citations
        assert "Holiday policy" not in sent(fake)
    finally:
        await bot.push("/rag on", **in_general("UA"))
