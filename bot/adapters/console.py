"""The terminal adapter: `ladder chat` is a REPL over the same router every platform uses."""

from __future__ import annotations

import asyncio
import getpass
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bot.context import Context
from bot.messages import Incoming, Reply
from bot.router import Router

PROMPT = "you> "
BANNER = "Ladder console. Ask anything, or type /help for commands, /quit to leave."


def render(reply: Reply, files_dir: Path | None = None) -> str:
    """A final reply as terminal text: answer, citations, files saved to disk, buttons as commands."""
    lines = [reply.text]
    for c in reply.citations:
        lines.append(f"  [{c.index}] {c.title}" + (f" <{c.url}>" if c.url else ""))
    for f in reply.files:
        if files_dir is not None:
            files_dir.mkdir(parents=True, exist_ok=True)
            path = files_dir / f.name
            path.write_bytes(f.data)
            lines.append(f"  file: {path}")
    for a in reply.actions:
        lines.append(f"  [{a.label}] -> /{a.action_id} {a.value}".rstrip())
    return "\n".join(lines)


class ConsoleAdapter:
    """Reads lines from `stdin`, writes answers to `stdout`; streams by printing new text as it comes."""

    name = "console"

    def __init__(self, router: Router, ctx: Context, *, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
                 user: str | None = None):
        self.router, self.ctx = router, ctx
        self.stdin, self.stdout = stdin, stdout
        self.user = user or getpass.getuser()
        self.files_dir = ctx.settings.data_dir / "files"
        self._ids = itertools.count(1)

    def incoming(self, text: str) -> Incoming:
        # The console user runs the bot on their own machine: they are its admin.
        return Incoming(platform="console", workspace="local", channel="console", user=self.user, text=text,
                        is_admin=True, is_dm=True, user_name=self.user)

    async def run(self, read: Callable[[], str] | None = None) -> None:
        interactive = self.stdin.isatty()
        self._write(BANNER + "\n")
        while True:
            if interactive:
                self._write(PROMPT)
            line = await asyncio.to_thread(read or self.stdin.readline)
            if not line:
                break
            text = line.strip()
            if text in ("/quit", "/exit"):
                break
            if not text and interactive:
                continue
            await self.handle(text)
        self._write("bye\n")

    async def handle(self, text: str) -> Reply | None:
        shown, last = "", None
        async for reply in self.router.dispatch(self.incoming(text)):
            last = reply
            if reply.partial:
                if reply.text.startswith(shown):
                    self._write(reply.text[len(shown):])
                    shown = reply.text
                continue
            body = render(reply, self.files_dir)
            self._write(body[len(shown):] + "\n" if shown and body.startswith(shown) else
                        ("\n" if shown else "") + body + "\n")
            shown = ""
        return last

    # Platform interface: the notifier and reminders post here.
    async def post(self, channel: str, reply: Reply, thread: str | None = None) -> str:
        self._write(render(reply, self.files_dir) + "\n")
        return str(next(self._ids))

    async def update(self, channel: str, message_id: str, reply: Reply) -> None:
        self._write(f"(update {message_id}) " + render(reply, self.files_dir) + "\n")

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()
