"""A small MCP server over stdio, written with the `mcp` package, for the agent's MCP client tests.

    python -m tests.fakes.mcp_server          # FAKE_MCP_LOG=/tmp/calls.jsonl records every call

Tools: `echo` and `lookup` (read-only in the tests' config), `create_ticket` (a side effect: it appends
to the log, so a test can count how often it really ran) and `crash` (the process dies mid-call).
"""

from __future__ import annotations

import json
import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("fake", log_level="WARNING")


def record(tool: str, **arguments: object) -> None:
    path = os.environ.get("FAKE_MCP_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    record("echo", text=text)
    return f"echo: {text}"


@server.tool(description="Look up a key in the fake tracker.")
def lookup(key: str) -> str:
    record("lookup", key=key)
    return json.dumps({"key": key, "owner": "ann", "status": "open"})


@server.tool(description="Create a ticket in the fake tracker.")
def create_ticket(title: str, priority: int = 3) -> str:
    record("create_ticket", title=title, priority=priority)
    return f"created ticket '{title}' (priority {priority})"


@server.tool(description="Dies in the middle of the call.")
def crash() -> str:
    record("crash")
    sys.stdout.flush()
    os._exit(3)


if __name__ == "__main__":
    server.run()
