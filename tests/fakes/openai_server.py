"""A fake OpenAI-compatible server (LM Studio, vLLM, llama.cpp style) on loopback, scripted per test.

    >>> fake = FakeOpenAI(api_key="sk-test")      # requests without `Bearer sk-test` get 401
    >>> fake.add_model("qwen2.5-7b-instruct", context_length=32768)
    >>> fake.reply("Hello!")
    >>> fake.reply_tool_call("add", {"a": 1})
    >>> # await fake.start(); OpenAICompatBackend(fake.url + "/v1", api_key="sk-test", ...)

Streams Server-Sent Events the way OpenAI does: `data: {chunk}` lines, tool-call arguments split
across chunks, a usage-only chunk when `stream_options.include_usage` is set, then `data: [DONE]`.
Standalone: `python -m tests.fakes.openai_server --port 1234`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import Any

from aiohttp import web

from tests.fakes.ollama_server import LoopbackServer


class FakeOpenAI(LoopbackServer):
    """/v1/models and /v1/chat/completions; `authorizations` holds each request's Authorization header."""

    def __init__(self, port: int = 0, api_key: str | None = None, canned: str = "Hello from the fake server."):
        super().__init__(port)
        self.api_key = api_key
        self.canned = canned
        self.models: dict[str, int] = {}  # name -> context length
        self.authorizations: list[str | None] = []

    def add_model(self, name: str, context_length: int = 4096) -> None:
        self.models[name] = context_length

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/chat/completions", self.completions)

    async def _check(self, request: web.Request) -> tuple[Any, web.Response | None]:
        body = await self.record(request)
        header = request.headers.get("Authorization")
        self.authorizations.append(header)
        if self.api_key and header != f"Bearer {self.api_key}":
            given = (header or "").removeprefix("Bearer ")
            # Like OpenAI, echo the key that was given: the client must keep it out of what users see.
            message = f"Incorrect API key provided: {given}. You can find your API key in your settings."
            return body, web.json_response({"error": {"message": message, "type": "invalid_request_error",
                                                      "code": "invalid_api_key"}}, status=401)
        return body, None

    async def list_models(self, request: web.Request) -> web.Response:
        _, denied = await self._check(request)
        if denied:
            return denied
        data = [{"id": name, "object": "model", "created": 1700000000, "owned_by": "fake", "max_model_len": ctx}
                for name, ctx in self.models.items()]
        return web.json_response({"object": "list", "data": data})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body, denied = await self._check(request)
        if denied:
            return denied
        name = body.get("model", "")
        if name not in self.models:
            return web.json_response({"object": "error", "message": f"The model `{name}` does not exist.",
                                      "type": "NotFoundError", "code": 404}, status=404)
        turn = self.next_script(self.canned)
        if turn.status != 200:
            return web.json_response({"error": {"message": turn.error, "type": "server_error"}}, status=turn.status)
        pieces = [w + " " for w in turn.text.split(" ")]
        pieces[-1] = pieces[-1][:-1]
        limit = body.get("max_tokens")
        reason = "length" if limit and len(pieces) > limit else "stop"
        pieces = [p for p in (pieces[:limit] if limit else pieces) if p]
        calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
                 for i, (n, a) in enumerate(turn.tool_calls)]
        reason = "tool_calls" if calls else reason
        prompt = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        usage = {"prompt_tokens": turn.prompt_tokens or prompt, "completion_tokens": len(pieces) + len(calls)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": name}
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces) or None}
            if calls:
                message["tool_calls"] = calls
            choice = {"index": 0, "message": message, "finish_reason": reason}
            return web.json_response({**head, "object": "chat.completion", "choices": [choice], "usage": usage})
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": p} for p in pieces]
        for i, call in enumerate(calls):  # name first, then the arguments in two fragments
            args = call["function"]["arguments"]
            cut = len(args) // 2
            deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                           "function": {"name": call["function"]["name"], "arguments": ""}}]})
            for part in (args[:cut], args[cut:]):
                deltas.append({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
        events = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        events[-1]["finish_reason"] = reason
        chunks = [{**head, "object": "chat.completion.chunk", "choices": [e]} for e in events]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        lines = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
        return await self.send_stream(request, lines, "text/event-stream")


def main() -> None:
    """Serve a fake OpenAI-compatible server with one model until Ctrl-C, for manual testing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=1234)
    parser.add_argument("--model", default="qwen2.5-7b-instruct")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--reply", default="Hello from the fake server.")
    args = parser.parse_args()
    fake = FakeOpenAI(port=args.port, api_key=args.api_key, canned=args.reply)
    fake.add_model(args.model, context_length=32768)
    print(f"fake OpenAI-compatible server at {fake.start_sync()}/v1 serving {args.model}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop_sync()


if __name__ == "__main__":
    main()
