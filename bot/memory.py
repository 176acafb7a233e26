"""Thread memory: the turns of a conversation, trimmed to the model's context window by tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.llm.base import ChatMessage
from bot.messages import Incoming
from bot.models import Conversation, Turn

HISTORY_LIMIT = 200  # turns read from the database before trimming by tokens


def trim_to_budget(turns: Sequence[tuple[str, str, int]], budget: int) -> list[tuple[str, str, int]]:
    """Keep the most recent (role, content, tokens) turns whose tokens fit the budget, oldest first.

    >>> trim_to_budget([("user", "a", 5), ("assistant", "b", 5), ("user", "c", 5)], 11)
    [('assistant', 'b', 5), ('user', 'c', 5)]
    """
    kept: list[tuple[str, str, int]] = []
    used = 0
    for turn in reversed(turns):
        if used + turn[2] > budget:
            break
        kept.append(turn)
        used += turn[2]
    kept.reverse()
    while kept and kept[0][0] != "user":  # never start mid-exchange
        kept.pop(0)
    return kept


def truncate_tokens(text: str, budget: int, count: Callable[[str], int]) -> tuple[str, bool]:
    """Cut text to at most `budget` tokens (by halving), returning whether it was cut."""
    if count(text) <= budget:
        return text, False
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo], True


async def conversation_id(db: async_sessionmaker[AsyncSession], msg: Incoming) -> int:
    stmt = (pg_insert(Conversation).values(key=msg.conversation_key, platform=msg.platform,
                                           workspace=msg.workspace, channel=msg.channel, thread=msg.thread)
            .on_conflict_do_update(index_elements=["key"], set_={"key": msg.conversation_key})
            .returning(Conversation.id))
    async with db() as session, session.begin():
        return (await session.execute(stmt)).scalar_one()


async def history(db: async_sessionmaker[AsyncSession], conv_id: int) -> list[tuple[str, str, int]]:
    async with db() as session:
        rows = (await session.execute(
            select(Turn.role, Turn.content, Turn.tokens).where(Turn.conversation_id == conv_id)
            .order_by(Turn.id.desc()).limit(HISTORY_LIMIT))).all()
    return [tuple(r) for r in reversed(rows)]  # type: ignore[misc]


async def append(db: async_sessionmaker[AsyncSession], conv_id: int, turns: Sequence[Turn]) -> None:
    async with db() as session, session.begin():
        for turn in turns:
            turn.conversation_id = conv_id
            session.add(turn)


def as_messages(turns: Sequence[tuple[str, str, int]]) -> list[ChatMessage]:
    return [ChatMessage(role, content) for role, content, _ in turns]
