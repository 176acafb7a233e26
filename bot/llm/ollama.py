"""Models served by an Ollama server, through the official `ollama` client.

    >>> backend = OllamaBackend("http://127.0.0.1:11434", timeout=120, default_model="llama3.1:8b")
    >>> # await backend.ping(); [m.name for m in await backend.list_models()]
    >>> # result = await backend.model("llama3.1:8b").chat([ChatMessage("user", "Hi")])

Every transport or server failure becomes a one-line `ModelUnavailable` naming the host (or the
model), so the router can answer the user instead of crashing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx
from ollama import AsyncClient, ChatResponse, ResponseError

from bot.errors import ModelUnavailable
from bot.llm.base import (
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    ModelInfo,
    PullProgress,
    ServedBackend,
    ToolCall,
    ToolSpec,
    elapsed_ms,
)
from bot.messages import Usage

DEFAULT_HOST = "http://127.0.0.1:11434"
PING_TIMEOUT_S = 2.0
LEARN_TIMEOUT_S = 5.0  # bound on the one-off /api/show a chat model makes to learn its window
SHAPE_KEYS = ("block_count", "attention.head_count_kv", "embedding_length", "attention.head_count")


def normalise_host(host: str | None) -> str:
    """`localhost` -> `http://localhost:11434`, as the Ollama CLI reads OLLAMA_HOST."""
    host = (host or DEFAULT_HOST).strip().rstrip("/")
    if "://" in host:
        return host
    host = f"http://{host}"
    parts = urlsplit(host)
    if parts.port is None:
        host = parts._replace(netloc=f"{parts.netloc}:11434").geturl()
    return host


def first_line(text: str, limit: int = 200) -> str:
    """Server error bodies can be long or multi-line; users get one short line."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def connect_reason(exc: BaseException) -> str:
    """Why a connection failed, from the OS error buried in the client's exception chain."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        seen = seen.__cause__ or seen.__context__
    return "connection failed"


def _as_mapping(arguments: dict[str, Any] | str) -> dict[str, Any]:
    """Ollama wants tool-call arguments as an object; keep a malformed string visible to the model."""
    if isinstance(arguments, dict):
        return arguments
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"raw": arguments}
    return value if isinstance(value, dict) else {"raw": arguments}


def to_ollama_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our neutral messages in the shape of Ollama's /api/chat."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        item: dict[str, Any] = {"role": msg.role, "content": msg.content}
        if msg.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": c.name, "arguments": _as_mapping(c.arguments)}} for c in msg.tool_calls
            ]
        if msg.role == "tool" and msg.tool_name:
            item["tool_name"] = msg.tool_name
        out.append(item)
    return out


def _tool_calls(calls: Any, start: int = 0) -> list[ToolCall]:
    return [
        ToolCall(name=c.function.name, arguments=dict(c.function.arguments or {}), id=f"call_{start + i}")
        for i, c in enumerate(calls or ())
    ]


class OllamaBackend(ServedBackend):
    """An Ollama server: list, show and pull models, and chat with them."""

    name = "ollama"

    def __init__(self, host: str = DEFAULT_HOST, timeout: float = 120.0, default_model: str | None = None):
        self.host = normalise_host(host)
        self.timeout = timeout
        self._configured = default_model
        self._first_listed: str | None = None
        self._contexts: dict[str, int] = {}
        self._tools: dict[str, bool] = {}
        self._sizes: dict[str, int] = {}
        self.client = AsyncClient(host=self.host, timeout=timeout)

    # -- errors -----------------------------------------------------------------------------------
    def unavailable(self, exc: BaseException, model: str | None = None) -> ModelUnavailable | None:
        """The user-facing error for a client failure, or None when it is not a server/transport one."""
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return ModelUnavailable(
                f"Cannot reach Ollama at {self.host} ({connect_reason(exc)}). "
                "Start it with `ollama serve` or set OLLAMA_HOST."
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return ModelUnavailable(
                f"Cannot reach Ollama at {self.host} (timed out connecting). Is OLLAMA_HOST right?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return ModelUnavailable(
                f"Ollama at {self.host} did not answer within {self.timeout:g}s; it may still be loading the "
                "model. Try again, or raise LLM_TIMEOUT_S."
            )
        if isinstance(exc, httpx.TransportError):
            return ModelUnavailable(f"Lost the connection to Ollama at {self.host} ({type(exc).__name__}).")
        if isinstance(exc, ResponseError):
            if exc.status_code == 404 and model:
                return ModelUnavailable(
                    f"Model '{model}' is not on the Ollama server at {self.host}. "
                    f"Pull it with `/models pull {model}`."
                )
            status = f" ({exc.status_code})" if exc.status_code > 0 else ""
            return ModelUnavailable(
                f"Ollama at {self.host} refused the request{status}: {first_line(exc.error)}"
            )
        return None

    def _raise(self, exc: Exception, model: str | None = None) -> NoReturn:
        err = self.unavailable(exc, model)
        if err is None:
            raise exc
        raise err from exc

    # -- Backend ----------------------------------------------------------------------------------
    async def ping(self) -> bool:
        """True when something answers /api/version quickly; never raises (used to pick a backend)."""
        try:
            async with httpx.AsyncClient(base_url=self.host, timeout=min(PING_TIMEOUT_S, self.timeout)) as c:
                return (await c.get("/api/version")).is_success
        except (httpx.HTTPError, OSError):
            return False

    async def list_models(self) -> list[ModelInfo]:
        try:
            listing = await self.client.list()
        except Exception as exc:
            self._raise(exc)
        infos = []
        for m in listing.models:
            d = m.details
            infos.append(
                ModelInfo(
                    name=m.model or "",
                    backend=self.name,
                    size_bytes=int(m.size) if m.size is not None else None,
                    family=d.family if d else None,
                    parameter_size=d.parameter_size if d else None,
                    quantization=d.quantization_level if d else None,
                    details={"digest": m.digest, "format": d.format if d else None},
                )
            )
            if m.size is not None:
                self._sizes[m.model or ""] = int(m.size)
        if infos:
            self._first_listed = infos[0].name
        return infos

    async def show(self, name: str) -> ModelInfo | None:
        """Everything `/models info` shows; None when the server has no such model."""
        try:
            resp = await self.client.show(name)
        except ResponseError as exc:
            if exc.status_code == 404:
                return None
            self._raise(exc, name)
        except Exception as exc:
            self._raise(exc, name)
        info: Mapping[str, Any] = resp.modelinfo or {}
        arch = str(info.get("general.architecture") or "")
        context = info.get(f"{arch}.context_length")
        if context is None:  # some GGUFs name the architecture differently from their key prefix
            context = next((v for k, v in info.items() if k.endswith(".context_length")), None)
        details: dict[str, Any] = {k: info[f"{arch}.{k}"] for k in SHAPE_KEYS if f"{arch}.{k}" in info}
        details.update(architecture=arch or None, parameter_count=info.get("general.parameter_count"))
        details["capabilities"] = list(resp.capabilities or [])
        d = resp.details
        if context:
            self._contexts[name] = int(context)
        if resp.capabilities is not None:
            self._tools[name] = "tools" in resp.capabilities
        return ModelInfo(
            name=name,
            backend=self.name,
            size_bytes=self._sizes.get(name),
            family=d.family if d else None,
            parameter_size=d.parameter_size if d else None,
            quantization=d.quantization_level if d else None,
            context_length=int(context) if context else None,
            license=first_line(resp.license or "") or None,
            details=details,
        )

    async def pull(self, name: str) -> AsyncIterator[PullProgress]:
        """Download a model, yielding the server's progress lines as they come."""
        try:
            async for p in await self.client.pull(name, stream=True):
                yield PullProgress(status=p.status or "", completed=p.completed, total=p.total)
        except ResponseError as exc:
            if exc.status_code in (-1, 404, 500):
                raise ModelUnavailable(
                    f"Ollama at {self.host} could not pull '{name}': {first_line(exc.error)}. "
                    "Check the name at https://ollama.com/library."
                ) from exc
            self._raise(exc, name)
        except Exception as exc:
            self._raise(exc, name)

    async def embed(self, texts: list[str], model: str | None = None) -> list[list[float]]:
        """Embeddings from an Ollama embedding model (e.g. nomic-embed-text)."""
        name = model or await self.resolve_default_model()
        if not name:
            raise ModelUnavailable(f"Ollama at {self.host} has no models; pull one with `/models pull NAME`.")
        try:
            resp = await self.client.embed(model=name, input=texts)
        except Exception as exc:
            self._raise(exc, name)
        return [list(v) for v in resp.embeddings]

    def model(self, name: str) -> OllamaChatModel:
        return OllamaChatModel(self, name)

    def describe(self) -> str:
        return f"ollama at {self.host}"

    async def aclose(self) -> None:
        await self.client.close()


