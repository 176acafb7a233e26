"""Pure translators between Slack and Ladder's neutral types: Reply -> Block Kit, Slack text -> plain text.

    >>> to_mrkdwn("**Bold** and [docs](https://d.test/x) & <tags>")
    '*Bold* and <https://d.test/x|docs> &amp; &lt;tags&gt;'
    >>> from_slack_text("<@UBOT> what is <https://x.test|this> &amp; that?", bot_user_id="UBOT")
    'what is this (https://x.test) & that?'
"""

from __future__ import annotations

import re
from typing import Any

from bot.actions import FEEDBACK_DOWN, FEEDBACK_UP
from bot.messages import Action, Citation, Reply
from bot.safety import neutralise_mentions, sanitize

SECTION_LIMIT = 3000  # characters in one section block's text
TEXT_LIMIT = 39000  # the message text field (Slack truncates at 40k)
MAX_SECTIONS = 45  # Slack allows 50 blocks; leave room for citations, footer and buttons
THINKING = "_thinking…_"

_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![*\w])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![*\w])")
_STRIKE = re.compile(r"~~(.+?)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.M)
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD_MARK = "\x00B\x00"


def escape(text: str) -> str:
    """Slack's three control characters; after this, model text cannot form `<!channel>` or `<@U…>`."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _convert(part: str) -> str:
    part = escape(part)
    part = _LINK.sub(lambda m: f"<{m.group(2)}|{m.group(1).replace('|', '¦')}>", part)
    part = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", part)
    part = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(2)}{_BOLD_MARK}", part)
    part = _ITALIC.sub(r"_\1_", part)
    part = _STRIKE.sub(r"~\1~", part)
    part = _BULLET.sub(r"\1• ", part)
    return part.replace(_BOLD_MARK, "*")


def to_mrkdwn(markdown: str) -> str:
    """Common Markdown (what models write) as Slack mrkdwn; code spans and blocks are left as they are."""
    pieces = _CODE.split(markdown)
    return "".join(escape(p) if i % 2 else _convert(p) for i, p in enumerate(pieces))


def from_slack_text(text: str, bot_user_id: str | None = None) -> str:
    """What a person typed, as plain text: no mention of the bot, links and entities decoded."""
    if bot_user_id:
        text = re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", "", text)
    text = re.sub(r"<(https?://[^|>]+)\|([^>]+)>", r"\2 (\1)", text)
    text = re.sub(r"<(https?://[^|>]+)>", r"\1", text)
    text = re.sub(r"<#\w+\|([^>]+)>", r"#\1", text)
    text = re.sub(r"<@(\w+)\|([^>]+)>", r"@\2", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return re.sub(r"[ \t]+", " ", text).strip()


def slash_text(command_text: str) -> str:
    """`/ladder models list` arrives as "models list"; the router wants "/models list". Empty -> /help.

    >>> slash_text("  models list"), slash_text(""), slash_text("/ask hi")
    ('/models list', '/help', '/ask hi')
    """
    text = command_text.strip()
    if not text:
        return "/help"
    return text if text.startswith("/") else "/" + text


def split_text(text: str, limit: int = SECTION_LIMIT) -> list[str]:
    """Cut text into pieces of at most `limit` characters, preferring line breaks.

    >>> split_text("aaaa\\nbbbb", 6)
    ['aaaa', 'bbbb']
    """
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > limit // 2 else limit
        pieces.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text:
        pieces.append(text)
    return pieces


def citation_line(citations: tuple[Citation, ...]) -> str:
    """`[1] <url|Title>` for each source: citations are links when the source has a URL."""
    parts = []
    for c in citations:
        title = escape(c.title).replace("|", "¦")
        parts.append(f"[{c.index}] <{c.url}|{title}>" if c.url else f"[{c.index}] {title}")
    return "*Sources:* " + "  ·  ".join(parts)


def _button(action: Action) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action.action_id, "value": action.value[:2000],
                              "text": {"type": "plain_text", "text": action.label[:75], "emoji": True}}
    if action.style in ("primary", "danger"):
        button["style"] = action.style
    return button


def feedback_actions(value: str) -> tuple[Action, Action]:
    return (Action(FEEDBACK_UP, "👍", value), Action(FEEDBACK_DOWN, "👎", value))


def body_text(reply: Reply, allowlist: tuple[str, ...] = ()) -> str:
    """The reply's own text as safe mrkdwn. Mentions are always inert; model text (streamed, or a reply
    naming its model) also loses markdown images and links outside the allowlist. Bot-written text
    (`/help`, `/search` results) keeps its links."""
    text = reply.text if reply.text.strip() else "…"
    from_model = reply.partial or reply.model is not None
    return to_mrkdwn(sanitize(text, allowlist) if from_model else neutralise_mentions(text))


def render(reply: Reply, allowlist: tuple[str, ...] = (), *, feedback: str | None = None,
           context: str | None = None) -> dict[str, Any]:
    """`chat.postMessage`/`chat.update` arguments for a reply: `text` (notifications) and `blocks`.

    `feedback` adds 👍/👎 buttons carrying that value; `context` is a small grey line on top.
    """
    body = body_text(reply, allowlist)
    if reply.partial:
        body += " …"
    blocks: list[dict[str, Any]] = []
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context[:2000]}]})
    sections = split_text(body)
    if len(sections) > MAX_SECTIONS:
        sections = sections[:MAX_SECTIONS] + ["_(answer cut: too long for one Slack message)_"]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]
    fallback = body
    if reply.citations and not reply.partial:
        line = citation_line(reply.citations)
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": p} for p in split_text(line)[:10]]})
        fallback += "\n" + line
    if reply.model and not reply.partial and f"{reply.model} via" not in reply.text:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn",
                                                          "text": escape(f"{reply.model} via {reply.backend}")}]})
    actions = list(reply.actions) if not reply.partial else []
    if feedback is not None and not reply.partial:
        actions += feedback_actions(feedback)
    if actions:
        blocks.append({"type": "actions", "elements": [_button(a) for a in actions[:25]]})
    return {"text": fallback[:TEXT_LIMIT], "blocks": blocks}


def resolved_blocks(blocks: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """A message's blocks once its buttons were used: the action blocks replaced by a note."""
    kept = [b for b in blocks if b.get("type") != "actions"]
    return kept + [{"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]
