"""OllamaBackend through the real `ollama` client against the fake Ollama server on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.errors import ModelUnavailable
from bot.llm.base import ChatMessage, ToolCall, ToolSpec
from bot.llm.ollama import OllamaBackend, normalise_host
from tests.fakes.ollama_server import FakeOllama, Scripted

MODEL = "llama3.1:8b"
ADD = ToolSpec(
    "add",
    "Add two integers.",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a"]},
)


def free_port() -> int:
    """A loopback port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    server = FakeOllama()
    server.add_model(MODEL, context_length=131072)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def backend(fake: FakeOllama) -> AsyncIterator[OllamaBackend]:
    b = OllamaBackend(fake.url, timeout=10, default_model=None)
    yield b
    await b.aclose()


def chats(fake: FakeOllama) -> list[dict]:
    return [body for path, body in fake.requests if path == "/api/chat"]


async def test_chat_returns_text_usage_and_learns_context(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.reply("Paris is the capital of France.", prompt_tokens=21)
    model = backend.model(MODEL)
    assert model.context_length == 4096  # nothing known yet
    result = await model.chat(
        [ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?")], max_tokens=50
    )
    assert result.text == "Paris is the capital of France."
    assert (result.model, result.backend) == (MODEL, "ollama")
    assert result.usage.prompt_tokens == 21 and result.usage.completion_tokens == 6
    assert result.latency_ms >= 0 and result.tool_calls == ()
    assert model.context_length == 131072  # learned from /api/show on first use
    body = chats(fake)[-1]
    assert body["stream"] is False
    assert body["options"]["num_predict"] == 50
    assert [m["role"] for m in body["messages"]] == ["system", "user"]


async def test_max_tokens_limits_the_answer(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.reply("one two three four five")
    result = await backend.model(MODEL).chat([ChatMessage("user", "count")], max_tokens=2)
    assert result.text == "one two "


async def test_tool_call_round_trip(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.reply_tool_call("add", {"a": 1, "b": 2})
    fake.reply("The sum is 3.")
    model = backend.model(MODEL)
    history = [ChatMessage("user", "What is 1 + 2?")]
    first = await model.chat(history, tools=[ADD])
    assert first.tool_calls and first.tool_calls[0].name == "add"
    assert first.tool_calls[0].arguments == {"a": 1, "b": 2}
    tool_req = chats(fake)[-1]
    assert tool_req["tools"][0]["type"] == "function"
    assert tool_req["tools"][0]["function"]["name"] == "add"
    assert tool_req["tools"][0]["function"]["parameters"]["required"] == ["a"]

    call = first.tool_calls[0]
    history += [
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "3", tool_name="add", tool_call_id=call.id),
    ]
    second = await model.chat(history, tools=[ADD])
    assert second.text == "The sum is 3."
    sent = chats(fake)[-1]["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"] == [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]
    assert sent[2] == {"role": "tool", "content": "3", "tool_name": "add"}


async def test_malformed_tool_arguments_are_sent_back_readably(fake: FakeOllama, backend: OllamaBackend) -> None:
    bad = ToolCall("add", "{not json", id="call_0")
    await backend.model(MODEL).chat([ChatMessage("assistant", "", tool_calls=(bad,))])
    assert chats(fake)[-1]["messages"][0]["tool_calls"][0]["function"]["arguments"] == {"raw": "{not json"}


async def test_several_tool_calls_in_one_answer(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.script.append(Scripted(tool_calls=[("add", {"a": 1}), ("add", {"a": 2})]))
    result = await backend.model(MODEL).chat([ChatMessage("user", "two sums")], tools=[ADD])
    assert [c.arguments for c in result.tool_calls] == [{"a": 1}, {"a": 2}]
    assert len({c.id for c in result.tool_calls}) == 2


async def test_stream_yields_deltas_then_full_result(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.reply("Streaming works one word at a time.", prompt_tokens=9)
    chunks = [c async for c in backend.model(MODEL).stream([ChatMessage("user", "stream please")])]
    deltas = [c.delta for c in chunks if not c.done]
    assert len(deltas) >= 3
    assert "".join(deltas) == "Streaming works one word at a time."
    last = chunks[-1]
    assert last.done and last.result is not None and sum(c.done for c in chunks) == 1
    assert last.result.text == "Streaming works one word at a time."
    assert last.result.usage.prompt_tokens == 9 and last.result.usage.completion_tokens == 7
    assert chats(fake)[-1]["stream"] is True


async def test_stream_collects_tool_calls(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.reply_tool_call("add", {"a": 5})
    chunks = [c async for c in backend.model(MODEL).stream([ChatMessage("user", "add")], tools=[ADD])]
    assert chunks[-1].result is not None
    assert chunks[-1].result.tool_calls[0].arguments == {"a": 5}


async def test_json_schema_is_sent_as_format(fake: FakeOllama, backend: OllamaBackend) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fake.reply('{"city": "Paris"}')
    result = await backend.model(MODEL).chat([ChatMessage("user", "City?")], json_schema=schema, temperature=0)
    assert result.text == '{"city": "Paris"}'
    body = chats(fake)[-1]
    assert body["format"] == schema
    assert body["options"]["temperature"] == 0


async def test_list_and_default_model(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.add_model("qwen2.5:0.5b", family="qwen2", parameter_size="494.03M", quantization_level="Q8_0")
    assert backend.default_model == ""  # nothing configured, nothing listed yet
    models = await backend.list_models()
    assert [m.name for m in models] == [MODEL, "qwen2.5:0.5b"]
    qwen = models[1]
    assert (qwen.family, qwen.parameter_size, qwen.quantization) == ("qwen2", "494.03M", "Q8_0")
    assert qwen.backend == "ollama" and qwen.size_bytes
    assert backend.default_model == MODEL
    assert OllamaBackend(fake.url, 5, default_model="qwen2.5:0.5b").default_model == "qwen2.5:0.5b"
    assert await OllamaBackend(fake.url, 5, None).resolve_default_model() == MODEL


async def test_show_reads_model_info(fake: FakeOllama, backend: OllamaBackend) -> None:
    info = await backend.show(MODEL)
    assert info is not None
    assert info.context_length == 131072
    assert info.quantization == "Q4_K_M" and info.family == "llama" and info.parameter_size == "8.0B"
    assert info.license == "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT"
    assert info.details["block_count"] == 32
    assert info.details["attention.head_count"] == 32
    assert info.details["attention.head_count_kv"] == 8
    assert info.details["embedding_length"] == 4096
    assert fake.requests[-1] == ("/api/show", {"model": MODEL})
    assert await backend.show("missing:1b") is None


async def test_pull_streams_progress(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.add_pullable("smollm2:135m", parameter_size="135M", quantization_level="Q8_0")
    progress = [p async for p in backend.pull("smollm2:135m")]
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    downloading = [p for p in progress if p.total]
    assert [p.completed for p in downloading] == [0, 400, 1000]
    assert all(p.total == 1000 for p in downloading)
    assert "smollm2:135m" in [m.name for m in await backend.list_models()]


async def test_pull_unknown_model_is_one_clear_error(backend: OllamaBackend) -> None:
    seen = []
    with pytest.raises(ModelUnavailable, match="could not pull 'no-such-model'.*file does not exist"):
        async for p in backend.pull("no-such-model"):
            seen.append(p.status)
    assert seen == ["pulling manifest"]


async def test_embed(fake: FakeOllama, backend: OllamaBackend) -> None:
    vectors = await backend.embed(["alpha", "beta"], model=MODEL)
    assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0] != vectors[1]
    assert fake.requests[-1] == ("/api/embed", {"model": MODEL, "input": ["alpha", "beta"]})


async def test_unknown_model_suggests_pull(backend: OllamaBackend) -> None:
    with pytest.raises(ModelUnavailable, match=r"'mistral:7b'.*`/models pull mistral:7b`"):
        await backend.model("mistral:7b").chat([ChatMessage("user", "hi")])
    with pytest.raises(ModelUnavailable, match="mistral:7b"):
        async for _ in backend.model("mistral:7b").stream([ChatMessage("user", "hi")]):
            pass


async def test_server_error_is_one_line(fake: FakeOllama, backend: OllamaBackend) -> None:
    fake.fail(500, "llama runner process has terminated: exit status 2\nstack trace...")
    with pytest.raises(ModelUnavailable) as err:
        await backend.model(MODEL).chat([ChatMessage("user", "hi")])
    assert "\n" not in str(err.value) and "llama runner process has terminated" in str(err.value)


async def test_unreachable_host_names_the_host() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    backend = OllamaBackend(url, timeout=5, default_model=MODEL)
    assert await backend.ping() is False
    for attempt in (backend.list_models(), backend.model(MODEL).chat([ChatMessage("user", "hi")])):
        with pytest.raises(ModelUnavailable) as err:
            await attempt
        assert url in str(err.value) and "connection refused" in str(err.value)
        assert "ollama serve" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelUnavailable, match="Cannot reach Ollama"):
        async for _ in backend.model(MODEL).stream([ChatMessage("user", "hi")]):
            pass
    with pytest.raises(ModelUnavailable, match="Cannot reach Ollama"):
        async for _ in backend.pull(MODEL):
            pass
    await backend.aclose()


async def test_slow_server_times_out_with_a_clear_error(fake: FakeOllama) -> None:
    fake.delay = 10
    backend = OllamaBackend(fake.url, timeout=0.3, default_model=MODEL)
    assert await backend.ping() is False
    with pytest.raises(ModelUnavailable, match=r"did not answer within 0.3s"):
        await backend.model(MODEL).chat([ChatMessage("user", "hi")])
    await backend.aclose()


async def test_ping_and_describe(fake: FakeOllama, backend: OllamaBackend) -> None:
    assert await backend.ping() is True
    assert fake.requests[-1][0] == "/api/version"
    assert backend.describe() == f"ollama at {fake.url}"


def test_host_normalisation() -> None:
    assert normalise_host("localhost") == "http://localhost:11434"
    assert normalise_host("10.0.0.2:8080/") == "http://10.0.0.2:8080"
    assert normalise_host("https://ollama.example.com") == "https://ollama.example.com"
    assert normalise_host(None) == "http://127.0.0.1:11434"


async def test_fake_runs_standalone_for_a_subprocess(tmp_path: Path) -> None:
    """`python -m tests.fakes.ollama_server` serves a canned reply that the backend can read."""
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.ollama_server", "--port", str(port), "--reply", "canned"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and "fake Ollama at" in proc.stdout.readline()
        backend = OllamaBackend(f"127.0.0.1:{port}", timeout=5, default_model=None)
        assert await backend.ping()
        name = await backend.resolve_default_model()
        assert (await backend.model(name).chat([ChatMessage("user", "hi")])).text == "canned"
        await backend.aclose()
    finally:
        proc.terminate()
        proc.wait(10)
