"""The tool registry: each tool is one typed function in its own file, tagged with `@tool`.

    @tool("calculate", description="Evaluate arithmetic exactly, e.g. 38*47 or (2**10)/3.")
    async def calculate(tc: ToolContext, expression: Annotated[str, Field(description="the expression")]) -> str:
        return str(evaluate(expression))

The first parameter is the `ToolContext` (who asked, where, with which model); the others become
the JSON schema the model sees, derived from the signature by pydantic. `admin=True` tools are never
offered to a non-admin's agent; `side_effect=True` tools are never run by the model directly: the
agent stores a pending action and the human who asked confirms it (`bot.actions`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError, create_model

from bot.context import Context
from bot.llm.base import ChatModel, ToolSpec
from bot.messages import Citation, Incoming


class ToolError(Exception):
    """A tool could not do what was asked; the text goes back to the model (and the user), never a crash."""


@dataclass
class ToolContext:
    """What a tool runs with: the asking human's message (their identity and permissions), the bot, the model."""

    msg: Incoming
    ctx: Context
    model: ChatModel | None = None
    pending_id: str | None = None  # set when a confirmed side effect runs
    notes: list[str] = field(default_factory=list)  # things the reply should tell the user (degraded ACL...)
    citations: list[Citation] = field(default_factory=list)  # sources the tools read, numbered for the answer


class Tool(Protocol):
    """Anything the agent can call: a local `@tool` function or a tool of an MCP server."""

    name: str
    description: str
    admin: bool
    side_effect: bool

    def spec(self) -> ToolSpec: ...

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]: ...

    async def prepare(self, tc: ToolContext, arguments: dict[str, Any]) -> tuple[dict[str, Any], str]: ...

    async def call(self, tc: ToolContext, arguments: dict[str, Any]) -> str: ...


Prepare = Callable[[ToolContext, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class LocalTool:
    """A registered Python function with its argument model."""

    name: str
    description: str
    fn: Callable[..., Awaitable[Any]]
    args_model: type[BaseModel]
    admin: bool = False
    side_effect: bool = False
    summary: str = ""  # template over the prepared arguments, shown when asking for confirmation
    prepare_fn: Prepare | None = None

    def spec(self) -> ToolSpec:
        schema = self.args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        schema.setdefault("properties", {})
        return ToolSpec(self.name, self.description, schema)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Checked, converted arguments; a `ToolError` naming what is wrong for the model to fix."""
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments for {self.name} must be a JSON object matching its schema")
        try:
            return self.args_model.model_validate(arguments).model_dump(mode="json")
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in err.errors())
            raise ToolError(f"bad arguments for {self.name}: {problems}") from None

    async def prepare(self, tc: ToolContext, arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Arguments made exact (times resolved, names checked) and the one-line summary of what will run."""
        args = self.validate(arguments)
        if self.prepare_fn is not None:
            args = await self.prepare_fn(tc, args)
        return args, describe_call(self.name, args, self.summary)

    async def call(self, tc: ToolContext, arguments: dict[str, Any]) -> str:
        args = self.validate(arguments)
        result = await self.fn(tc, **args)
        return result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)


def describe_call(name: str, args: dict[str, Any], template: str = "") -> str:
    """What will run, exactly: the summary sentence (if any) and the call with its arguments.

    >>> describe_call("remind", {"text": "standup", "at": "2025-01-02T09:00:00+00:00"}, "Remind at {at}: {text}")
    'Remind at 2025-01-02T09:00:00+00:00: standup — remind(text="standup", at="2025-01-02T09:00:00+00:00")'
    """
    call = f"{name}(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items()) + ")"
    if not template:
        return call
    try:
        return f"{template.format(**args)} — {call}"
    except (KeyError, IndexError, ValueError):
        return call


_REGISTRY: dict[str, LocalTool] = {}


def tool(name: str, *, description: str, admin: bool = False, side_effect: bool = False, summary: str = "",
         prepare: Prepare | None = None) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Register `fn(tc: ToolContext, **typed_args)` as a tool; a second registration of a name fails at import.

        @tool("now", description="The current date and time.")
        async def now(tc: ToolContext) -> str: ...
    """

    def register(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        if name in _REGISTRY:
            raise RuntimeError(f"tool {name} registered twice: {_REGISTRY[name].fn} and {fn}")
        _REGISTRY[name] = LocalTool(name, description, fn, args_model(name, fn), admin, side_effect, summary,
                                    prepare)
        return fn

    return register


def args_model(name: str, fn: Callable[..., Any]) -> type[BaseModel]:
    """A pydantic model from the parameters after the first (`tc`); `Annotated[..., Field(...)]` adds help."""
    params = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
    fields: dict[str, Any] = {}
    for p in params:
        if p.annotation is inspect.Parameter.empty:
            raise TypeError(f"tool {name}: parameter {p.name} needs a type annotation")
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (p.annotation, default)
    return create_model(f"{name}_args", __config__={"extra": "forbid"}, **fields)


def load_all() -> None:
    """Import every tool module once so its `@tool` registrations exist."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def registered() -> dict[str, LocalTool]:
    load_all()
    return dict(_REGISTRY)


def offered(tools: list[Tool], msg: Incoming) -> list[Tool]:
    """The tools a human's agent may see: admin-only ones are left out entirely for non-admins."""
    return [t for t in tools if msg.is_admin or not t.admin]


def check_command(text: str) -> None:
    """Validate `/name args k=v` exactly as the router will (a `ToolError` if the command would be refused)."""
    from bot.errors import CommandError
    from bot.router import registered as commands

    specs = {name: r.spec for name, r in commands().items()}
    name = text.lstrip("/").split(" ", 1)[0]
    if name not in specs:
        raise ToolError(f"/{name} is not available in this installation")
    from bot.commands import parse

    try:
        parse(text, specs)
    except CommandError as err:
        raise ToolError(str(err)) from None


async def run_command(tc: ToolContext, text: str) -> str:
    """Run a slash command as the asking human, through the router's full chain (admin gate, audit, validation)."""
    from bot.middleware import DEFAULT_CHAIN
    from bot.router import Router

    check_command(text)
    router = Router(tc.ctx, DEFAULT_CHAIN)
    reply = await router.answer(tc.msg.evolve(text=text, command=None, event_id=None))
    if reply is None:
        raise ToolError(f"{text.split(' ', 1)[0]} gave no answer")
    if reply.error:
        raise ToolError(reply.text)
    return reply.text
