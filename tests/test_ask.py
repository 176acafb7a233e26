"""Asking through the router with the real `ollama` client against the fake Ollama server:
memory, personas, templates, saved prompts, model management and faults."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TestBot, make_settings
from tests.fakes.ollama_server import FakeOllama

MODEL = "llama3.1:8b"


@pytest.fixture(scope="module")
async def fake():
    server = FakeOllama()
    server.add_model(MODEL, context_length=400)
    server.add_model("qwen2.5:0.5b", parameter_size="494M", quantization_level="Q4_K_M", context_length=32768)
    server.add_pullable("gemma2:2b", parameter_size="2.6B")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url, fake):
    return make_settings(tmp_path_factory.mktemp("data"), database_url, llm_backend="ollama",
                         ollama_host=fake.url, llm_model=MODEL, max_answer_tokens=100)


def chats(fake: FakeOllama) -> list[dict]:
    return [body for path, body in fake.requests if path == "/api/chat"]


def contents(body: dict) -> str:
    return "\n".join(str(m.get("content", "")) for m in body["messages"])


async def test_answer_names_model_and_backend_and_counts_tokens(bot: TestBot, fake: FakeOllama):
    fake.reply("Paris.", prompt_tokens=30)
    reply = await bot.push("What is the capital of France?", channel="c-basic")
    assert reply.text.startswith("Paris.") and "llama3.1:8b via ollama" in reply.text
    assert (reply.backend, reply.model, reply.usage.prompt_tokens) == ("ollama", MODEL, 30)


async def test_long_answer_streams_partial_replies(bot: TestBot, fake: FakeOllama):
    fake.reply(" ".join(f"word{i}" for i in range(60)))
    replies = await bot.stream("Tell me a long story", channel="c-stream")
    partials = [r for r in replies if r.partial]
    assert len(partials) >= 2 and not replies[-1].partial
    assert all(b.text.startswith(a.text) for a, b in zip(partials, partials[1:], strict=False))
    assert "word59" in replies[-1].text


async def test_thread_memory_is_kept_per_thread(bot: TestBot, fake: FakeOllama):
    await bot.push("My name is Ada.", channel="c-mem", thread="t1")
    await bot.push("What is my name?", channel="c-mem", thread="t1")
    assert "My name is Ada." in contents(chats(fake)[-1])
    await bot.push("What is my name?", channel="c-mem", thread="t2")
    assert "My name is Ada." not in contents(chats(fake)[-1])


async def test_history_is_trimmed_to_the_context_window(bot: TestBot, fake: FakeOllama):
    # context 400 tokens - 100 for the answer: only the most recent turns fit (4 chars ~ 1 token).
    for i in range(6):
        await bot.push(f"note {i}: " + "x" * 300, channel="c-trim", thread="t")
    sent = contents(chats(fake)[-1])
    assert "note 5:" in sent and "note 0:" not in sent
    assert len(sent) // 4 <= 400


async def test_persona_becomes_the_system_prompt(bot: TestBot, fake: FakeOllama):
    assert "Persona for this channel set" in (await bot.push("/persona set You are a pirate.", channel="c-p")).text
    await bot.push("hello", channel="c-p")
    system = chats(fake)[-1]["messages"][0]
    assert system["role"] == "system" and "You are a pirate." in system["content"]
    assert "pirate" in (await bot.push("/persona show", channel="c-p")).text
    await bot.push("/persona clear", channel="c-p")
    await bot.push("hello again", channel="c-p")
    assert "pirate" not in chats(fake)[-1]["messages"][0]["content"]


async def test_cot_template_asks_for_steps(bot: TestBot, fake: FakeOllama):
    await bot.push("/ask What is 38 multiplied by 47? template=cot", channel="c-cot")
    assert "step by step" in chats(fake)[-1]["messages"][0]["content"]


async def test_few_shot_examples_are_sent_as_prior_turns(bot: TestBot, fake: FakeOllama):
    reply = await bot.push("/ask classify: great product template=few-shot", channel="c-fs")
    assert reply.error and "/examples add" in reply.text
    await bot.push("/examples add I love it => positive", channel="c-fs")
    await bot.push("/examples add It broke after a day => negative", channel="c-fs")
    await bot.push("/ask Works as advertised template=few-shot", channel="c-fs")
    roles = [(m["role"], m["content"]) for m in chats(fake)[-1]["messages"]]
    assert ("user", "I love it") in roles and ("assistant", "negative") in roles
    assert "2. It broke after a day => negative" in (await bot.push("/examples list", channel="c-fs")).text
    assert (await bot.push("/examples add no arrow", channel="c-fs")).error


async def test_json_template_validates_and_retries_once(bot: TestBot, fake: FakeOllama):
    schema = '{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}'
    fake.reply('{"n": "three"}')
    fake.reply('{"n": 3}')
    before = len(chats(fake))
    reply = await bot.push(f"/ask how many? template=json schema='{schema}'", channel="c-json")
    assert not reply.error and json.loads(reply.text.split("```")[1]) == {"n": 3}
    retry = chats(fake)[before + 1]
    assert chats(fake)[before]["format"]["required"] == ["n"]
    assert "not valid" in retry["messages"][-1]["content"] and "'three' is not of type 'integer'" in \
        retry["messages"][-1]["content"]


async def test_json_template_fails_clearly_after_two_invalid_replies(bot: TestBot, fake: FakeOllama):
    fake.reply("sure! here it is")
    fake.reply("{broken")
    reply = await bot.push("/ask give me json template=json", channel="c-json2")
    assert reply.error and "did not produce valid JSON after 2 attempts" in reply.text


async def test_bad_schema_and_bad_template_are_explained(bot: TestBot):
    assert "not a valid JSON schema" in (await bot.push("/ask x template=json schema={nope", channel="c-j3")).text
    assert "Allowed: cot, json, few-shot" in (await bot.push("/ask x template=poem", channel="c-j3")).text


async def test_huge_message_is_truncated_with_a_notice(bot: TestBot, fake: FakeOllama, settings):
    fake.reply("ok")
    reply = await bot.push("y" * 200_000, channel="c-huge")
    assert "200,000 characters" in reply.text
    assert len(contents(chats(fake)[-1])) < settings.max_input_chars + 2_000


async def test_saved_prompts(bot: TestBot, fake: FakeOllama):
    await bot.push("/prompt save standup Turn these notes into a standup update: {input}", channel="c-sp")
    assert "standup" in (await bot.push("/prompt list", channel="c-sp")).text
    await bot.push("/prompt run standup fixed the login bug", channel="c-sp")
    assert chats(fake)[-1]["messages"][-1]["content"] == \
        "Turn these notes into a standup update: fixed the login bug"
    assert "No saved prompt 'nope'" in (await bot.push("/prompt run nope x", channel="c-sp")).text
    assert "Deleted" in (await bot.push("/prompt delete standup", channel="c-sp")).text


async def test_models_list_use_and_missing_model(bot: TestBot, fake: FakeOllama):
    listing = (await bot.push("/models list", channel="c-m")).text
    assert MODEL in listing and "qwen2.5:0.5b" in listing and "smollm2:135m-instruct" in listing
    missing = await bot.push("/models use mistral:7b", channel="c-m")
    assert missing.error and "not available" in missing.text and "qwen2.5:0.5b" in missing.text
    assert "qwen2.5:0.5b (ollama)" in (await bot.push("/models use qwen2.5:0.5b", channel="c-m")).text
    await bot.push("hi", channel="c-m")
    assert chats(fake)[-1]["model"] == "qwen2.5:0.5b"
    await bot.push("/models use default", channel="c-m")
    await bot.push("hi", channel="c-m")
    assert chats(fake)[-1]["model"] == MODEL


async def test_models_pull_streams_progress(bot: TestBot, fake: FakeOllama):
    replies = await bot.stream("/models pull gemma2:2b", channel="c-pull")
    assert any(r.partial and "%" in r.text for r in replies)
    assert replies[-1].text.startswith("Pulled gemma2:2b")
    assert (await bot.push("/models pull nosuch:1b", channel="c-pull")).error


async def test_models_info_uses_server_details(bot: TestBot):
    text = (await bot.push("/models info llama3.1:8b", channel="c-info")).text
    assert "8B" in text and "Q4_K_M" in text and "GB" in text and "context length 400" in text
    decoded = (await bot.push("/models info deepseek-r1:1.5b-qwen-distill-q4_K_M ctx=4096", channel="c-info")).text
    assert "1.5B" in decoded and "Q4_K_M" in decoded and "qwen" in decoded


async def test_duplicate_delivery_is_answered_once(bot: TestBot, fake: FakeOllama):
    before = len(chats(fake))
    first = await bot.stream("hello once", channel="c-dup", event_id="T1:Ev1")
    second = await bot.stream("hello once", channel="c-dup", event_id="T1:Ev1")
    assert first and not second and len(chats(fake)) == before + 1


async def test_unreachable_ollama_names_the_host(tmp_path, database_url):
    from bot.app import build_context, build_router, close

    ctx = await build_context(make_settings(tmp_path, database_url, llm_backend="ollama",
                                            ollama_host="http://127.0.0.1:9", llm_model=MODEL))
    try:
        reply = await TestBot(build_router(ctx)).push("anyone there?")
        assert reply.error and "http://127.0.0.1:9" in reply.text and "\n" not in reply.text
    finally:
        await close(ctx)


async def test_first_question_after_a_restart_uses_the_real_context_window(bot: TestBot, fake: FakeOllama, settings):
    """A fresh process must learn the model's window (400 here) before trimming, not assume 4096."""
    from bot.app import build_context, build_router, close

    for i in range(6):
        await bot.push(f"old {i}: " + "z" * 300, channel="c-restart", thread="t")
    fresh = await build_context(settings)
    try:
        await TestBot(build_router(fresh)).push("and now?", channel="c-restart", thread="t")
    finally:
        await close(fresh)
    sent = contents(chats(fake)[-1])
    assert "old 5:" in sent and "old 0:" not in sent
