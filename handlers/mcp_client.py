"""MCP client: tools of the MCP servers listed in `MCP_CONFIG`, offered to the agent as `server.tool`.

The config (YAML or JSON):

    servers:
      files:                              # tools appear as files.read, files.list ...
        command: python                   # stdio: a subprocess ("python" = the bot's own interpreter)
        args: ["-m", "my_mcp_server"]
        env: {ROOT: /srv/docs}
        read_only: [read, list]           # tools without side effects; all others need confirmation
      tracker:
        url: http://127.0.0.1:9000/mcp    # streamable HTTP
        headers: {Authorization: "Bearer ${TRACKER_TOKEN}"}   # ${VAR} is read from the environment
        admin: true                       # only admins' agents see this server's tools

Servers are connected for one agent run (and again for a confirmed call), so a crashed server costs
one clear error, never the bot. Permission and confirmation rules are the same as for built-in tools.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from bot.config import Settings
from bot.llm.base import ToolSpec
from handlers.tools import ToolContext, ToolError, describe_call

log = logging.getLogger(__name__)
_ENV = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class ServerConfig:
    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    read_only: frozenset[str] = frozenset()
    admin: bool = False


def _expand(value: str) -> str:
    return _ENV.sub(lambda m: os.environ.get(m.group(1), ""), value)


def parse_config(data: Any) -> dict[str, ServerConfig]:
    """Server configs from the parsed file; a clear `ValueError` for a malformed one.

    >>> parse_config({"servers": {"f": {"command": "python", "read_only": ["read"]}}})["f"].read_only
    frozenset({'read'})
    """
    servers = (data or {}).get("servers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise ValueError("the MCP config needs a 'servers' mapping")
    out = {}
    for name, raw in servers.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", str(name)) or not isinstance(raw, dict):
            raise ValueError(f"MCP server {name!r}: names are letters, digits, _ or -; values are mappings")
        if bool(raw.get("command")) == bool(raw.get("url")):
            raise ValueError(f"MCP server {name!r}: give exactly one of 'command' (stdio) or 'url' (HTTP)")
        out[name] = ServerConfig(
            name=name, command=raw.get("command"), args=tuple(str(a) for a in raw.get("args") or ()),
            env={k: _expand(str(v)) for k, v in (raw.get("env") or {}).items()}, cwd=raw.get("cwd"),
            url=raw.get("url"),
            headers={k: _expand(str(v)) for k, v in (raw.get("headers") or {}).items()},
            read_only=frozenset(raw.get("read_only") or ()), admin=bool(raw.get("admin", False)))
    return out


def load_config(settings: Settings) -> dict[str, ServerConfig]:
    """The configured servers; none when MCP_CONFIG is unset. A broken file is logged, not fatal."""
    path = settings.mcp_config
    if path is None:
        return {}
    try:
        text = Path(path).read_text()
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
        return parse_config(data)
    except Exception as err:  # unreadable file, YAML/JSON syntax, bad shape
        log.error("MCP config %s unusable: %s", path, _reason(err))
        return {}


@dataclass
class McpTool:
    """One tool of a connected MCP server, shaped like a built-in tool for the agent."""

    server: ServerConfig
    tool_name: str
    description: str
    schema: dict[str, Any]
    pool: McpPool | None = None

    @property
    def name(self) -> str:
        return f"{self.server.name}.{self.tool_name}"

    @property
    def admin(self) -> bool:
        return self.server.admin

    @property
    def side_effect(self) -> bool:
        return self.tool_name not in self.server.read_only

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, f"[MCP {self.server.name}] {self.description}".strip(), self.schema)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments for {self.name} must be a JSON object")
        try:
            jsonschema.validate(arguments, self.schema)
        except jsonschema.ValidationError as err:
            raise ToolError(f"bad arguments for {self.name}: {err.message}") from None
        except jsonschema.SchemaError:
            pass  # the server's schema is its own business; let the server judge the arguments
        return arguments

    async def prepare(self, tc: ToolContext, arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
        args = self.validate(arguments)
        return args, describe_call(self.name, args, f"Call {self.tool_name} on MCP server {self.server.name}")

    async def call(self, tc: ToolContext, arguments: dict[str, Any]) -> str:
        args = self.validate(arguments)
        timeout = tc.ctx.settings.mcp_call_timeout_s
        if self.pool is not None:
            return await self.pool.call(self.server.name, self.tool_name, args, timeout)
        async with McpPool.open({self.server.name: self.server}, tc.ctx.settings) as pool:
            if self.server.name not in pool.sessions:
                raise ToolError(f"MCP server {self.server.name} is not reachable: {pool.errors.get(self.server.name)}")
            return await pool.call(self.server.name, self.tool_name, args, timeout)


class McpPool:
    """The sessions of one agent run: opened together, closed together, each failure kept apart."""

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}
        self.tools: list[McpTool] = []
        self.errors: dict[str, str] = {}
        self.broken: set[str] = set()

    @classmethod
    @asynccontextmanager
    async def open(cls, servers: dict[str, ServerConfig], settings: Settings):  # -> AsyncIterator[McpPool]
        pool = cls()
        stacks: list[AsyncExitStack] = []
        try:
            for server in servers.values():
                stack = AsyncExitStack()
                try:
                    async with asyncio.timeout(settings.mcp_call_timeout_s):  # same task: anyio scopes stay valid
                        session = await _connect(stack, server)
                        listing = await session.list_tools()
                except Exception as err:  # noqa: BLE001 - a bad server must not stop the others
                    pool.errors[server.name] = _reason(err)
                    log.warning("MCP server %s unavailable: %s", server.name, pool.errors[server.name])
                    await _close(stack, server.name)
                    continue
                except BaseException:
                    await _close(stack, server.name)
                    raise
                stacks.append(stack)
                pool.sessions[server.name] = session
                for t in listing.tools:
                    schema = t.input_schema if isinstance(t.input_schema, dict) else {"type": "object"}
                    pool.tools.append(McpTool(server, t.name, t.description or "", schema, pool))
            yield pool
        finally:
            for stack, name in zip(reversed(stacks), reversed(list(pool.sessions)), strict=False):
                await _close(stack, name)

    async def call(self, server: str, tool: str, arguments: dict[str, Any], timeout: float) -> str:
        """The tool's text output; every failure (crash, timeout, tool error) is a one-line `ToolError`."""
        if server in self.broken:
            raise ToolError(f"MCP server {server} stopped working earlier in this task")
        try:
            async with asyncio.timeout(timeout):
                result = await self.sessions[server].call_tool(tool, arguments)
        except TimeoutError:
            raise ToolError(f"MCP server {server} did not answer {tool} within {timeout:g}s") from None
        except Exception as err:  # noqa: BLE001 - connection closed, protocol errors
            self.broken.add(server)
            log.warning("MCP server %s failed during %s: %s", server, tool, _reason(err))
            raise ToolError(f"MCP server {server} failed during {tool}: {_reason(err)}") from None
        text = "\n".join(getattr(c, "text", "") or f"[{getattr(c, 'type', 'content')}]" for c in result.content)
        if getattr(result, "is_error", False):
            raise ToolError(f"{server}.{tool} reported an error: {text[:500]}")
        return text


