"""Shared pieces of the Slack tests: signed requests to the adapter, payload builders, test handlers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import aiohttp

from bot.commands import CommandSpec
from bot.context import Context
from bot.llm.base import Backend, ChatMessage, ChatModel, ChatResult, ModelInfo
from bot.messages import Citation, FileOut, Incoming, Reply
from bot.router import Registered, Router
from tests.fakes.slack_api import TEAM, event_body, sign

SECRET = "test-signing-secret"
MODEL = "llama3.1:8b"
# A valid 1x1 PNG.
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                    "0000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


class SlackClient:
    """Sends what Slack would send to the adapter's HTTP endpoint, signed with the test secret."""

    def __init__(self, session: aiohttp.ClientSession, url: str, fake_url: str):
        self.session, self.url, self.fake_url = session, url, fake_url

    async def send(self, body: str, content_type: str, *, headers: dict[str, str] | None = None,
                   secret: str = SECRET, timestamp: int | None = None) -> tuple[int, str]:
        all_headers = {"Content-Type": content_type, **sign(body, secret, timestamp), **(headers or {})}
        async with self.session.post(self.url, data=body.encode(), headers=all_headers) as resp:
            return resp.status, await resp.text()

    async def event(self, event: dict[str, Any], event_id: str, *, retry: int | None = None, **kw: Any) -> int:
        headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"} if retry else {}
        status, _ = await self.send(json.dumps(event_body(event, event_id)), "application/json",
                                    headers=headers, **kw)
        return status

    async def command(self, text: str, channel: str, user: str = "UANN", **kw: Any) -> int:
        form = {"token": "legacy", "team_id": TEAM, "team_domain": "test", "channel_id": channel,
                "channel_name": "general", "user_id": user, "user_name": user.lower(), "command": "/ladder",
                "text": text, "api_app_id": "A1", "trigger_id": f"t.{time.time()}",
                "response_url": kw.pop("response_url", f"{self.fake_url}/response/{channel}")}
        status, _ = await self.send(urlencode(form), "application/x-www-form-urlencoded", **kw)
        return status

    async def press(self, action_id: str, value: str, *, user: str, message: dict[str, Any]) -> int:
        payload = {"type": "block_actions", "team": {"id": TEAM, "domain": "test"},
                   "user": {"id": user, "username": user.lower(), "team_id": TEAM}, "api_app_id": "A1",
                   "token": "legacy", "trigger_id": f"t.{time.time()}",
                   "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"],
                                 "is_ephemeral": False},
                   "channel": {"id": message["channel"], "name": "general"},
                   "message": {k: v for k, v in message.items() if k in ("ts", "text", "blocks", "thread_ts")},
                   "response_url": f"{self.fake_url}/response/{message['channel']}",
                   "actions": [{"action_id": action_id, "block_id": "b", "value": value, "type": "button",
                                "action_ts": str(time.time())}]}
        status, _ = await self.send(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded")
        return status


def mention(channel: str, ts: str, text: str, *, user: str = "UANN", thread_ts: str | None = None) -> dict[str, Any]:
    event = {"type": "app_mention", "user": user, "text": f"<@UBOT> {text}", "ts": ts, "channel": channel,
             "event_ts": ts, "team": TEAM}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def dm(channel: str, ts: str, text: str, *, user: str = "UANN", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "channel_type": "im", "user": user, "text": text, "ts": ts, "channel": channel,
            "event_ts": ts, "team": TEAM, **extra}


def button(message: dict[str, Any], action_id: str) -> dict[str, Any]:
    for block in message.get("blocks") or []:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["action_id"] == action_id:
                return element
    raise AssertionError(f"no {action_id} button in {message.get('blocks')}")


class GatedModel(ChatModel):
    """A model that answers only when the test opens the gate (or after `limit_s`): a slow model."""

    def __init__(self, gate: asyncio.Event, limit_s: float = 10.0):
        self.name, self.backend, self.gate, self.limit_s = "slow-model", "slow", gate, limit_s

    async def chat(self, messages: list[ChatMessage], **kwargs: Any) -> ChatResult:
        try:
            await asyncio.wait_for(self.gate.wait(), self.limit_s)
        except TimeoutError:
            pass
        return ChatResult("Slow but sure.", self.name, self.backend)


class GatedBackend(Backend):
    name = "slow"

    def __init__(self, gate: asyncio.Event):
        self.gate = gate

    async def ping(self) -> bool:
        return True

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("slow-model", "slow")]

    def model(self, name: str) -> ChatModel:
        return GatedModel(self.gate)

    @property
    def default_model(self) -> str:
        return "slow-model"


CITES = (Citation(1, "Runbook", "https://docs.example.com/runbook"), Citation(2, "Team notes"))


def add_test_commands(router: Router, deploys: list[Incoming]) -> None:
    """Commands only this router knows: streamed answer with citations, a PNG, a flood of partials,
    and an admin `/deploy` that records who ran it."""
    from handlers.ask import answer

    async def cite(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
        async for reply in answer(msg, ctx, msg.body):
            yield reply if reply.partial else reply.evolve(citations=CITES)

    async def plot(msg: Incoming, ctx: Context) -> Reply:
        return Reply(text="Here is the loss curve.", files=(FileOut("loss.png", PNG, title="Loss"),))

    async def flood(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
        for i in range(30):
            yield Reply(text=f"partial {i} " + "x" * 50, partial=True)
        yield Reply(text="flood done")

    async def deploy(msg: Incoming, ctx: Context) -> Reply:
        deploys.append(msg)
        return Reply(text=f"Deployed job {msg.body}.")

    async def attached(msg: Incoming, ctx: Context) -> Reply:
        return Reply(text="; ".join(f"{a.name} {a.mime} {a.data!r}" for a in msg.attachments) or "no files")

    for name, fn, admin in (("cite", cite, False), ("plot", plot, False), ("flood", flood, False),
                            ("deploy", deploy, True), ("attached", attached, False)):
        router.table[name] = Registered(CommandSpec(name, help=name, free_text=True, admin=admin), fn)
        router.specs[name] = router.table[name].spec
