"""MCP both ways: the agent using a real MCP server subprocess (tests/fakes/mcp_server.py) over stdio, and
`ladder mcp` itself exercised with the `mcp` client over stdio and streamable HTTP (bearer token)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.models import PendingAction
from handlers.mcp_client import parse_config
from tests.conftest import MODELS_DIR, make_settings
from tests.fakes.ollama_server import FakeOllama

ROOT = Path(__file__).resolve().parent.parent
MODEL = "llama3.1:8b"


@pytest.fixture(scope="module")
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as server:
        server.add_model(MODEL, context_length=8192)
        yield server


@pytest.fixture(scope="module")
def calls_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mcp") / "calls.jsonl"


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url, fake, calls_log):
    config = tmp_path_factory.mktemp("cfg") / "mcp.yaml"
    config.write_text(f"""servers:
  tracker:
    command: python
    args: [-m, tests.fakes.mcp_server]
    cwd: {ROOT}
    env: {{FAKE_MCP_LOG: "{calls_log}"}}
    read_only: [echo, lookup, crash]
  ops:
    command: python
    args: [-m, tests.fakes.mcp_server]
    cwd: {ROOT}
    admin: true
  broken:
    command: /nonexistent/mcp-server
""")
    return make_settings(tmp_path_factory.mktemp("data"), database_url, llm_backend="ollama", ollama_host=fake.url,
                         llm_model=MODEL, mcp_config=config, mcp_call_timeout_s=20)


@pytest.fixture(autouse=True)
def fresh(fake: FakeOllama, calls_log: Path) -> None:
    fake.script.clear()
    fake.requests.clear()
    calls_log.unlink(missing_ok=True)


def logged(calls_log: Path) -> list[dict]:
    return [json.loads(line) for line in calls_log.read_text().splitlines()] if calls_log.exists() else []


def chats(fake: FakeOllama) -> list[dict]:
    return [body for path, body in fake.requests if path == "/api/chat"]


def test_config_parsing_is_strict() -> None:
    servers = parse_config({"servers": {"a": {"url": "http://x/mcp", "read_only": ["r"], "admin": True}}})
    assert servers["a"].admin and servers["a"].read_only == {"r"}
    for bad in ({}, {"servers": {"a": {}}}, {"servers": {"a": {"url": "u", "command": "c"}}},
                {"servers": {"a b": {"url": "u"}}}):
        with pytest.raises(ValueError):
            parse_config(bad)


async def test_agent_calls_a_read_only_mcp_tool(bot, fake, calls_log) -> None:
    fake.reply_tool_call("tracker.lookup", {"key": "VPN-1"})
    fake.reply("VPN-1 is open and owned by ann.")
    reply = await bot.push("/agent who owns VPN-1?", user="m-read", is_admin=False)
    assert reply.text.startswith("VPN-1 is open") and "used: tracker.lookup" in reply.text
    names = [t["function"]["name"] for t in chats(fake)[0]["tools"]]
    assert {"tracker.lookup", "tracker.create_ticket", "search_knowledge"} <= set(names)
    assert not [n for n in names if n.startswith("ops.")]  # an admin-only server is hidden from non-admins
    assert logged(calls_log) == [{"tool": "lookup", "arguments": {"key": "VPN-1"}}]
    assert '"owner": "ann"' in chats(fake)[1]["messages"][-1]["content"]


async def test_mcp_side_effect_waits_for_confirmation(bot, fake, ctx, calls_log) -> None:
    fake.reply_tool_call("tracker.create_ticket", {"title": "Renew cert", "priority": 2})
    fake.reply("I proposed a ticket.")
    reply = await bot.push("/agent open a ticket to renew the cert", user="m-side", is_admin=False)
    async with ctx.db() as session:
        (row,) = (await session.execute(select(PendingAction).where(PendingAction.user_id == "m-side"))).scalars()
    assert row.payload == {**row.payload, "tool": "tracker.create_ticket",
                           "arguments": {"title": "Renew cert", "priority": 2}}
    assert f"/confirm {row.id}" in reply.text and logged(calls_log) == []
    done = await bot.push(f"/confirm {row.id}", user="m-side", is_admin=False)
    assert "created ticket 'Renew cert' (priority 2)" in done.text
    assert logged(calls_log) == [{"tool": "create_ticket", "arguments": {"title": "Renew cert", "priority": 2}}]


async def test_a_crashing_mcp_server_is_a_clear_error_and_the_bot_stays_up(bot, fake) -> None:
    fake.reply_tool_call("tracker.crash", {})
    fake.reply("The tracker is down.")
    reply = await bot.push("/agent crash the tracker", user="m-crash")
    assert reply.text.startswith("The tracker is down.") and not reply.error
    told = chats(fake)[1]["messages"][-1]["content"]
    assert "MCP server tracker failed during crash" in told
    fake.reply_tool_call("tracker.echo", {"text": "still here"})
    fake.reply("Back.")
    again = await bot.push("/agent echo still here", user="m-crash")
    assert again.text.startswith("Back.") and "echo: still here" in chats(fake)[-1]["messages"][-1]["content"]


# -- `ladder mcp` ---------------------------------------------------------------------------------
def server_env(settings, fake: FakeOllama, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "USER", "LANG")}
    env.update(DATABASE_URL=settings.database_url.get_secret_value(), LADDER_DATA_DIR=str(settings.data_dir),
               LADDER_MODELS_DIR=str(MODELS_DIR), LLM_BACKEND="ollama", OLLAMA_HOST=fake.url, LLM_MODEL=MODEL,
               AGENT_IN_ASK="false", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), **extra)
    return env


@pytest.fixture(scope="module")
async def documents(ctx) -> None:
    """Two private notes: alice's and bob's. Only the owner's `ladder mcp` session may find each."""
    from knowledge.chunking import chunk_document
    from knowledge.embedding import Embedder
    from knowledge.models import Source
    from knowledge.store import upsert_document
    from knowledge.types import SourceDocument

    embedder = Embedder.default()
    async with ctx.db() as session, session.begin():
        source = Source(name="notes", kind="folder", config={})
        session.add(source)
        await session.flush()
        for owner, city in (("alice", "Lisbon"), ("bob", "Oslo")):
            doc = SourceDocument(f"{owner}.md", f"{owner}'s holiday plan", f"{owner} travels to {city} in May.",
                                 None, (f"user:console:{owner}",), {}, None)
            chunks = chunk_document(doc, max_tokens=200, overlap=20, count_tokens=embedder.count_tokens)
            await upsert_document(session, source.id, doc, chunks, embedder.aencode)


