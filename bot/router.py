"""Maps an `Incoming` to the handler registered for its command, through a middleware chain.

Register a handler:

    @command("echo", help="Repeat the text back", usage="/echo TEXT", free_text=True)
    async def echo(msg: Incoming, ctx: Context) -> Reply:
        return Reply(text=msg.body)

Plain text (not starting with "/") goes to the handler registered as `ask`.
A handler returns a `Reply` or yields several (streaming: each replaces the previous one).
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bot.commands import CommandSpec, Opt, is_command, parse
from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply

log = logging.getLogger(__name__)

Handler = Callable[[Incoming, Context], Awaitable[Reply] | AsyncIterator[Reply]]
Next = Callable[[Incoming], AsyncIterator[Reply]]


@dataclass(frozen=True)
class Registered:
    spec: CommandSpec
    handler: Handler


_REGISTRY: dict[str, Registered] = {}
DEFAULT_COMMAND = "ask"


def command(
    name: str,
    *,
    help: str,
    usage: str = "",
    options: Mapping[str, Opt] | None = None,
    subcommands: Mapping[str, str] | None = None,
    free_text: bool = False,
    admin: bool = False,
) -> Callable[[Handler], Handler]:
    """Register a handler for `/name`. A second registration of the same name fails at import."""

    def register(fn: Handler) -> Handler:
        if name in _REGISTRY:
            raise RuntimeError(f"command /{name} registered twice: {_REGISTRY[name].handler} and {fn}")
        spec = CommandSpec(
            name=name,
            help=help,
            usage=usage or f"/{name}",
            options=dict(options or {}),
            subcommands=dict(subcommands or {}),
            free_text=free_text,
            admin=admin,
        )
        _REGISTRY[name] = Registered(spec, fn)
        return fn

    return register


def registered() -> dict[str, Registered]:
    return dict(_REGISTRY)


class Middleware(Protocol):
    """One concern (dedupe, size limit, admin gate, audit) around the handler; calls `next` or not."""

    def __call__(self, msg: Incoming, ctx: Context, spec: CommandSpec, next: Next) -> AsyncIterator[Reply]: ...


async def _as_stream(result: Any) -> AsyncIterator[Reply]:
    if inspect.isasyncgen(result):
        async for reply in result:
            yield reply
    else:
        yield await result


class Router:
    """Parses, runs the middleware chain, calls the handler; turns every error into a reply."""

    def __init__(self, ctx: Context, middleware: list[Middleware] | None = None):
        self.ctx = ctx
        self.middleware = list(middleware or [])
        self.table = registered()
        self.specs = {name: r.spec for name, r in self.table.items()}

    def resolve(self, msg: Incoming) -> Incoming:
        if msg.command is None and is_command(msg.text):
            return msg.evolve(command=parse(msg.text, self.specs))
        return msg

    async def dispatch(self, msg: Incoming) -> AsyncIterator[Reply]:
        """All replies for one message. Never raises: failures become one-line error replies."""
        try:
            msg = self.resolve(msg)
            name = msg.command.name if msg.command else DEFAULT_COMMAND
            entry = self.table[name]
            async for reply in self._chain(msg, entry):
                yield reply
        except UserError as err:
            yield Reply.fail(str(err))
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("handler failed (ref %s) for %s", ref, msg.conversation_key)
            yield Reply.fail(f"Something went wrong on my side (ref {ref}). It is logged; try again.")

    async def answer(self, msg: Incoming) -> Reply | None:
        """The final reply only (for scripts and tests)."""
        last = None
        async for reply in self.dispatch(msg):
            last = reply
        return last

    def _chain(self, msg: Incoming, entry: Registered) -> AsyncIterator[Reply]:
        def call_handler(m: Incoming) -> AsyncIterator[Reply]:
            return _as_stream(entry.handler(m, self.ctx))

        call: Next = call_handler
        for mw in reversed(self.middleware):
            call = _bind(mw, self.ctx, entry.spec, call)
        return call(msg)


def _bind(mw: Middleware, ctx: Context, spec: CommandSpec, nxt: Next) -> Next:
    return lambda m: mw(m, ctx, spec, nxt)
