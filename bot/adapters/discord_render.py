"""Pure translators between Discord and Ladder's neutral types: no I/O, no discord.py objects.

    >>> split_message("a" * 2500)[0] == "a" * 2000
    True
    >>> parse_custom_id(custom_id(Action("confirm", "Confirm", "p1")))
    ('confirm', 'p1')
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from bot.actions import FEEDBACK_DOWN, FEEDBACK_UP
from bot.messages import Action, Citation, Reply
from bot.safety import neutralise_mentions, sanitize

LIMIT = 2000  # Discord's message length limit
CUSTOM_ID_PREFIX = "ladder"
_FENCE = re.compile(r"^\s*```(\S*)")


def citations_block(citations: Iterable[Citation]) -> str:
    """Citations as links at the end; `<url>` keeps Discord from unfurling every source.

    >>> citations_block([Citation(1, "Guide", "https://x.test/g"), Citation(2, "Notes")])
    '**Sources**\\n[1] [Guide](<https://x.test/g>)\\n[2] Notes'
    """
    lines = []
    for c in citations:
        title = c.title.replace("[", "(").replace("]", ")")
        lines.append(f"[{c.index}] [{title}](<{c.url}>)" if c.url else f"[{c.index}] {title}")
    return "**Sources**\n" + "\n".join(lines) if lines else ""


def is_model_text(reply: Reply) -> bool:
    return reply.partial or reply.model is not None


def reply_text(reply: Reply, allowlist: Iterable[str] = ()) -> str:
    """The whole text to post: sanitized body (model text loses pings and outside links) + citations."""
    body = sanitize(reply.text, allowlist) if is_model_text(reply) else neutralise_mentions(reply.text)
    block = citations_block(reply.citations)
    return f"{body}\n\n{block}" if block else body


def _blocks(text: str) -> list[str]:
    """Paragraphs and whole code blocks, in order (a code block is never broken into paragraphs)."""
    blocks, current, fence = [], [], None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is None and m:
            if current:
                blocks.append("\n".join(current))
            current, fence = [line], m.group(1)
            if line.count("```") >= 2:  # a one-line block
                blocks.append(line)
                current, fence = [], None
            continue
        current.append(line)
        if fence is not None and line.strip().startswith("```"):
            blocks.append("\n".join(current))
            current, fence = [], None
        elif fence is None and not line.strip() and len(current) > 1:
            blocks.append("\n".join(current[:-1]))
            current = []
    if current:
        blocks.append("\n".join(current))
    return [b for b in blocks if b.strip()]


def _split_block(block: str, limit: int) -> list[str]:
    """A block longer than the limit: by lines; a code block is closed and reopened at each cut."""
    m = _FENCE.match(block)
    opener = f"```{m.group(1)}" if m else ""
    closer = "\n```" if m else ""
    lines = block.split("\n")
    if m:
        lines = lines[1:-1] if lines[-1].strip().startswith("```") else lines[1:]
    room = limit - len(opener) - len(closer) - (1 if m else 0)
    cut = [line[i:i + room] for line in lines for i in range(0, max(len(line), 1), room)]  # huge lines: hard cut
    return [f"{opener}\n{p}{closer}" if m else p for p in _pack(cut, "\n", room)]


def _pack(parts: list[str], sep: str, limit: int) -> list[str]:
    """Greedily join parts with `sep` into chunks of at most `limit` characters (each part fits alone).

    >>> _pack(["aa", "bb", "cc"], "-", 5)
    ['aa-bb', 'cc']
    """
    chunks, current = [], ""
    for part in parts:
        candidate = f"{current}{sep}{part}" if current else part
        if len(candidate) > limit:
            chunks.append(current)
            candidate = part
        current = candidate
    chunks.append(current)
    return [c for c in chunks if c]


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    """Chunks of at most `limit` characters, cut between paragraphs and never inside a code block
    (a code block longer than a whole message is closed and reopened around each cut).

    >>> [len(c) for c in split_message(("x" * 900 + "\\n\\n") * 3)]
    [1802, 900]
    """
    if len(text) <= limit:
        return [text] if text else []
    parts = [p for block in _blocks(text) for p in ([block] if len(block) <= limit else _split_block(block, limit))]
    return _pack(parts, "\n\n", limit)


def render_chunks(reply: Reply, allowlist: Iterable[str] = ()) -> list[str]:
    return split_message(reply_text(reply, allowlist)) or ["(empty answer)"]


def custom_id(action: Action) -> str:
    """A persistent button id: everything needed to act is in the id, so buttons survive restarts."""
    return f"{CUSTOM_ID_PREFIX}:{action.action_id}:{action.value}"[:100]


def parse_custom_id(raw: str) -> tuple[str, str] | None:
    """`ladder:confirm:p1` -> ('confirm', 'p1'); anything else -> None.

    >>> parse_custom_id("other:x")
    """
    prefix, _, rest = raw.partition(":")
    if prefix != CUSTOM_ID_PREFIX or not rest:
        return None
    action_id, _, value = rest.partition(":")
    return action_id, value


def feedback_actions() -> tuple[Action, ...]:
    """👍/👎 under a model answer; what they are about is read from the message they sit on."""
    return (Action(FEEDBACK_UP, "👍"), Action(FEEDBACK_DOWN, "👎"))


def citations_from_text(text: str) -> list[Citation]:
    """The citations `citations_block` wrote, read back from a posted message (for feedback).

    >>> [(c.index, c.title, c.url) for c in citations_from_text("a\\n\\n**Sources**\\n[1] [G](<https://x.test/g>)")]
    [(1, 'G', 'https://x.test/g')]
    """
    _, found, block = text.rpartition("**Sources**\n")
    out = []
    for line in block.splitlines() if found else []:
        m = re.match(r"\[(\d+)\] (?:\[(.*)\]\(<(.*)>\)|(.*))$", line)
        if m:
            out.append(Citation(int(m.group(1)), m.group(2) or m.group(4) or "", m.group(3)))
    return out


def strip_mention(content: str, bot_id: int | str) -> str:
    """The message without the bot's own mention(s).

    >>> strip_mention("<@42> what is RAG? <@!42>", 42)
    'what is RAG?'
    """
    return re.sub(rf"<@!?{bot_id}>", "", content).strip()


def conversation_root(*, in_thread: bool, channel_id: str, message_id: str, replied_to_bot_root: str | None,
                      is_dm: bool) -> str | None:
    """The thread key of a message's conversation (thread memory).

    In a thread: the thread. In a DM: the DM itself (None). In a channel: the message that started the
    conversation — a reply to one of the bot's answers continues that answer's conversation, and a
    thread created from the starting message has the same id (Discord's thread id = starter message id).

    >>> conversation_root(in_thread=False, channel_id="c", message_id="m2", replied_to_bot_root="m1", is_dm=False)
    'm1'
    """
    if in_thread:
        return channel_id
    if is_dm:
        return None
    return replied_to_bot_root or message_id


def is_admin(user_id: str, role_ids: Iterable[str], *, administrator: bool, admin_users: set[str],
             admin_roles: set[str]) -> bool:
    """Configured admin users or roles, or the Administrator permission.

    >>> is_admin("1", ["7"], administrator=False, admin_users=set(), admin_roles={"7"})
    True
    """
    return administrator or user_id in admin_users or bool(admin_roles.intersection(role_ids))


def channel_readers(platform: str, channel_id: str, *, everyone_can_view: bool) -> tuple[str, ...]:
    """ACL principals of a channel's content (knowledge contract).

    >>> channel_readers("discord", "5", everyone_can_view=False)
    ('channel:discord:5',)
    """
    return ("public",) if everyone_can_view else (f"channel:{platform}:{channel_id}",)


def thread_name(question: str) -> str:
    """A thread title from the question: first line, at most 90 characters."""
    line = (question.strip().splitlines() or ["Ladder answer"])[0]
    return (line[:87] + "...") if len(line) > 90 else (line or "Ladder answer")
