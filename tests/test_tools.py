"""The tool registry and the built-in tools, one by one (the agent loop is in test_agent.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from aiohttp import web

import knowledge
from bot.messages import Incoming
from handlers.tools import ToolContext, ToolError, describe_call, registered
from handlers.tools.calculate import evaluate
from handlers.tools.remind import parse_when
from tests.conftest import make_settings
from tests.fakes.ollama_server import LoopbackServer


class FakeWeb(LoopbackServer):
    """A web server with a small page, a big page, a redirect to an outside host, and a binary file."""

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/page", lambda r: self._ok(r, web.Response(text="hello page", content_type="text/html")))
        app.router.add_get("/big", lambda r: self._ok(r, web.Response(text="x" * 5000, content_type="text/plain")))
        app.router.add_get("/away", lambda r: self._ok(r, web.HTTPFound("http://outside.test/secret")))
        app.router.add_get("/bin", lambda r: self._ok(r, web.Response(body=b"\0\1", content_type="image/png")))

    async def _ok(self, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        await self.record(request)
        if isinstance(resp, web.HTTPException):
            raise resp
        return resp


@pytest.fixture(scope="module")
async def fake_web() -> AsyncIterator[FakeWeb]:
    server = FakeWeb()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def settings(tmp_path_factory, database_url):
    return make_settings(tmp_path_factory.mktemp("data"), database_url, agent_http_allowlist="127.0.0.1",
                         agent_http_max_bytes=1000)


def incoming(**fields) -> Incoming:
    base = dict(platform="slack", workspace="T1", channel="C1", user="U1", text="", is_admin=False)
    base.update(fields)
    return Incoming(**base)


# -- registry -------------------------------------------------------------------------------------
def test_schema_comes_from_the_signature() -> None:
    tools = registered()
    spec = tools["search_knowledge"].spec()
    assert spec.parameters["required"] == ["query"]
    assert spec.parameters["properties"]["k"]["maximum"] == 10
    assert tools["start_training"].admin and tools["start_training"].side_effect
    assert tools["remind"].side_effect and not tools["remind"].admin
    assert not tools["calculate"].side_effect


def test_bad_arguments_are_a_tool_error_naming_the_field() -> None:
    calc = registered()["calculate"]
    with pytest.raises(ToolError, match="expression"):
        calc.validate({"expr": "1+1"})
    with pytest.raises(ToolError, match="k"):
        registered()["search_knowledge"].validate({"query": "x", "k": 99})


def test_describe_call_is_exact() -> None:
    assert describe_call("remind", {"text": "a"}, "Remind: {text}") == 'Remind: a — remind(text="a")'
    assert describe_call("x", {"n": 1}, "{missing}") == "x(n=1)"


# -- calculate ------------------------------------------------------------------------------------
def test_calculate_is_arithmetic_only() -> None:
    assert evaluate("38 * 47") == 1786
    assert evaluate("2^10") == 1024
    assert evaluate("sqrt(16) + -1") == 3.0
    for bad in ("__import__('os').system('id')", "open('/etc/passwd')", "(1).__class__", "a", "[1]*9"):
        with pytest.raises(ToolError):
            evaluate(bad)
    with pytest.raises(ToolError, match="exponent"):
        evaluate("9**9**9")
    with pytest.raises(ToolError, match="zero"):
        evaluate("1/0")


# -- remind's time parsing -------------------------------------------------------------------------
def test_parse_when() -> None:
    base = datetime(2025, 1, 1, 15, 30, tzinfo=UTC)
    assert parse_when("tomorrow at 9", base) == datetime(2025, 1, 2, 9, 0, tzinfo=UTC)
    assert parse_when("at 4pm", base) == datetime(2025, 1, 1, 16, 0, tzinfo=UTC)
    assert parse_when("9:15", base) == datetime(2025, 1, 2, 9, 15, tzinfo=UTC)  # passed today -> tomorrow
    assert parse_when("in 3 days", base) == base + timedelta(days=3)
    plus2 = timezone(timedelta(hours=2))
    assert parse_when("2025-03-01T08:00+02:00", base) == datetime(2025, 3, 1, 8, 0, tzinfo=plus2)
    for bad in ("someday", "at 25", "tomorrow at 9:75"):
        with pytest.raises(ToolError):
            parse_when(bad, base)


# -- tools that touch the bot ----------------------------------------------------------------------
async def test_search_knowledge_uses_the_askers_audience(ctx, monkeypatch) -> None:
    seen = {}

    async def audience_for(c, msg, *, private_reply):
        seen["private"] = private_reply
        return SimpleNamespace(principals=("public", f"channel:{msg.platform}:{msg.channel}"), degraded=False,
                               note="")

    async def search(session, query, audience, *, k=8, embedder=None, **kw):
        seen.update(query=query, audience=audience.principals, k=k)
        return [SimpleNamespace(title="VPN guide", url="https://wiki/vpn", heading="Setup", text="Use WireGuard.",
                                source="docs", score=1.0)]

    monkeypatch.setattr(knowledge, "audience_for", audience_for, raising=False)
    monkeypatch.setattr(knowledge, "search", search, raising=False)
    monkeypatch.setitem(ctx.services, "embedder", object())
    tc = ToolContext(incoming(), ctx)
    out = await registered()["search_knowledge"].call(tc, {"query": "vpn", "k": 3})
    assert "[1] VPN guide — Setup\nUse WireGuard." in out
    assert seen == {"private": False, "query": "vpn", "audience": ("public", "channel:slack:C1"), "k": 3}
    assert tc.citations[0].url == "https://wiki/vpn"


async def test_http_get_only_allowlisted_hosts_and_bounded(ctx, fake_web) -> None:
    tool = registered()["http_get"]
    tc = ToolContext(incoming(), ctx)
    assert "hello page" in await tool.call(tc, {"url": f"{fake_web.url}/page"})
    big = await tool.call(tc, {"url": f"{fake_web.url}/big"})
    assert "[cut at 1,000 bytes]" in big and big.count("x") == 1000
    with pytest.raises(ToolError, match="not on the allowlist"):
        await tool.call(tc, {"url": "http://outside.test/x"})
    with pytest.raises(ToolError, match="outside.test is not on the allowlist"):  # redirect hop checked too
        await tool.call(tc, {"url": f"{fake_web.url}/away"})
    with pytest.raises(ToolError, match="not text"):
        await tool.call(tc, {"url": f"{fake_web.url}/bin"})
    with pytest.raises(ToolError, match="only http"):
        await tool.call(tc, {"url": "file:///etc/passwd"})


async def test_list_jobs_shows_non_admins_only_their_channels_jobs(ctx) -> None:
    from training.models import Job

    async with ctx.db() as session, session.begin():
        for i, (channel, user) in enumerate([("C1", "U9"), ("C2", "U9"), ("C2", "U1")]):
            session.add(Job(recipe="lora", params={}, idempotency_key=f"k{i}", requested_by=user, platform="slack",
                            workspace="T1", channel=channel))
    tool = registered()["list_jobs"]
    mine = await tool.call(ToolContext(incoming(), ctx), {})
    assert mine.count("job ") == 2 and "requested by U1" in mine  # C1's job and U1's own job in C2
    everything = await tool.call(ToolContext(incoming(is_admin=True), ctx), {})
    assert everything.count("job ") == 3
    status = await registered()["job_status"].call(ToolContext(incoming(is_admin=True), ctx), {"job_id": 1})
    assert status.startswith("job 1: lora queued")
    with pytest.raises(ToolError, match="no job 2"):
        await registered()["job_status"].call(ToolContext(incoming(), ctx), {"job_id": 2})


async def test_now_is_timezone_aware(ctx) -> None:
    out = await registered()["now"].call(ToolContext(incoming(), ctx), {})
    assert datetime.fromisoformat(out.split(" ")[0]).tzinfo is not None