class OllamaChatModel(ChatModel):
    """One model on an Ollama server; learns its context window from /api/show on first use."""

    backend = "ollama"

    def __init__(self, owner: OllamaBackend, name: str):
        self.owner = owner
        self.name = name
        self.context_length = owner._contexts.get(name, 4096)
        self.supports_tools = owner._tools.get(name, True)
        self._learned = name in owner._contexts

    async def learn(self) -> None:
        """One bounded attempt to read the real context window; failures leave the 4096 default."""
        if self._learned:
            return
        self._learned = True
        try:
            await asyncio.wait_for(self.owner.show(self.name), min(LEARN_TIMEOUT_S, self.owner.timeout))
        except (ModelUnavailable, TimeoutError):
            return
        self.context_length = self.owner._contexts.get(self.name, self.context_length)
        self.supports_tools = self.owner._tools.get(self.name, self.supports_tools)

    prepare = learn

    def _request(
        self,
        messages: list[ChatMessage],
        tools: list[ToolSpec] | None,
        json_schema: dict[str, Any] | None,
        max_tokens: int | None,
        temperature: float | None,
    ) -> dict[str, Any]:
        options = {
            k: v for k, v in (("num_predict", max_tokens), ("temperature", temperature)) if v is not None
        }
        return {
            "model": self.name,
            "messages": to_ollama_messages(messages),
            "tools": [t.as_openai() for t in tools] if tools else None,
            "format": json_schema,
            "options": options or None,
        }

    def _result(
        self, text: str, calls: list[ToolCall], last: ChatResponse | None, start: float
    ) -> ChatResult:
        usage = Usage(
            prompt_tokens=(last.prompt_eval_count or 0) if last else 0,
            completion_tokens=(last.eval_count or 0) if last else 0,
        )
        return ChatResult(
            text=text,
            model=self.name,
            backend=self.backend,
            usage=usage,
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
        try:
            resp = await self.owner.client.chat(
                **self._request(messages, tools, json_schema, max_tokens, temperature), stream=False
            )
        except Exception as exc:
            self.owner._raise(exc, self.name)
        return self._result(resp.message.content or "", _tool_calls(resp.message.tool_calls), resp, start)

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Deltas as Ollama produces them; the last chunk carries the whole result and usage."""
        await self.learn()
        start = time.perf_counter()
        parts: list[str] = []
        calls: list[ToolCall] = []
        last: ChatResponse | None = None
        try:
            request = self._request(messages, tools, json_schema, max_tokens, temperature)
            async for part in await self.owner.client.chat(**request, stream=True):
                last = part
                calls += _tool_calls(part.message.tool_calls, len(calls))
                if part.message.content:
                    parts.append(part.message.content)
                    yield ChatChunk(delta=part.message.content)
        except Exception as exc:
            self.owner._raise(exc, self.name)
        yield ChatChunk(delta="", done=True, result=self._result("".join(parts), calls, last, start))
