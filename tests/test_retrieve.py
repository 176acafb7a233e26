"""Retrieval: hybrid SQL, the ACL inside both arms, and filtered vector search that still returns k rows."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import text

from knowledge.acl import Audience
from knowledge.retrieve import Tuning, search, vector_features, vector_literal
from knowledge.termstats import refresh_term_stats
from tests.kb_rows import add_source, unit_vectors

N_CHUNKS = 10_000
READABLE = "channel:slack:CHR"


@pytest.fixture(scope="module")
async def big(ctx):
    """10,000 chunks with random unit vectors; every 50th (2%) readable by READABLE, 40% by 'team'."""
    vectors = unit_vectors(N_CHUNKS, seed=1)
    t0 = time.monotonic()
    async with ctx.db() as session, session.begin():
        sid = await add_source(session, "random")
        doc = (await session.execute(text(
            "INSERT INTO documents (source_id, external_id, title, content_hash, acl) "
            "VALUES (:s, 'all', 'random', 'x', ARRAY['public']) RETURNING id"), {"s": sid})).scalar_one()
        rows = [{"d": doc, "o": i, "x": f"chunk {i}", "v": vector_literal(vectors[i]),
                 "a": [READABLE] if i % 50 == 0 else ["team"] if i % 5 in (1, 2) else ["channel:slack:OTHER"]}
                for i in range(N_CHUNKS)]
        await session.execute(text(
            "INSERT INTO chunks (document_id, ord, text, content_hash, tokens, embedding, acl) "
            "VALUES (:d, :o, :x, md5(:x), 2, CAST(:v AS vector), :a)"), rows)
        await refresh_term_stats(session)
    async with ctx.db() as session:
        await session.execute(text("ANALYZE chunks"))
    print(f"inserted {N_CHUNKS} in {time.monotonic() - t0:.1f}s")
    return vectors


def exact_top(vectors: np.ndarray, mask: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    sims = vectors @ query
    sims[~mask] = -np.inf
    return [int(i) for i in np.argsort(-sims)[:k]]


async def _ords(ctx, hits) -> list[int]:
    async with ctx.db() as session:
        rows = (await session.execute(text("SELECT id, ord FROM chunks WHERE id = ANY(:ids)"),
                                      {"ids": [h.chunk_id for h in hits]})).all()
    by_id = dict(rows)
    return [by_id[h.chunk_id] for h in hits]


@pytest.mark.parametrize("principal,share", [(READABLE, 0.02), ("team", 0.4)])
async def test_filtered_vector_search_returns_k_authorised_with_recall(ctx, big, principal, share):
    vectors = big
    ords = np.arange(N_CHUNKS)
    mask = ords % 50 == 0 if principal == READABLE else (ords % 5 == 1) | (ords % 5 == 2)
    assert abs(mask.mean() - share) < 0.01
    k, found, expected = 10, 0, 0
    queries = unit_vectors(10, seed=7)
    for query in queries:
        async with ctx.db() as session:
            hits = await search(session, "", Audience((principal,)), k=k, mode="dense", query_vector=query)
        got = await _ords(ctx, hits)
        assert len(got) == k
        assert all(mask[o] for o in got)  # only authorised rows
        want = exact_top(vectors, mask, query, k)
        found += len(set(got) & set(want))
        expected += k
    assert found / expected >= 0.95

