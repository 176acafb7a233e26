"""`ladder mcp`: Ladder as an MCP server, so other agents (IDEs, desktop assistants) can use it.

    ladder mcp --as slack:U123                          # stdio, answering as that user
    MCP_TOKENS="s3cret=slack:U123" ladder mcp --http --port 8765   # streamable HTTP at /mcp, bearer token

Tools: `search_knowledge`, `ask`, `list_jobs`. Every call runs as a principal (platform:user): over
stdio the one given with `--as`; over HTTP the one the bearer token maps to. ACLs apply as they do in
a DM with that user, and the caller is never an admin, so nothing admin-only is reachable.
"""


import getpass
import hmac
import logging
from typing import Any

import typer

from bot.config import Settings
from bot.messages import Command, Incoming

log = logging.getLogger(__name__)


def parse_principal(text: str) -> tuple[str, str]:
    """`slack:U123` -> ("slack", "U123").

    >>> parse_principal("console:alice")
    ('console', 'alice')
    """
    platform, sep, user = text.strip().partition(":")
    if not sep or not platform or not user:
        raise typer.BadParameter(f"a principal is PLATFORM:USER (e.g. slack:U123), not {text!r}")
    return platform, user


def parse_tokens(raw: str) -> dict[str, tuple[str, str]]:
    """`"tok1=slack:U1,tok2=console:bob"` -> token -> principal."""
    out = {}
    for item in raw.split(","):
        token, sep, principal = item.strip().partition("=")
        if item.strip():
            if not sep or not token:
                raise typer.BadParameter("MCP_TOKENS entries are TOKEN=PLATFORM:USER")
            out[token] = parse_principal(principal)
    return out


def caller_message(platform: str, user: str, text: str = "", command: Command | None = None) -> Incoming:
    """The MCP caller as the bot sees them: a DM from that user, never an admin."""
    return Incoming(platform=platform, workspace="mcp", channel=f"mcp-{user}", user=user, text=text,
                    command=command, is_admin=False, is_dm=True, user_name=user)


def token_principal(tokens: dict[str, tuple[str, str]], header: str | None) -> tuple[str, str] | None:
    """The principal for an `Authorization: Bearer TOKEN` header, compared in constant time."""
    if not header or not header.lower().startswith("bearer "):
        return None
    given = header[7:].strip().encode()
    for token, principal in tokens.items():
        if hmac.compare_digest(given, token.encode()):
            return principal
    return None


def build_server(ctx: Any, router: Any, principal_of: Any) -> Any:
    """The MCP server; `principal_of(mcp_context)` says who is calling."""
    from mcp.server.mcpserver import Context as McpContext
    from mcp.server.mcpserver import MCPServer

    from handlers.tools import ToolContext, ToolError, registered

    server = MCPServer("ladder", instructions="Search the team's knowledge, ask Ladder, list training jobs.",
                       log_level="WARNING")
    tools = registered()

    async def run_tool(name: str, mctx: McpContext, args: dict[str, Any]) -> str:
        msg = caller_message(*principal_of(mctx))
        try:
            return await tools[name].call(ToolContext(msg, ctx), args)
        except ToolError as err:
            raise ValueError(str(err)) from None

    @server.tool(description="Search the team's documents the caller may read; numbered passages with sources.")
    async def search_knowledge(query: str, ctx_: McpContext, k: int = 5) -> str:
        return await run_tool("search_knowledge", ctx_, {"query": query, "k": k})

    @server.tool(description="Ask Ladder a question; it answers as it would in a DM with the caller.")
    async def ask(question: str, ctx_: McpContext) -> str:
        platform, user = principal_of(ctx_)
        msg = caller_message(platform, user, question, Command("ask", args=(question,), raw=question))
        reply = await router.answer(msg)
        if reply is None or reply.error:
            raise ValueError(reply.text if reply else "no answer")
        return reply.text

    @server.tool(description="Recent training jobs the caller may see, with their status.")
    async def list_jobs(ctx_: McpContext, status: str | None = None, limit: int = 10) -> str:
        return await run_tool("list_jobs", ctx_, {"status": status, "limit": limit})

    return server


async def serve(settings: Settings, *, http: bool, host: str, port: int, principal: tuple[str, str],
                tokens: dict[str, tuple[str, str]]) -> None:
    from bot.app import build_context, build_router, close

    ctx = await build_context(settings)
    router = build_router(ctx)
    try:
        if not http:
            await build_server(ctx, router, lambda _m: principal).run_stdio_async()
            return

        def from_token(mctx: Any) -> tuple[str, str]:
            request = getattr(mctx.request_context, "request", None)
            found = token_principal(tokens, request.headers.get("authorization") if request is not None else None)
            if found is None:  # the HTTP layer already refused; never fall back to anyone
                raise ValueError("not authorised")
            return found

        import uvicorn

        app = BearerAuth(build_server(ctx, router, from_token).streamable_http_app(stateless_http=True,
                                                                                   json_response=True), tokens)
        await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
    finally:
        await close(ctx)


class BearerAuth:
    """ASGI wrapper: every HTTP request needs `Authorization: Bearer TOKEN` for a known token, else 401."""

    def __init__(self, app: Any, tokens: dict[str, tuple[str, str]]):
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if token_principal(self.tokens, headers.get("authorization")) is None:
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"unauthorized: a valid bearer token is required"})
                return
        await self.app(scope, receive, send)


def mcp_command(
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP (at /mcp) instead of stdio."),
    host: str = typer.Option("127.0.0.1", help="HTTP: address to listen on."),
    port: int = typer.Option(8765, help="HTTP: port."),
    as_: str = typer.Option("", "--as", help="stdio: answer as PLATFORM:USER (default console:<you>)."),
    token: str = typer.Option("", envvar="LADDER_MCP_TOKEN", help="HTTP: one bearer token, for the --as user."),
) -> None:
    """Serve search_knowledge, ask and list_jobs over MCP (stdio, or HTTP with a bearer token)."""
    from bot.cli import run_async

    principal = parse_principal(as_ or f"console:{getpass.getuser()}")
    tokens: dict[str, tuple[str, str]] = {}
    if http:
        from bot.config import get_settings

        raw = get_settings().mcp_tokens
        tokens = parse_tokens(raw.get_secret_value()) if raw else {}
        if token:
            tokens[token] = principal
        if not tokens:
            typer.echo("error: --http needs a bearer token: set MCP_TOKENS=TOKEN=PLATFORM:USER or pass --token.",
                       err=True)
            raise typer.Exit(2)
    run_async(lambda s: serve(s, http=http, host=host, port=port, principal=principal, tokens=tokens))