async def _connect(stack: AsyncExitStack, server: ServerConfig) -> Any:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    if server.command:
        command = sys.executable if server.command in ("python", "python3") else server.command
        params = StdioServerParameters(command=command, args=list(server.args), env=server.env or None,
                                       cwd=server.cwd)
        read, write = await stack.enter_async_context(stdio_client(params))
    else:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        client = await stack.enter_async_context(create_mcp_http_client(headers=server.headers or None))
        read, write = await stack.enter_async_context(streamable_http_client(server.url or "", http_client=client))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


async def _close(stack: AsyncExitStack, name: str) -> None:
    try:
        await stack.aclose()
    except BaseException as err:  # noqa: BLE001 - a dead server's transport may fail while closing
        if isinstance(err, KeyboardInterrupt | SystemExit):
            raise
        log.info("closing MCP server %s: %s", name, _reason(err))


def _reason(err: BaseException) -> str:
    """One line for an error that may be an exception group from the transport's task group."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:200]


@asynccontextmanager
async def connect(settings: Settings):  # -> AsyncIterator[McpPool]
    """All configured servers for one agent run (an empty pool when none are configured)."""
    servers = load_config(settings)
    async with McpPool.open(servers, settings) as pool:
        yield pool


def find(settings: Settings, name: str) -> McpTool | None:
    """A configured server's tool by `server.tool` name, unconnected (for running a confirmed call)."""
    server_name, _, tool_name = name.partition(".")
    server = load_config(settings).get(server_name)
    if server is None or not tool_name:
        return None
    return McpTool(server, tool_name, "", {"type": "object"})
