"""`search_knowledge`: the team's synced documents, filtered by what the reply's audience may read.

The audience is that of the asking human (`knowledge.audience_for`): in a channel, public documents and
that channel's own; in a DM, everything the asker may read. The model cannot widen it: it only chooses
the query. Results are numbered so the answer can cite them; each result becomes a `Citation`.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

from pydantic import Field

from bot.messages import Citation
from handlers.tools import ToolContext, ToolError, tool

SNIPPET_CHARS = 700


def knowledge_api(name: str) -> Any:
    """`knowledge.<name>` from the package's public face (falls back to the module that defines it)."""
    import knowledge

    fn = getattr(knowledge, name, None)
    if fn is None:
        module = {"audience_for": "knowledge.acl", "search": "knowledge.retrieve"}[name]
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise ToolError("the knowledge base is not available in this installation") from None
    return fn


def embedder(tc: ToolContext) -> Any:
    from knowledge.embedding import Embedder

    return tc.ctx.service("embedder", lambda: Embedder.default(tc.ctx.settings.embedding_model))


@tool("search_knowledge", description="Search the team's documents and chat history the user may read. "
      "Returns numbered passages; cite them as [n].")
async def search_knowledge(tc: ToolContext,
                           query: Annotated[str, Field(description="what to look for", min_length=1, max_length=500)],
                           k: Annotated[int, Field(description="how many passages", ge=1, le=10)] = 5) -> str:
    audience = await knowledge_api("audience_for")(tc.ctx, tc.msg, private_reply=tc.msg.is_dm)
    if getattr(audience, "note", "") and audience.note not in tc.notes:
        tc.notes.append(audience.note)
    search = knowledge_api("search")
    async with tc.ctx.db() as session:
        hits = await search(session, query, audience, k=k, embedder=embedder(tc))
    if not hits:
        return f"No documents matched {query!r}."
    return "\n\n".join(_passage(tc, hit) for hit in hits)


def _passage(tc: ToolContext, hit: Any) -> str:
    """One numbered passage; the same document searched twice keeps its first number."""
    title = getattr(hit, "title", "") or "untitled"
    url = getattr(hit, "url", None)
    index = next((c.index for c in tc.citations if (c.title, c.url) == (title, url)), None)
    if index is None:
        index = len(tc.citations) + 1
        tc.citations.append(Citation(index, title, url, getattr(hit, "source", None)))
    heading = getattr(hit, "heading", "") or ""
    text = (getattr(hit, "text", "") or "")[:SNIPPET_CHARS]
    where = f"{title} — {heading}" if heading and heading != title else title
    return f"[{index}] {where}\n{text}"
