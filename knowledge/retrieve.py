"""Hybrid retrieval in one SQL statement: vector top-k + BM25 full-text top-k, fused by reciprocal rank.

    hits = await search(session, "how do I rotate the API key?", audience, k=8, embedder=embedder)
    hits[0].title, hits[0].score, hits[0].similarity

The ACL filter (`acl && principals`) sits inside both arms of the SQL, never after, so a hidden chunk
cannot take a slot, shift a rank, or be counted.

Filtered vector search must still return k rows. pgvector 0.8+ has iterative index scans
(`hnsw.iterative_scan = relaxed_order`). Older versions (the embedded server ships 0.6.2) stop after
`hnsw.ef_search` candidates and filter afterwards, so a selective ACL would starve the result. There the
statement counts the authorised rows through the GIN acl index (bounded by `exact_threshold`): few rows
are ranked exactly without the vector index, many rows use the index with `ef_search` raised in
proportion to how selective the audience is. Both branches live in the same statement behind one-time
filters; the settings are applied with `set_config(..., is_local => true)` in the init-plan that
produces the query vector, which the executor evaluates before the index scan reads them.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from knowledge.acl import Audience

log = logging.getLogger(__name__)

MODES = ("hybrid", "dense", "fulltext")
RRF_K = 60
TF_ONE = 16.449340668  # 1 / ts_rank of a single occurrence (0.1 / 1.6449...): ts_rank -> saturating term count


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: int
    title: str
    url: str | None
    heading: str
    text: str
    score: float  # the mode's score: RRF (hybrid), cosine similarity (dense), BM25 (fulltext), reranker
    source: str
    external_id: str = ""
    similarity: float | None = None  # cosine similarity query <-> chunk: the relevance signal for answers
    bm25: float | None = None


@dataclass(frozen=True)
class Tuning:
    """Depths and constants; defaults chosen on SciFact (see README, Knowledge)."""

    k_dense: int = 60
    k_text: int = 60
    rrf_k: int = RRF_K
    exact_threshold: int = 2000  # at most this many authorised chunks: exact vector scan (no index)
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    common_df: float = 0.05  # terms in more than this share of chunks score candidates but do not find them
    rerank_depth: int = 30


class Embeds(Protocol):
    async def aencode(self, texts: list[str]) -> np.ndarray: ...


class Reranks(Protocol):
    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]: ...


@dataclass(frozen=True)
class VectorFeatures:
    version: str
    iterative_scan: bool


_FEATURES: dict[str, VectorFeatures] = {}


async def vector_features(session: AsyncSession) -> VectorFeatures:
    """The pgvector version of this database (detected once per database URL)."""
    key = str(session.bind.url) if session.bind is not None else ""
    if key not in _FEATURES:
        version = (await session.execute(text(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"))).scalar_one_or_none() or "0"
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        _FEATURES[key] = VectorFeatures(version, parts >= (0, 8))
        log.info("pgvector %s: %s", version, "iterative index scans" if parts >= (0, 8) else "exact/ef_search fallback")
    return _FEATURES[key]


_ONE_THREAD = threading.Lock()


def _encode_one(embedder: Any, query: str) -> np.ndarray:
    """One short text on one intra-op thread: with more, every layer waits at a barrier for a sibling thread
    that a busy CPU has descheduled (measured on 2 shared cores: 13 ms on one thread, 175-400 ms on two)."""
    import torch

    with _ONE_THREAD:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return embedder.encode([query])[0]
        finally:
            torch.set_num_threads(before)


async def embed_query(embedder: Embeds, query: str) -> np.ndarray:
    """The query's vector, off the event loop."""
    if hasattr(embedder, "encode"):
        return await asyncio.to_thread(_encode_one, embedder, query)
    return (await embedder.aencode([query]))[0]


def vector_literal(vec: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(vec, dtype=np.float32).ravel()) + "]"


