"""A list of web pages, fetched with httpx; one document per URL.

    /sources add handbook kind=web urls=https://example.com/a,https://example.com/b

Incremental with HTTP validators: a page answering 304 to If-None-Match / If-Modified-Since is
unchanged and costs nothing. A page that fails (network error, 4xx/5xx) is skipped and recorded.
Bodies are streamed and cut at `max_bytes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from bot.errors import UserError
from knowledge.sources import Connector, Found, source
from knowledge.sources.folder import parse_acl
from knowledge.sources.text import DEFAULT_MAX_CHARS, decode_pieces, html_to_text
from knowledge.types import SourceDocument

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


@source("web")
class WebSource(Connector):
    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        urls = config.get("urls") or []
        urls = [u.strip() for u in (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
        if not urls:
            raise UserError("A web source needs urls=URL[,URL...], e.g. /sources add site kind=web "
                            "urls=https://example.com/faq")
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise UserError(f"Not an http(s) URL: {bad[0]}")
        config.update(urls=urls, acl=list(parse_acl(config.get("acl"))),
                      max_bytes=int(config.get("max_bytes", DEFAULT_MAX_BYTES)),
                      max_chars=int(config.get("max_chars", DEFAULT_MAX_CHARS)))
        return config

    async def scan(self, cursor: dict[str, Any]) -> AsyncIterator[Found]:
        known = cursor.get("docs", {})
        async with httpx.AsyncClient(follow_redirects=True, timeout=30.0,
                                     headers={"User-Agent": "Ladder knowledge sync"}) as client:
            for url in self.config["urls"]:
                try:
                    yield await self.fetch(client, url, known.get(url) or {})
                except httpx.HTTPError as err:
                    yield Found(url, error=f"{type(err).__name__}: {err}"[:300])

    async def fetch(self, client: httpx.AsyncClient, url: str, stamp: dict[str, str]) -> Found:
        headers = {}
        if stamp.get("etag"):
            headers["If-None-Match"] = stamp["etag"]
        if stamp.get("last_modified"):
            headers["If-Modified-Since"] = stamp["last_modified"]
        async with client.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304 and stamp:
                return Found(url)
            if resp.status_code >= 400:
                return Found(url, error=f"HTTP {resp.status_code}")
            body, size, cut = [], 0, False
            async for piece in resp.aiter_bytes():
                body.append(piece)
                size += len(piece)
                if size >= self.config["max_bytes"]:
                    cut = True
                    break
            new_stamp = {k: v for k, v in (("etag", resp.headers.get("etag")),
                                           ("last_modified", resp.headers.get("last-modified"))) if v}
            ctype = resp.headers.get("content-type", "")
        cap = self.config["max_chars"]
        raw, encoding, raw_cut = decode_pieces(body, cap=cap * 4)
        if "html" in ctype or raw.lstrip()[:15].lower().startswith(("<!doctype", "<html")):
            title, text, truncated = html_to_text([raw], cap=cap)
        else:
            title, text, truncated = "", raw[:cap], len(raw) > cap
        meta: dict[str, Any] = {"content_type": ctype, "encoding": encoding}
        if cut or raw_cut or truncated:
            meta["note"] = "page truncated (max_bytes / max_chars)"
        doc = SourceDocument(url, title or url, text, url, tuple(self.config["acl"]), meta)
        return Found(url, doc=doc, cursor={"docs": {url: new_stamp or {"seen": True}}})
