"""The plain data that flows sources -> chunking -> store. No I/O here.

A connector yields `SourceDocument`s; `chunking.chunk_document` turns one into `ChunkIn`s;
`store.upsert_document` writes both.

    >>> doc = SourceDocument("guide.md", "Guide", "# Intro\\nHello")
    >>> doc.acl, len(doc.content_hash)
    (('public',), 64)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PUBLIC = "public"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def channel_principal(platform: str, channel_id: str) -> str:
    return f"channel:{platform}:{channel_id}"


def user_principal(platform: str, user_id: str) -> str:
    return f"user:{platform}:{user_id}"


@dataclass
class SourceDocument:
    """One readable unit of a source: a file, a web page, a Slack thread, a channel-day of messages.

    `external_id` is stable across syncs (path, URL, `channel/thread_ts`); `acl` lists the principals
    any one of which grants read (`public`, `channel:<platform>:<id>`, `user:<platform>:<id>`).
    """

    external_id: str
    title: str
    text: str
    url: str | None = None
    acl: tuple[str, ...] = (PUBLIC,)
    meta: dict[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None

    @property
    def content_hash(self) -> str:
        """Changes when anything that ends up in the index changes (text, title, url, ACL)."""
        return sha256("\x1f".join([self.title, self.url or "", ",".join(sorted(self.acl)), self.text]))


@dataclass(frozen=True)
class ChunkIn:
    """One chunk to store: `heading` is the title/heading path kept with it ("Guide > Install > Linux")."""

    ord: int
    heading: str
    text: str
    tokens: int

    @property
    def embed_text(self) -> str:
        """What is embedded: heading path then text, so a chunk knows where it sits."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text

    @property
    def content_hash(self) -> str:
        return sha256(self.embed_text)


@dataclass
class SkippedDocument:
    """A document a connector could not read (corrupt PDF...): recorded in the source's errors, sync goes on."""

    external_id: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"document": self.external_id, "error": self.error}
