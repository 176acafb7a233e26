"""Retrieval: hybrid SQL, the ACL inside both arms, and filtered vector search that still returns k rows."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from knowledge.acl import Audience
from knowledge.retrieve import Tuning, build_sql, search, vector_features, vector_literal
from knowledge.termstats import refresh_term_stats
from tests.kb_rows import add_document, add_source, unit_vectors

N_CHUNKS = 10_000
READABLE = "channel:slack:CHR"


@pytest.fixture(scope="module")
async def big(ctx):
    """10,000 chunks with random unit vectors; every 50th (2%) readable by READABLE, 40% by 'team'."""
    vectors = unit_vectors(N_CHUNKS, seed=1)
    async with ctx.db() as session, session.begin():
        await session.execute(text("DROP INDEX ix_chunks_embedding_hnsw"))  # bulk load, then build (5x faster)
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
        await session.execute(text("CREATE INDEX ix_chunks_embedding_hnsw ON chunks USING hnsw "
                                   "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"))
        await refresh_term_stats(session)
    async with ctx.db() as session:
        await session.execute(text("ANALYZE chunks"))
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



async def test_index_path_with_raised_ef_search_still_returns_k(ctx, big):
    """Force the HNSW branch (no exact scan, planner kept on the index): ef_search rises with selectivity."""
    vectors, ords = big, np.arange(N_CHUNKS)
    mask = ords % 50 == 0
    found = 0
    for query in unit_vectors(10, seed=11):
        async with ctx.db() as session, session.begin():
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            await session.execute(text("SET LOCAL enable_bitmapscan = off"))
            hits = await search(session, "", Audience((READABLE,)), k=10, mode="dense", query_vector=query,
                                tuning=Tuning(exact_threshold=0))
            plan = "\n".join((await session.execute(text("EXPLAIN " + build_sql("dense", False)), {
                "p": [READABLE], "qt": "", "k": 10, "kd": 60, "thr": 0, "rrf": 60,
                "qv": vector_literal(query)})).scalars())
            ef = int((await session.execute(text("SHOW hnsw.ef_search"))).scalar_one())
        assert "ix_chunks_embedding_hnsw" in plan and ef == 1000  # 2% readable: the most pgvector allows
        got = await _ords(ctx, hits)
        assert len(got) == 10 and all(mask[o] for o in got)
        found += len(set(got) & set(exact_top(vectors, mask, query, 10)))
    assert found / 100 >= 0.95


async def test_pgvector_version_is_detected(ctx):
    async with ctx.db() as session:
        features = await vector_features(session)
    major_minor = tuple(int(x) for x in features.version.split(".")[:2])
    assert features.iterative_scan == (major_minor >= (0, 8))
    assert "hnsw.iterative_scan" in build_sql("hybrid", True)
    assert "hnsw.iterative_scan" not in build_sql("hybrid", False)


DOCS = {
    "vpn": ("VPN guide", "Connect to the office network with WireGuard. Import the profile, then toggle the tunnel."),
    "holiday": ("Holiday policy", "The office is closed between Christmas and New Year. Everyone gets the days off."),
    "keys": ("API keys", "Rotate API keys every ninety days with the keys rotate command; old keys stop working."),
    "lunch": ("Lunch menu", "Friday lunch is pizza. Vegetarian options are available on request."),
}


@pytest.fixture(scope="module")
async def texts(ctx):
    from knowledge.sync import embedder_for

    emb = embedder_for(ctx)
    async with ctx.db() as session, session.begin():
        sid = await add_source(session, "handbook")
        for ext, (title, body) in DOCS.items():
            await add_document(session, sid, ext, title, [body], emb.encode([f"{title}\n{body}"]), ["handbook"])
        secret = "WireGuard WireGuard keys for the secret tunnel"
        await add_document(session, sid, "hidden", "Hidden", [secret], emb.encode([secret]), ["channel:slack:X"])
        await refresh_term_stats(session)
    return emb


async def _search(ctx, emb, query, mode="hybrid", k=4, principals=("handbook",)):
    async with ctx.db() as session:
        return await search(session, query, Audience(principals), k=k, mode=mode, embedder=emb)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "fulltext"])
async def test_each_mode_finds_the_right_document_and_never_a_hidden_one(ctx, texts, mode):
    hits = await _search(ctx, texts, "How do I set up WireGuard for the office network?", mode=mode)
    assert hits[0].title == "VPN guide"
    assert all(h.title != "Hidden" for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if mode == "fulltext":
        assert hits[0].bm25 and hits[0].bm25 > 0
    else:
        assert hits[0].similarity and hits[0].similarity > 0.3


async def test_meaning_without_shared_words_comes_from_the_dense_arm(ctx, texts):
    query = "When do we get time off at the end of December?"
    assert (await _search(ctx, texts, query, mode="dense"))[0].title == "Holiday policy"
    assert (await _search(ctx, texts, query, mode="hybrid"))[0].title == "Holiday policy"


async def test_quotes_and_negation_follow_websearch_syntax(ctx, texts):
    titles = [h.title for h in await _search(ctx, texts, "keys -rotate", mode="fulltext")]
    assert "API keys" not in titles
    assert [h.title for h in await _search(ctx, texts, '"keys rotate command"', mode="fulltext")] == ["API keys"]
    assert await _search(ctx, texts, "the of and", mode="fulltext") == []  # only stop words: no full-text hits


async def test_hybrid_search_is_one_statement(ctx, texts):
    from sqlalchemy import event

    statements: list[str] = []
    engine = ctx.services["engine"].sync_engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    await _search(ctx, texts, "warm up")  # the pgvector version is detected once, on first use
    event.listen(engine, "before_cursor_execute", record)
    try:
        await _search(ctx, texts, "rotate API keys")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len([s for s in statements if not s.lstrip().upper().startswith(("BEGIN", "ROLLBACK", "COMMIT"))]) == 1


async def test_bad_mode_is_refused(ctx, texts):
    with pytest.raises(ValueError):
        await _search(ctx, texts, "x", mode="magic")
