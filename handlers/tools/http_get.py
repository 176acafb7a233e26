"""`http_get`: fetch a web page, only from hosts on `AGENT_HTTP_ALLOWLIST`, bounded in size and time.

Redirects are followed by hand so every hop is checked against the allowlist; the body is read up to
`AGENT_HTTP_MAX_BYTES` and cut there. What comes back is data for the model, never instructions.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import Field

from bot.safety import host_allowed, parse_allowlist
from handlers.tools import ToolContext, ToolError, tool

MAX_REDIRECTS = 3
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


def check_url(url: str, allowlist: tuple[str, ...]) -> None:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ToolError(f"only http and https URLs can be fetched, not {url!r}")
    if not host_allowed(url, allowlist):
        host = urlsplit(url).hostname or url
        allowed = ", ".join(allowlist) or "none (AGENT_HTTP_ALLOWLIST is empty)"
        raise ToolError(f"{host} is not on the allowlist of hosts I may fetch; allowed: {allowed}")


@tool("http_get", description="Fetch a web page or API response by URL (only allowlisted hosts).")
async def http_get(tc: ToolContext, url: Annotated[str, Field(description="http(s) URL", max_length=2000)]) -> str:
    settings = tc.ctx.settings
    allowlist = parse_allowlist(settings.agent_http_allowlist)
    limit = settings.agent_http_max_bytes
    async with httpx.AsyncClient(timeout=settings.agent_http_timeout_s, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allowlist)
            try:
                async with client.stream("GET", url) as resp:
                    if resp.is_redirect and resp.headers.get("location"):
                        url = urljoin(url, resp.headers["location"])
                        continue
                    body = bytearray()
                    async for chunk in resp.aiter_bytes():
                        body += chunk
                        if len(body) > limit:
                            break
                    kind = resp.headers.get("content-type", "")
                    status = resp.status_code
            except httpx.TimeoutException:
                raise ToolError(f"{url} did not answer within {settings.agent_http_timeout_s:g}s") from None
            except httpx.HTTPError as err:
                raise ToolError(f"could not fetch {url}: {type(err).__name__}") from None
            if kind and not kind.startswith(TEXT_TYPES):
                raise ToolError(f"{url} returned {kind}, not text")
            text = bytes(body[:limit]).decode("utf-8", errors="replace")
            cut = f"\n[cut at {limit:,} bytes]" if len(body) > limit else ""
            return f"HTTP {status} {url}\n{text}{cut}"
    raise ToolError(f"too many redirects (more than {MAX_REDIRECTS})")
