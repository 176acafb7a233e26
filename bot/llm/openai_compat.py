"""Models behind an OpenAI-compatible server (LM Studio, TGI, vLLM, llama.cpp server), over plain httpx.

    >>> backend = OpenAICompatBackend("http://127.0.0.1:1234/v1", api_key=None, timeout=120)
    >>> # [m.name for m in await backend.list_models()]
    >>> # async for chunk in backend.model("qwen2.5-7b-instruct").stream(msgs): print(chunk.delta, end="")

The API key travels only in the Authorization header: it is never logged, never kept in an error
message (server error text is scrubbed of it), and `describe()` shows the URL without credentials.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from bot.errors import ModelUnavailable
from bot.llm.base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    ModelInfo,
    ServedBackend,
    ToolCall,
    ToolSpec,
    elapsed_ms,
)
from bot.llm.ollama import LEARN_TIMEOUT_S, PING_TIMEOUT_S, connect_reason, first_line
from bot.messages import Usage


def public_url(url: str) -> str:
    """The base URL without any `user:password@` part, safe to show and log."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl()


def to_openai_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our neutral messages in the Chat Completions shape (tool calls carry JSON-string arguments)."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        item: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.tool_calls:
            item["content"] = msg.content or None
            item["tool_calls"] = [
                {
                    "id": c.id or f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments),
                    },
                }
                for i, c in enumerate(msg.tool_calls)
            ]
        if msg.role == "tool":
            item["tool_call_id"] = msg.tool_call_id or msg.tool_name or ""
        out.append(item)
    return out


