"""`/search QUERY`: the top chunks the reply's audience may read, with scores and sources.

    /search how do I rotate the API key?
    /search "exact phrase" -draft k=10 mode=fulltext

In a channel the results are those every member may read; in a DM, what you may read. Nothing is said
about documents the audience may not read, not even how many there are.
"""

from __future__ import annotations

from bot.commands import Opt
from bot.context import Context
from bot.errors import UserError
from bot.messages import Citation, Incoming, Reply
from bot.router import command
from knowledge.acl import audience_for
from knowledge.rag import retrieve
from knowledge.retrieve import MODES, Hit

SNIPPET_CHARS = 240


def render(hits: list[Hit], note: str = "") -> str:
    """Numbered results: title, source, scores, heading path and a snippet."""
    lines = [f"_{note}_"] if note else []
    if not hits:
        return "\n".join([*lines, "No results in the knowledge base."])
    for i, h in enumerate(hits, start=1):
        sim = f", similarity {h.similarity:.2f}" if h.similarity is not None else ""
        snippet = " ".join(h.text.split())
        snippet = snippet if len(snippet) <= SNIPPET_CHARS else snippet[:SNIPPET_CHARS].rsplit(" ", 1)[0] + "…"
        where = f" — {h.heading}" if h.heading and h.heading != h.title else ""
        lines.append(f"{i}. *{h.title}* ({h.source}{where}) score {h.score:.4f}{sim}\n   > {snippet}")
    return "\n".join(lines)


@command("search", help="Search the knowledge base (what this reply's readers may see)",
         usage="/search QUERY [k=8] [mode=hybrid|dense|fulltext]", free_text=True,
         options={"k": Opt(int, min=1, max=50, help="how many results"), "mode": Opt(choices=MODES)})
async def search_command(msg: Incoming, ctx: Context) -> Reply:
    assert msg.command is not None
    query = msg.command.rest.strip()
    if not query:
        raise UserError("Say what to look for: /search QUERY")
    audience = await audience_for(ctx, msg, private_reply=msg.is_dm)
    hits = await retrieve(ctx, query, audience, k=msg.command.options.get("k", 8),
                          mode=msg.command.options.get("mode", "hybrid"))
    cites = tuple(Citation(i, h.title, h.url, h.source) for i, h in enumerate(hits, start=1))
    return Reply(text=render(hits, audience.note if audience.degraded else ""), citations=cites,
                 data={"hits": [{"title": h.title, "score": h.score, "source": h.source, "chunk_id": h.chunk_id}
                                for h in hits]})
