"""A tiny web server on loopback for the web source: pages with ETags (answers 304), errors, and a call log.

    server = FakeWeb(); server.pages["/faq"] = ("<title>FAQ</title><h1>FAQ</h1><p>Hi</p>", "text/html")
    await server.start(); url = server.url + "/faq"; ...; server.requests  # [(path, if_none_match), ...]
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from tests.fakes.ollama_server import LoopbackServer


class FakeWeb(LoopbackServer):
    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.pages: dict[str, tuple[str | bytes, str]] = {}
        self.requests: list[tuple[str, str | None]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/{path:.*}", self.page)

    async def page(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        self.requests.append((path, request.headers.get("If-None-Match")))
        if path not in self.pages:
            return web.Response(status=404, text="not found")
        body, ctype = self.pages[path]
        data = body.encode() if isinstance(body, str) else body
        etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=data, headers={"ETag": etag, "Content-Type": ctype})
