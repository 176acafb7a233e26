"""One `ChatModel` interface for every backend (Ollama, OpenAI-compatible servers, embedded).

    >>> msgs = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")]
    >>> # result = await model.chat(msgs); result.text, result.usage.prompt_tokens
    >>> # async for chunk in model.stream(msgs): print(chunk.delta, end="")
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bot.messages import Usage


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any] | str  # a str means the model sent arguments that are not a JSON object
    id: str = ""


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str | None = None  # for role="tool": which tool produced this
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: JSON-schema parameters, as OpenAI and Ollama expect."""

    name: str
    description: str
    parameters: dict[str, Any]

    def as_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ChatResult:
    text: str
    model: str
    backend: str
    usage: Usage = field(default_factory=Usage)
    tool_calls: tuple[ToolCall, ...] = ()
    latency_ms: int = 0


@dataclass(frozen=True)
class ChatChunk:
    """A piece of a streamed answer; the last one has `done=True` and the full `result`."""

    delta: str
    done: bool = False
    result: ChatResult | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a backend knows about a model it can serve."""

    name: str
    backend: str
    size_bytes: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None
    context_length: int | None = None
    license: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PullProgress:
    status: str
    completed: int | None = None
    total: int | None = None


class ChatModel(ABC):
    """A model that can chat. Backends differ; callers do not care which one answers."""

    name: str
    backend: str
    context_length: int = 4096
    supports_tools: bool = True

    @abstractmethod
    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        tools: list[ToolSpec] | None = None,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> ChatResult: ...

    async def stream(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AsyncIterator[ChatChunk]:
        """Default: no incremental output, one chunk with the whole answer."""
        result = await self.chat(messages, max_tokens=max_tokens, temperature=temperature)
        yield ChatChunk(delta=result.text, done=True, result=result)

    async def prepare(self) -> None:
        """Get ready before a prompt is budgeted: load weights, learn the real context window. Idempotent."""
        return None

    def count_tokens(self, text: str) -> int:
        """Token estimate used to trim history; backends with a tokenizer override it."""
        return max(1, len(text) // 4)

    async def tokenize(self, text: str) -> list[tuple[str, int]] | None:
        """(token, id) pairs with this model's tokenizer, or None when the backend has none."""
        return None


class Backend(ABC):
    """A source of models: an Ollama server, an OpenAI-compatible server, or the embedded model."""

    name: str

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def list_models(self) -> list[ModelInfo]: ...

    @abstractmethod
    def model(self, name: str) -> ChatModel: ...

    async def show(self, name: str) -> ModelInfo | None:
        for info in await self.list_models():
            if info.name == name:
                return info
        return None

    async def pull(self, name: str) -> AsyncIterator[PullProgress]:
        from bot.errors import UserError

        raise UserError(f"The {self.name} backend cannot download models; add them on the server itself.")
        yield  # pragma: no cover - makes this an async generator

    @property
    @abstractmethod
    def default_model(self) -> str: ...

    def describe(self) -> str:
        return self.name


class ServedBackend(Backend):
    """A model server (Ollama, OpenAI-compatible): its default is the configured model, else the first listed."""

    _configured: str | None = None
    _first_listed: str | None = None

    @property
    def default_model(self) -> str:
        """The configured model, else the first one `list_models()` saw; "" before any listing."""
        return self._configured or self._first_listed or ""

    async def resolve_default_model(self) -> str:
        """Like `default_model`, listing the server first when nothing is configured."""
        if not self.default_model:
            await self.list_models()
        return self.default_model


def elapsed_ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)