def parse_arguments(raw: Any) -> dict[str, Any] | str:
    """Arguments as a dict when they are a JSON object, else the raw text for the model to fix."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return str(raw)
    return value if isinstance(value, dict) else str(raw)


class OpenAICompatBackend(ServedBackend):
    """Any server speaking /models and /chat/completions; it cannot pull models, only serve them."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 120.0,
        default_model: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.shown_url = public_url(self.base_url)
        self.timeout = timeout
        self._configured = default_model
        self._first_listed: str | None = None
        self._contexts: dict[str, int] = {}
        self._secrets = tuple(s for s in (api_key, urlsplit(self.base_url).password) if s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=self.base_url + "/", headers=headers, timeout=timeout)

    # -- errors -----------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """Servers echo keys back ("Incorrect API key provided: sk-..."); users must not see them."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def unavailable(self, exc: BaseException, model: str | None = None) -> ModelUnavailable | None:
        """The user-facing error for a transport failure, or None when it is something else."""
        where = self.shown_url
        if isinstance(exc, httpx.ConnectError):
            return ModelUnavailable(
                f"Cannot reach the OpenAI-compatible server at {where} ({connect_reason(exc)}). "
                "Start it, or fix OPENAI_BASE_URL."
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return ModelUnavailable(f"Cannot reach the server at {where} (timed out connecting).")
        if isinstance(exc, httpx.TimeoutException):
            return ModelUnavailable(
                f"The server at {where} did not answer within {self.timeout:g}s. "
                "Try again, or raise LLM_TIMEOUT_S."
            )
        if isinstance(exc, httpx.TransportError):
            return ModelUnavailable(f"Lost the connection to the server at {where} ({type(exc).__name__}).")
        return None

    def http_error(self, status: int, body: str, model: str | None = None) -> ModelUnavailable:
        where = self.shown_url
        if status in (401, 403):
            return ModelUnavailable(f"The server at {where} refused the API key ({status}); check OPENAI_API_KEY.")
        if status == 404 and model:
            return ModelUnavailable(f"Model '{model}' is not served at {where}; `/models list` shows what is.")
        if status == 404:
            return ModelUnavailable(f"{where}/models was not found (404); OPENAI_BASE_URL usually ends in /v1")
        return ModelUnavailable(f"The server at {where} answered {status}: {self.scrub(_error_text(body))}")

    def _raise(self, exc: Exception, model: str | None = None) -> NoReturn:
        err = self.unavailable(exc, model)
        if err is None:
            raise exc
        raise err from None  # the httpx error names the URL, which may carry credentials

    async def request(self, method: str, path: str, model: str | None = None, **kwargs: Any) -> Any:
        """One JSON request; every failure comes back as `ModelUnavailable`."""
        try:
            resp = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self._raise(exc, model)
        if not resp.is_success:
            raise self.http_error(resp.status_code, resp.text, model)
        try:
            return resp.json()
        except ValueError:
            raise ModelUnavailable(f"The server at {self.shown_url} sent a reply that is not JSON.") from None

    # -- Backend ----------------------------------------------------------------------------------
    async def ping(self) -> bool:
        """True when /models answers 2xx quickly; never raises."""
        try:
            resp = await self.http.get("models", timeout=min(PING_TIMEOUT_S, self.timeout))
        except httpx.HTTPError:
            return False
        return resp.is_success

    async def list_models(self) -> list[ModelInfo]:
        data = await self.request("GET", "models")
        infos = []
        for entry in data.get("data") or []:
            meta = entry.get("meta") or {}  # llama.cpp server
            context = entry.get("max_model_len") or entry.get("context_length") or meta.get("n_ctx_train")
            info = ModelInfo(
                name=str(entry.get("id", "")),
                backend=self.name,
                size_bytes=meta.get("size"),
                context_length=int(context) if context else None,
                details={k: v for k, v in entry.items() if k not in ("id", "object")},
            )
            if info.context_length:
                self._contexts[info.name] = info.context_length
            infos.append(info)
        if infos:
            self._first_listed = infos[0].name
        return infos

    def model(self, name: str) -> OpenAICompatChatModel:
        return OpenAICompatChatModel(self, name)

    def describe(self) -> str:
        return f"openai-compatible at {self.shown_url}"

    async def aclose(self) -> None:
        await self.http.aclose()


def _error_text(body: str) -> str:
    """The message inside {"error": {"message": ...}}, {"error": "..."} or {"detail": ...}, else the body."""
    try:
        data = json.loads(body)
    except ValueError:
        return first_line(body) or "(empty body)"
    err = data.get("error", data.get("detail", data.get("message"))) if isinstance(data, dict) else data
    if isinstance(err, dict):
        err = err.get("message", err)
    return first_line(str(err))


class OpenAICompatChatModel(ChatModel):
    """One model on the server; learns its window from /models (vLLM, llama.cpp report it)."""

    backend = "openai"

    def __init__(self, owner: OpenAICompatBackend, name: str):
        self.owner = owner
        self.name = name
        self.context_length = owner._contexts.get(name, 4096)
        self._learned = name in owner._contexts

    async def learn(self) -> None:
        """One bounded look at /models; failures leave the 4096 default."""
        if self._learned:
            return
        self._learned = True
        try:
            await asyncio.wait_for(self.owner.list_models(), min(LEARN_TIMEOUT_S, self.owner.timeout))
        except (ModelUnavailable, TimeoutError):
            return
        self.context_length = self.owner._contexts.get(self.name, self.context_length)

    prepare = learn

    def _body(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec] | None,
        json_schema: dict[str, Any] | None,
        max_tokens: int | None,
        temperature: float | None,
        stream: bool,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.name, "messages": to_openai_messages(messages)}
        body["stream"] = stream
        if tools:
            body["tools"] = [t.as_openai() for t in tools]
        if json_schema:
            schema = {"name": "reply", "schema": json_schema}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def _result(self, text: str, calls: list[ToolCall], usage: dict[str, Any] | None, start: float) -> ChatResult:
        counts = usage or {}
        return ChatResult(
            text=text,
            model=self.name,
            backend=self.backend,
            usage=Usage(int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0)),
            tool_calls=tuple(calls),
            latency_ms=elapsed_ms(start),
        )

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult:
        await self.learn()
        start = time.perf_counter()
        body = self._body(messages, tools, json_schema, max_tokens, temperature, stream=False)
        data = await self.owner.request("POST", "chat/completions", self.name, json=body)
        choices = data.get("choices") or [{}]
        message = choices[0].get("message") or {}
        calls = [
            ToolCall(
                name=c.get("function", {}).get("name", ""),
                arguments=parse_arguments(c.get("function", {}).get("arguments")),
                id=c.get("id") or f"call_{i}",
            )
            for i, c in enumerate(message.get("tool_calls") or [])
        ]
        return self._result(message.get("content") or "", calls, data.get("usage"), start)

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Deltas from the SSE stream; the last chunk carries the whole result and usage."""
        await self.learn()
        start = time.perf_counter()
        body = self._body(messages, tools, json_schema, max_tokens, temperature, stream=True)
        parts: list[str] = []
        pending: dict[int, dict[str, str]] = {}  # tool calls arrive in fragments, keyed by index
        usage: dict[str, Any] | None = None
        try:
            async with self.owner.http.stream("POST", "chat/completions", json=body) as resp:
                if not resp.is_success:
                    await resp.aread()
                    raise self.owner.http_error(resp.status_code, resp.text, self.name)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, `event:` lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    event = json.loads(payload)
                    if event.get("error"):
                        raise self.owner.http_error(500, json.dumps(event), self.name)
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        for frag in delta.get("tool_calls") or []:
                            empty = {"id": "", "name": "", "args": ""}
                            call = pending.setdefault(int(frag.get("index", 0)), empty)
                            fn = frag.get("function") or {}
                            call["id"] = frag.get("id") or call["id"]
                            call["name"] += fn.get("name") or ""
                            call["args"] += fn.get("arguments") or ""
                        if delta.get("content"):
                            parts.append(delta["content"])
                            yield ChatChunk(delta=delta["content"])
        except httpx.HTTPError as exc:
            self.owner._raise(exc, self.name)
        except ValueError:
            raise ModelUnavailable(f"The server at {self.owner.shown_url} sent a malformed stream.") from None
        calls = [
            ToolCall(name=c["name"], arguments=parse_arguments(c["args"]), id=c["id"] or f"call_{i}")
            for i, c in sorted(pending.items())
        ]
        yield ChatChunk(delta="", done=True, result=self._result("".join(parts), calls, usage, start))