async def search(session: AsyncSession, query: str, audience: Audience, *, k: int = 8, mode: str = "hybrid",
                 rerank: bool | None = None, embedder: Embeds | None = None, reranker: Reranks | None = None,
                 tuning: Tuning | None = None, query_vector: np.ndarray | None = None) -> list[Hit]:
    """The top `k` chunks the audience may read. `rerank=None` reranks when a reranker is given."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    tune = tuning or Tuning()
    use_rerank = reranker is not None and rerank is not False
    depth = max(k, tune.rerank_depth) if use_rerank else k
    params: dict[str, Any] = {"p": list(audience.principals), "qt": query, "k": depth, "rrf": tune.rrf_k,
                              "kd": max(depth, tune.k_dense), "kt": max(depth, tune.k_text),
                              "thr": tune.exact_threshold, "k1": tune.bm25_k1, "b": tune.bm25_b, "cdf": tune.common_df,
                              "strict": is_strict(query)}
    if mode != "fulltext":
        if query_vector is None:
            if embedder is None:
                raise ValueError("dense and hybrid search need an embedder")
            query_vector = await embed_query(embedder, query)
        params["qv"] = vector_literal(query_vector)
        features = await vector_features(session)
    else:
        features = VectorFeatures("", False)
    rows = (await session.execute(text(build_sql(mode, features.iterative_scan)), params)).mappings().all()
    hits = [Hit(chunk_id=r["id"], document_id=r["document_id"], title=r["title"], url=r["url"], heading=r["heading"],
                text=r["text"], score=float(r["score"]), source=r["source"], external_id=r["external_id"],
                similarity=None if r["similarity"] is None else float(r["similarity"]),
                bm25=None if r["bm25"] is None else float(r["bm25"])) for r in rows]
    if use_rerank and hits:
        assert reranker is not None
        head = await asyncio.to_thread(reranker.rerank, query, hits[:tune.rerank_depth])
        hits = head + hits[tune.rerank_depth:]
    return hits[:k]


def is_strict(query: str) -> bool:
    """Plain questions match any of their terms (BM25 ranks them); quotes or -negation ask for websearch's AND.

    >>> is_strict("what is covid-19?"), is_strict('"exact phrase"'), is_strict("vpn -draft")
    (False, True, True)
    """
    return '"' in query or re.search(r"(^|\s)-\w", query) is not None


def build_sql(mode: str, iterative: bool) -> str:
    """The one statement for `mode`. Bound: p (principals), qt (query text), qv (vector), k, kd, kt, thr, rrf."""
    ctes = ["q AS MATERIALIZED (SELECT websearch_to_tsquery('english', :qt) AS wq"
            + (", CAST(:qv AS vector) AS v" if mode != "fulltext" else "") + ")"]
    arms = []
    if mode != "fulltext":
        ctes += _dense_ctes(iterative)
        arms.append("SELECT id, row_number() OVER (ORDER BY dist) AS r, 1 - dist AS sim, NULL::float8 AS bm25 "
                    "FROM (SELECT * FROM dense_exact UNION ALL SELECT * FROM dense_ann) d")
    if mode != "dense":
        ctes += _text_ctes()
        arms.append("SELECT id, row_number() OVER (ORDER BY bm25 DESC) AS r, NULL::float8, bm25 FROM text_hits")
    score = {"hybrid": "sum(1.0 / (:rrf + r))", "dense": "max(sim)", "fulltext": "max(bm25)"}[mode]
    ctes.append(f"ranked AS ({' UNION ALL '.join(arms)})")
    ctes.append(f"fused AS (SELECT id, {score} AS score, max(bm25) AS bm25 FROM ranked "
                "GROUP BY id ORDER BY score DESC, id LIMIT :k)")
    similarity = "1 - (c.embedding <=> (SELECT v FROM q))" if mode != "fulltext" else "NULL::float8"
    return ("WITH " + ",\n".join(ctes) + f"""
SELECT c.id, c.document_id, d.title, d.url, d.external_id, c.heading, c.text, s.name AS source,
       f.score, f.bm25, {similarity} AS similarity
