"""Questions answered from the knowledge base, for the reply's audience: the glue `/ask` calls.

    audience = await rag_audience(ctx, msg, chan)  # None: RAG off here, or nothing the audience may read
    if audience is not None:
        reply = await rag_reply(ctx, msg, question, audience, model)

The audience is decided by who will see the reply (`knowledge.acl`): a DM may use what the asker may
read; a channel only what every member may read. When membership could not be determined the answer uses
public documents only and says so.
"""

from __future__ import annotations

from typing import Any

from bot import memory
from bot.llm.base import ChatMessage, ChatModel
from bot.messages import Incoming, Reply
from bot.models import ChannelSettings, Turn
from knowledge.acl import Audience, audience_for
from knowledge.answer import answer_question
from knowledge.rerank import get_reranker
from knowledge.retrieve import Hit, readable_count, search

HISTORY_SHARE = 4  # at most 1/4 of the window goes to earlier turns of the thread


def embedder(ctx: Any) -> Any:
    from knowledge.sync import embedder_for

    return embedder_for(ctx)


async def rag_audience(ctx: Any, msg: Incoming, chan: ChannelSettings) -> Audience | None:
    """The audience to answer for, when this channel uses the knowledge base and it has something for them."""
    if not chan.rag_enabled:
        return None
    audience = await audience_for(ctx, msg, private_reply=msg.is_dm)
    if audience.degraded:
        return audience  # the user must hear that the answer is public-only, even if nothing is found
    async with ctx.db() as session:
        return audience if await readable_count(session, audience) else None


async def retrieve(ctx: Any, query: str, audience: Audience, *, k: int, mode: str = "hybrid") -> list[Hit]:
    async with ctx.db() as session:
        return await search(session, query, audience, k=k, mode=mode, embedder=embedder(ctx),
                            reranker=get_reranker(ctx))


async def rag_reply(ctx: Any, msg: Incoming, question: str, audience: Audience, model: ChatModel, *,
                    strategy: str = "auto") -> Reply:
    """Retrieve for the audience, answer with citations, remember the turn in the thread.

    `model` is the channel's, prepared (`bot.channels.chat_model`)."""
    settings = ctx.settings
    hits = await retrieve(ctx, question, audience, k=settings.rag_top_k)
    conv = await memory.conversation_id(ctx.db, msg)
    past = memory.trim_to_budget(await memory.history(ctx.db, conv), model.context_length // HISTORY_SHARE)
    history: list[ChatMessage] = memory.as_messages(past)
    result = await answer_question(model, question, hits, min_similarity=settings.rag_min_similarity,
                                   max_tokens=settings.max_answer_tokens, strategy=strategy, history=history)
    text = f"_{audience.note}_\n{result.text}" if audience.degraded else result.text
    await memory.append(ctx.db, conv, [
        Turn(role="user", content=question, tokens=model.count_tokens(question), user_id=msg.user),
        Turn(role="assistant", content=result.text, tokens=model.count_tokens(result.text), model=model.name),
    ])
    reply = Reply(text=text, citations=result.citations, thread=msg.thread, usage=result.usage,
                  model=result.model, backend=result.backend,
                  data={"found": result.found, "grounded": result.grounded, "model_calls": result.calls,
                        "degraded": audience.degraded})
    return reply.with_footer(f"{result.model} via {result.backend}") if result.calls else reply
