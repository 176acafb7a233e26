"""OpenAICompatBackend through real httpx against the fake OpenAI-compatible server on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest

from bot.errors import ModelUnavailable
from bot.llm.base import ChatMessage, ToolCall, ToolSpec
from bot.llm.openai_compat import OpenAICompatBackend, public_url
from tests.fakes.openai_server import FakeOpenAI

MODEL = "qwen2.5-7b-instruct"
KEY = "sk-test-0123456789abcdef"
ADD = ToolSpec("add", "Add integers.", {"type": "object", "properties": {"a": {"type": "integer"}}})


def free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    server.add_model(MODEL, context_length=32768)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def backend(fake: FakeOpenAI) -> AsyncIterator[OpenAICompatBackend]:
    b = OpenAICompatBackend(fake.url + "/v1", api_key=KEY, timeout=10, default_model=None)
    yield b
    await b.aclose()


def completions(fake: FakeOpenAI) -> list[dict]:
    return [body for path, body in fake.requests if path == "/v1/chat/completions"]


async def test_list_models_and_default(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    fake.add_model("llama-3.2-1b", context_length=8192)
    assert backend.default_model == ""
    models = await backend.list_models()
    assert [m.name for m in models] == [MODEL, "llama-3.2-1b"]
    assert models[0].context_length == 32768 and models[0].backend == "openai"
    assert backend.default_model == MODEL
    assert fake.authorizations[-1] == f"Bearer {KEY}"
    assert await backend.ping() is True


async def test_chat_sends_bearer_and_reads_usage(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    fake.reply("Four.", prompt_tokens=12)
    model = backend.model(MODEL)
    result = await model.chat([ChatMessage("user", "2+2?")], max_tokens=20, temperature=0.2)
    assert result.text == "Four."
    assert (result.model, result.backend) == (MODEL, "openai")
    assert result.usage.prompt_tokens == 12 and result.usage.completion_tokens == 1
    assert model.context_length == 32768  # learned from /v1/models on first use
    body = completions(fake)[-1]
    assert body["max_tokens"] == 20 and body["temperature"] == 0.2 and body["stream"] is False
    assert set(fake.authorizations) == {f"Bearer {KEY}"}


async def test_tool_call_round_trip(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    fake.reply_tool_call("add", {"a": 1})
    fake.reply("It is 1.")
    model = backend.model(MODEL)
    history = [ChatMessage("user", "add 1")]
    first = await model.chat(history, tools=[ADD])
    call = first.tool_calls[0]
    assert (call.name, call.arguments, call.id) == ("add", {"a": 1}, "call_0")
    assert completions(fake)[-1]["tools"] == [ADD.as_openai()]
    history += [
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "1", tool_name="add", tool_call_id=call.id),
    ]
    assert (await model.chat(history, tools=[ADD])).text == "It is 1."
    sent = completions(fake)[-1]["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}],
    }
    assert sent[2] == {"role": "tool", "content": "1", "tool_call_id": "call_0"}


async def test_malformed_tool_arguments_stay_text(backend: OpenAICompatBackend, fake: FakeOpenAI) -> None:
    bad = ToolCall("add", "{oops", id="c1")
    await backend.model(MODEL).chat([ChatMessage("assistant", "", tool_calls=(bad,))])
    assert completions(fake)[-1]["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{oops"


async def test_stream_sse_deltas_usage_and_tool_calls(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    fake.reply("Tokens arrive one by one.", prompt_tokens=7)
    chunks = [c async for c in backend.model(MODEL).stream([ChatMessage("user", "go")])]
    deltas = [c.delta for c in chunks if not c.done]
    assert len(deltas) >= 3 and "".join(deltas) == "Tokens arrive one by one."
    final = chunks[-1]
    assert final.done and final.result is not None
    assert final.result.text == "Tokens arrive one by one."
    assert final.result.usage.prompt_tokens == 7 and final.result.usage.completion_tokens == 5
    body = completions(fake)[-1]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    fake.reply_tool_call("add", {"a": 40, "b": 2})
    chunks = [c async for c in backend.model(MODEL).stream([ChatMessage("user", "add")], tools=[ADD])]
    assert chunks[-1].result is not None
    assert chunks[-1].result.tool_calls == (ToolCall("add", {"a": 40, "b": 2}, "call_0"),)


async def test_json_schema_as_response_format(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    fake.reply('{"ok": true}')
    result = await backend.model(MODEL).chat([ChatMessage("user", "ok?")], json_schema=schema)
    assert result.text == '{"ok": true}'
    fmt = completions(fake)[-1]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema


async def test_unknown_model(backend: OpenAICompatBackend) -> None:
    with pytest.raises(ModelUnavailable, match="'gpt-5' is not served at"):
        await backend.model("gpt-5").chat([ChatMessage("user", "hi")])
    with pytest.raises(ModelUnavailable, match="gpt-5"):
        async for _ in backend.model("gpt-5").stream([ChatMessage("user", "hi")]):
            pass


async def test_wrong_key_is_never_shown_or_logged(fake: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-secret-999"
    backend = OpenAICompatBackend(fake.url + "/v1", api_key=wrong, timeout=5, default_model=MODEL)
    assert await backend.ping() is False
    with pytest.raises(ModelUnavailable) as err:
        await backend.list_models()
    assert "refused the API key (401)" in str(err.value)
    for attempt in ("chat", "stream"):
        with pytest.raises(ModelUnavailable) as err:
            if attempt == "chat":
                await backend.model(MODEL).chat([ChatMessage("user", "hi")])
            else:
                async for _ in backend.model(MODEL).stream([ChatMessage("user", "hi")]):
                    pass
        assert wrong not in str(err.value) and fake.url in str(err.value)
    assert fake.authorizations[-1] == f"Bearer {wrong}"  # it was sent, in the header only
    assert all(wrong not in str(body) for _, body in fake.requests)
    assert wrong not in caplog.text and wrong not in backend.describe()
    await backend.aclose()


async def test_server_error_text_is_scrubbed(fake: FakeOpenAI, backend: OpenAICompatBackend) -> None:
    fake.fail(500, f"upstream rejected key {KEY}\ntraceback")
    with pytest.raises(ModelUnavailable) as err:
        await backend.model(MODEL).chat([ChatMessage("user", "hi")])
    text = str(err.value)
    assert KEY not in text and "***" in text and "500" in text and "\n" not in text


async def test_unreachable_server_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAICompatBackend(url, api_key=KEY, timeout=5, default_model=MODEL)
    assert await backend.ping() is False
    with pytest.raises(ModelUnavailable) as err:
        await backend.list_models()
    assert url in str(err.value) and "connection refused" in str(err.value) and KEY not in str(err.value)
    with pytest.raises(ModelUnavailable, match="Cannot reach"):
        await backend.model(MODEL).chat([ChatMessage("user", "hi")])
    with pytest.raises(ModelUnavailable, match="Cannot reach"):
        async for _ in backend.model(MODEL).stream([ChatMessage("user", "hi")]):
            pass
    await backend.aclose()


async def test_slow_server_times_out(fake: FakeOpenAI) -> None:
    fake.delay = 10
    backend = OpenAICompatBackend(fake.url + "/v1", api_key=KEY, timeout=0.3, default_model=MODEL)
    with pytest.raises(ModelUnavailable, match="did not answer within 0.3s"):
        await backend.model(MODEL).chat([ChatMessage("user", "hi")])
    await backend.aclose()


async def test_wrong_base_path_hints_at_v1(fake: FakeOpenAI) -> None:
    backend = OpenAICompatBackend(fake.url, api_key=KEY, timeout=5)
    with pytest.raises(ModelUnavailable, match="usually ends in /v1"):
        await backend.list_models()
    await backend.aclose()


def test_credentials_in_the_url_are_not_shown() -> None:
    assert public_url("http://user:pw@host:8000/v1") == "http://host:8000/v1"
    backend = OpenAICompatBackend("http://user:pw@host:8000/v1/", api_key=None, timeout=5)
    assert "pw" not in backend.describe() and backend.describe().endswith("host:8000/v1")