FROM fused f JOIN chunks c ON c.id = f.id JOIN documents d ON d.id = c.document_id JOIN sources s ON s.id = d.source_id
WHERE c.acl && CAST(:p AS varchar[])
ORDER BY f.score DESC, c.id""")


def _dense_ctes(iterative: bool) -> list[str]:
    # ef_search in proportion to the audience's share of all chunks (statistics: estimate only)
    knobs = ("set_config('hnsw.ef_search', GREATEST(:kd, 40)::text, true) AS ef, "
             "set_config('hnsw.iterative_scan', 'relaxed_order', true) AS it" if iterative else
             "set_config('hnsw.ef_search', LEAST(1000, GREATEST(:kd, 40, ceil(:kd * 4.0 * tot.n / "
             "GREATEST(aud.n, 1))))::int::text, true) AS ef FROM "
             "(SELECT coalesce(sum(chunks), 0) AS n FROM principal_stats "
             "WHERE principal = ANY(CAST(:p AS text[]))) aud, "
             "(SELECT coalesce(sum(chunks), 0) AS n FROM principal_stats) tot")
    return [
        "auth AS MATERIALIZED (SELECT count(*) AS n FROM "
        "(SELECT 1 FROM chunks WHERE acl && CAST(:p AS varchar[]) LIMIT :thr + 1) s)",
        f"knobs AS MATERIALIZED (SELECT {knobs})",
        # few authorised rows: exact distances over them (the "+ 0" keeps the planner off the HNSW index)
        "dense_exact AS (SELECT id, embedding <=> (SELECT v FROM q) AS dist FROM chunks "
        "WHERE acl && CAST(:p AS varchar[]) AND (SELECT n FROM auth) <= :thr "
        "ORDER BY (embedding <=> (SELECT v FROM q)) + 0 LIMIT :kd)",
        # many: the HNSW index, its knobs set by the init-plan that yields the query vector
        "dense_ann AS MATERIALIZED (SELECT id, embedding <=> (SELECT v FROM q) AS dist FROM chunks "
        "WHERE acl && CAST(:p AS varchar[]) AND (SELECT n FROM auth) > :thr "
        "ORDER BY embedding <=> (SELECT q.v FROM q, knobs) LIMIT :kd)",
    ]


def _text_ctes() -> list[str]:
    return [
        "st AS MATERIALIZED (SELECT GREATEST(coalesce(sum(chunks), 0), 1) AS n, "
        "GREATEST(coalesce(sum(lexemes)::float8 / NULLIF(sum(chunks), 0), 1), 1) AS avgdl "
        "FROM principal_stats WHERE principal = ANY(CAST(:p AS text[])))",
        "qlex AS MATERIALIZED (SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('english', :qt))) AS lex)",
        "terms AS MATERIALIZED (SELECT l.lex, quote_literal(l.lex)::tsquery AS tq, coalesce(d.df, 0) AS df, "
        "ln(1 + (GREATEST(st.n - coalesce(d.df, 0), 0) + 0.5) / (coalesce(d.df, 0) + 0.5)) AS idf "
        "FROM qlex l CROSS JOIN st LEFT JOIN (SELECT lexeme, sum(df) AS df FROM term_stats "
        "WHERE principal = ANY(CAST(:p AS text[])) AND lexeme IN (SELECT lex FROM qlex) GROUP BY lexeme) d "
        "ON d.lexeme = l.lex)",
        # very common terms (in more than common_df of the audience's chunks; never the rarest query term) do
        # not find candidates: they only score chunks that also hold a rarer term (one GIN scan, both quals)
        "gen AS MATERIALIZED (SELECT CAST(string_agg(quote_literal(lex), ' | ') AS tsquery) AS tq, "
        "GREATEST(:cdf * (SELECT n FROM st), (SELECT min(df) FROM terms WHERE df > 0)) AS cut FROM terms "
        "WHERE df <= GREATEST(:cdf * (SELECT n FROM st), (SELECT min(df) FROM terms WHERE df > 0)))",
        # one ts_rank per (chunk, term): the saturating term count; OFFSET 0 keeps it from being computed twice
        "text_hits AS (SELECT id, sum(idf * tf * (:k1 + 1) / (tf + :k1 * (1 - :b + :b * dl / (SELECT avgdl FROM st)))) "
        f"AS bm25 FROM (SELECT c.id, t.idf, ts_rank(c.tsv, t.tq, 0) * {TF_ONE} AS tf, length(c.tsv) AS dl "
        "FROM terms t JOIN chunks c ON c.tsv @@ t.tq WHERE t.df <= (SELECT cut FROM gen) "
        "AND c.acl && CAST(:p AS varchar[]) AND (NOT :strict OR c.tsv @@ (SELECT wq FROM q)) "
        f"UNION ALL SELECT c.id, t.idf, ts_rank(c.tsv, t.tq, 0) * {TF_ONE} AS tf, length(c.tsv) AS dl "
        "FROM terms t JOIN chunks c ON c.tsv @@ t.tq AND c.tsv @@ (SELECT tq FROM gen) "
        "WHERE t.df > (SELECT cut FROM gen) AND c.acl && CAST(:p AS varchar[]) "
        "AND (NOT :strict OR c.tsv @@ (SELECT wq FROM q)) OFFSET 0) x GROUP BY id ORDER BY bm25 DESC, id LIMIT :kt)",
    ]


async def readable_count(session: AsyncSession, audience: Audience, *, at_most: int = 1) -> int:
    """How many chunks the audience may read, counted up to `at_most` (is there anything to answer from?)."""
    return int((await session.execute(text(
        "SELECT count(*) FROM (SELECT 1 FROM chunks WHERE acl && CAST(:p AS varchar[]) LIMIT :n) s"),
        {"p": list(audience.principals), "n": at_most})).scalar_one())


def reranker_status(settings: Any) -> str:
    """`/sources status` line about the reranker (see knowledge.rerank)."""
    from knowledge.rerank import reranker_status as status

    return status(settings)