async def test_ladder_mcp_over_stdio_maps_the_caller_to_a_principal(settings, fake, ctx, documents) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from training.models import Job

    async with ctx.db() as session, session.begin():
        session.add(Job(recipe="lora", params={}, idempotency_key="mcp-a", requested_by="alice", platform="console",
                        workspace="local", channel="console"))
        session.add(Job(recipe="dpo", params={}, idempotency_key="mcp-b", requested_by="bob", platform="console",
                        workspace="local", channel="console"))
    fake.reply("Alice travels to Lisbon.")
    params = StdioServerParameters(command=sys.executable, args=["-m", "bot.cli", "mcp", "--as", "console:alice"],
                                   env=server_env(settings, fake), cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {t.name for t in (await session.list_tools()).tools}
        assert names == {"search_knowledge", "ask", "list_jobs"}
        jobs = (await session.call_tool("list_jobs", {})).content[0].text
        assert "requested by alice" in jobs and "bob" not in jobs
        found = (await session.call_tool("search_knowledge", {"query": "holiday plan travels in May"})).content[0].text
        assert "alice's holiday plan" in found and "bob" not in found and "Oslo" not in found
        answer = (await session.call_tool("ask", {"question": "Where does the holiday plan travel in May?"}))
        assert answer.content[0].text.startswith("Alice travels to Lisbon.")
    prompt = json.dumps(chats(fake)[-1]["messages"])
    assert "Where does the holiday plan travel in May?" in prompt and "Oslo" not in prompt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_ladder_mcp_over_http_needs_the_bearer_token(settings, fake, ctx) -> None:
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    port = free_port()
    env = server_env(settings, fake, MCP_TOKENS="tok-bob=console:bob")
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "mcp", "--http", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
            try:
                if httpx.post(url, timeout=1).status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ladder mcp --http did not start"
            time.sleep(0.2)

        async def call(token: str) -> str:
            async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as client, \
                    streamable_http_client(url, http_client=client) as (read, write), \
                    ClientSession(read, write) as session:
                await session.initialize()
                return (await session.call_tool("list_jobs", {})).content[0].text

        jobs = await call("tok-bob")
        assert "requested by bob" in jobs and "alice" not in jobs
        with pytest.raises(Exception):  # noqa: B017 - the client raises a transport-specific group
            await call("tok-wrong")
        assert httpx.post(url, json={}, headers={"Authorization": "Bearer tok-wrong"}).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
