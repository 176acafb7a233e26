"""The platform-neutral types every handler speaks.

Adapters translate native events into `Incoming` and `Reply` objects into native calls;
no handler ever sees a Slack or Discord object.

    >>> msg = Incoming(platform="console", workspace="local", channel="console", user="me", text="hi")
    >>> Reply(text="hello").with_footer("smollm2 via local").text
    'hello\\n_smollm2 via local_'
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Command:
    """A parsed command: `/models use llama3.1:8b ctx=4096` -> name, args, options."""

    name: str
    args: tuple[str, ...] = ()
    options: dict[str, str] = field(default_factory=dict)
    raw: str = ""

    @property
    def rest(self) -> str:
        """The positional arguments joined back into free text."""
        return " ".join(self.args)


@dataclass(frozen=True)
class Attachment:
    name: str
    data: bytes
    mime: str = "application/octet-stream"


@dataclass(frozen=True)
class Incoming:
    """One message or command addressed to the bot, from any platform."""

    platform: str  # console | slack | discord
    workspace: str  # Slack team id, Discord guild id, "local"
    channel: str
    user: str
    text: str
    thread: str | None = None  # thread/conversation key; None = the channel itself
    command: Command | None = None  # set by the parser when text is a command
    is_admin: bool = False  # decided by the adapter from platform roles + settings
    is_dm: bool = False
    is_private_channel: bool = False
    event_id: str | None = None  # platform delivery id, used for de-duplication
    user_name: str = ""
    attachments: tuple[Attachment, ...] = ()

    @property
    def body(self) -> str:
        """The free text of the message: a command's arguments, or the whole plain message."""
        return self.command.rest if self.command else self.text

    @property
    def conversation_key(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread or '-'}"

    def evolve(self, **changes: Any) -> Incoming:
        return replace(self, **changes)


@dataclass(frozen=True)
class Citation:
    index: int
    title: str
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class FileOut:
    """A file the reply carries, e.g. a loss-curve PNG."""

    name: str
    data: bytes
    mime: str = "image/png"
    title: str = ""


@dataclass(frozen=True)
class Action:
    """A button: feedback, confirm/cancel, deploy. `value` goes back to the bot when pressed."""

    action_id: str
    label: str
    value: str = ""
    style: str = "default"  # default | primary | danger


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Reply:
    """What the bot says. A streamed answer is a sequence of Replies, each replacing the last."""

    text: str
    citations: tuple[Citation, ...] = ()
    files: tuple[FileOut, ...] = ()
    actions: tuple[Action, ...] = ()
    ephemeral: bool = False
    thread: str | None = None
    partial: bool = False  # True while streaming: more text will replace this one
    error: bool = False
    model: str | None = None
    backend: str | None = None
    usage: Usage | None = None
    latency_ms: int | None = None
    data: dict[str, Any] | None = None  # machine-readable payload (e.g. for --json)

    def with_footer(self, footer: str) -> Reply:
        return replace(self, text=f"{self.text}\n_{footer}_")

    def evolve(self, **changes: Any) -> Reply:
        return replace(self, **changes)

    @classmethod
    def fail(cls, text: str) -> Reply:
        """A one-line error for the user, shown only to them where the platform allows."""
        return cls(text=text, error=True, ephemeral=True)


ReplyStream = AsyncIterator[Reply]


@dataclass(frozen=True)
class HistoryMessage:
    """One message of a channel's history, platform-neutral (what sync and `summarize` read).

    `id` is the platform's message id and sorts in time (Slack `ts`, Discord snowflake): it is the cursor.
    `thread` is the thread the message belongs to (Slack: the parent's ts, also on the parent itself when it
    has replies; Discord: the thread channel's id); None for a plain channel message.
    """

    id: str
    user: str
    user_name: str
    text: str
    created_at: datetime
    thread: str | None = None
    is_bot: bool = False
    channel: str = ""
    url: str | None = None
    reply_to: str | None = None


class Platform(Protocol):
    """What an adapter offers the rest of the bot besides answering messages.

    The notifier, sync and reminders use this to reach a channel outside a request; the knowledge sources
    and `summarize` read a channel through `history`, `members` and `readers`.
    """

    name: str

    async def post(self, channel: str, reply: Reply, thread: str | None = None) -> str:
        """Post a reply; returns the platform message id (used for later edits)."""
        ...

    async def update(self, channel: str, message_id: str, reply: Reply) -> None: ...

    def history(self, channel: str, *, after: str | datetime | None = None, thread: str | None = None,
                limit: int | None = None) -> AsyncIterator[HistoryMessage]:
        """Messages newer than `after` (a message id, or a time), oldest first, all pages, at most `limit`:
        the channel's own messages, or with `thread` that thread's (parent included where the platform has one).
        """
        ...

    async def members(self, channel: str) -> list[str] | None:
        """User ids who may read the channel; None when the platform cannot tell (raises on an API error)."""
        ...

    async def readers(self, channel: str) -> tuple[str, ...]:
        """ACL principals of the channel's content: `("public",)` for a channel everyone in the workspace
        can read, else `("channel:<platform>:<id>",)`."""
        ...
