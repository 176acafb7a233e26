"""BM25 statistics inside Postgres: document frequency per (ACL principal, lexeme), chunks and length per principal.

Postgres's `ts_rank` has no IDF term, so full-text ranking alone is weaker than BM25. Retrieval scores
BM25 in SQL with these tables. Frequencies are kept per principal so a score only counts documents the
audience may read (hidden documents do not even shift the numbers shown by `/search`).

The store keeps them current in the same transaction as its chunk writes:

    await add_chunk_stats(session, new_chunk_ids)        # after inserting chunks
    await remove_chunk_stats(session, doomed_chunk_ids)  # before deleting chunks (or changing their ACL)
    await refresh_term_stats(session)                    # full rebuild: after bulk loads, reindex, repair

Stale statistics only change scores slightly; they never decide who may read what.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('ladder.term_stats'))"

_TERMS = """
INSERT INTO term_stats (principal, lexeme, df)
SELECT p, lex, {sign} count(*) FROM chunks c, unnest(c.acl) p, unnest(tsvector_to_array(c.tsv)) lex
{where} GROUP BY p, lex ORDER BY p, lex
ON CONFLICT (principal, lexeme) DO UPDATE SET df = term_stats.df + excluded.df
"""
_PRINCIPALS = """
INSERT INTO principal_stats (principal, chunks, lexemes)
SELECT p, {sign} count(*), {sign} coalesce(sum(length(c.tsv)), 0) FROM chunks c, unnest(c.acl) p
{where} GROUP BY p ORDER BY p
ON CONFLICT (principal) DO UPDATE SET chunks = principal_stats.chunks + excluded.chunks,
                                      lexemes = principal_stats.lexemes + excluded.lexemes
"""


async def refresh_term_stats(session: AsyncSession) -> None:
    """Rebuild all statistics from the chunks table (seconds for tens of thousands of chunks)."""
    await session.execute(text(_LOCK))
    await session.execute(text("DELETE FROM term_stats"))
    await session.execute(text("DELETE FROM principal_stats"))
    await session.execute(text(_TERMS.format(sign="", where="")))
    await session.execute(text(_PRINCIPALS.format(sign="", where="")))


async def add_chunk_stats(session: AsyncSession, chunk_ids: list[int]) -> None:
    """Count chunks that were just inserted (or whose ACL was just set)."""
    await _apply(session, chunk_ids, "")


async def remove_chunk_stats(session: AsyncSession, chunk_ids: list[int]) -> None:
    """Uncount chunks that are about to be deleted (or whose ACL is about to change)."""
    await _apply(session, chunk_ids, "-")
    await session.execute(text("DELETE FROM term_stats WHERE df <= 0"))
    await session.execute(text("DELETE FROM principal_stats WHERE chunks <= 0"))


async def _apply(session: AsyncSession, chunk_ids: list[int], sign: str) -> None:
    if not chunk_ids:
        return
    where = "WHERE c.id = ANY(CAST(:ids AS bigint[]))"
    await session.execute(text(_LOCK))
    await session.execute(text(_TERMS.format(sign=sign, where=where)), {"ids": list(chunk_ids)})
    await session.execute(text(_PRINCIPALS.format(sign=sign, where=where)), {"ids": list(chunk_ids)})
