"""In-run baselines for bench/knowledge.py, on the same dataset, queries and index.

- quality: BM25 (`bm25s`, Snowball-stemmed when PyStemmer is installed) over whole documents (title + text),
  and exact dense search in numpy over the chunk vectors stored for the eval source (max over a
  document's chunks: the same index, searched brute-force);
- latency: one client, embedding the query + the numpy search over all chunk vectors held in memory;
- ingest: the raw sentence-transformers `model.encode` on a fixed sample of the stored chunk texts,
  at the process's thread count and at 1 and 2 intra-op threads (also for single short queries).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

WARMUP = 5


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass
class StoredIndex:
    doc_ids: list[str]  # external id per document (row of a reduceat segment)
    starts: np.ndarray  # first chunk row of each document (chunks sorted by document)
    vectors: np.ndarray  # (chunks, dim) float32, unit length
    embed_texts: list[str]  # what was embedded, in chunk-id order


async def stored_index(ctx: Any, source: str) -> StoredIndex:
    """Every chunk vector of `source`, grouped by document."""
    from sqlalchemy import select

    from knowledge.models import Chunk, Document, Source
    from knowledge.types import ChunkIn

    async with ctx.db() as session:
        rows = (await session.execute(
            select(Chunk.id, Document.external_id, Chunk.heading, Chunk.text, Chunk.embedding)
            .join(Document, Document.id == Chunk.document_id).join(Source, Source.id == Document.source_id)
            .where(Source.name == source).order_by(Chunk.id))).all()
    texts = [ChunkIn(0, r.heading, r.text, 0).embed_text for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (rows[i].external_id, rows[i].id))
    vectors = np.asarray([np.asarray(rows[i].embedding, dtype=np.float32) for i in order], dtype=np.float32)
    doc_ids, starts = [], []
    for pos, i in enumerate(order):
        if not doc_ids or doc_ids[-1] != rows[i].external_id:
            doc_ids.append(rows[i].external_id)
            starts.append(pos)
    return StoredIndex(doc_ids, np.asarray(starts), vectors, texts)


def exact_rank(index: StoredIndex, qv: np.ndarray, depth: int = 100) -> list[list[str]]:
    """Documents by their best chunk's cosine similarity, for each row of `qv` (exact, no index)."""
    sims = np.atleast_2d(qv).astype(np.float32) @ index.vectors.T
    per_doc = np.maximum.reduceat(sims, index.starts, axis=1)
    top = np.argsort(-per_doc, axis=1, kind="stable")[:, :depth]
    return [[index.doc_ids[j] for j in row] for row in top]


def bm25_index(data: Any) -> tuple[Any, Any, list[str], dict[str, Any]]:
    import bm25s

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    ids, texts = [], []
    for line in (data.path / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            ids.append(str(row["_id"]))
            texts.append(f"{row.get('title') or ''}\n{row.get('text') or ''}")
    t0 = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    info = {"stemmer": "snowball english (PyStemmer)" if stemmer else "none", "documents": len(ids),
            "index_s": round(time.perf_counter() - t0, 2), "bm25s": bm25s.__version__}
    return retriever, stemmer, ids, info


def bm25_rank(retriever: Any, stemmer: Any, ids: list[str], queries: list[str], depth: int = 100) -> list[list[str]]:
    import bm25s

    tokens = bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False)
    docs, _ = retriever.retrieve(tokens, k=min(depth, len(ids)), show_progress=False, n_threads=1)
    return [[ids[j] for j in row] for row in docs]


async def quality(ctx: Any, data: Any, index: StoredIndex, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Baseline rows and hybrid / best baseline per metric."""
    from knowledge.eval import METRICS, score_run
    from knowledge.sync import embedder_for

    qids, texts = list(data.queries), list(data.queries.values())
    qv = await embedder_for(ctx).aencode(texts)  # batched, as run_modes embeds them
    retriever, stemmer, ids, bm25_info = bm25_index(data)
    base = [{"mode": "baseline: bm25s (docs)", **score_run(dict(zip(qids, bm25_rank(retriever, stemmer, ids, texts),
                                                                      strict=True)), data.qrels)},
            {"mode": "baseline: exact dense", **score_run(dict(zip(qids, exact_rank(index, qv), strict=True)),
                                                          data.qrels)}]
    hybrid = next(r for r in rows if r["mode"] == "hybrid")
    ratio = {m: round(hybrid[m] / max(b[m] for b in base), 3) for m in METRICS}
    return {"rows": base, "hybrid_over_best": ratio, "bm25": bm25_info}


async def latency(ctx: Any, data: Any, index: StoredIndex) -> dict[str, Any]:
    """The bench's single-client loop with numpy in place of the SQL (and bm25s, which needs no embedding)."""
    from knowledge.eval import percentiles
    from knowledge.retrieve import embed_query
    from knowledge.sync import embedder_for

    emb, queries, out = embedder_for(ctx), list(data.queries.values()), {}
    embed_ms, search_ms, total_ms = [], [], []
    for i, query in enumerate(queries[:WARMUP] + queries):
        t0 = time.perf_counter()
        vector = await embed_query(emb, query)
        t1 = time.perf_counter()
        exact_rank(index, vector, depth=10)
        t2 = time.perf_counter()
        if i >= WARMUP:
            embed_ms.append((t1 - t0) * 1000)
            search_ms.append((t2 - t1) * 1000)
            total_ms.append((t2 - t0) * 1000)
    out["numpy exact dense"] = {"total": percentiles(total_ms), "embed": percentiles(embed_ms),
                                "sql": percentiles(search_ms)}
    retriever, stemmer, ids, _ = bm25_index(data)
    took = []
    for i, query in enumerate(queries[:WARMUP] + queries):
        t0 = time.perf_counter()
        bm25_rank(retriever, stemmer, ids, [query], depth=10)
        if i >= WARMUP:
            took.append((time.perf_counter() - t0) * 1000)
    out["bm25s (docs)"] = {"total": percentiles(took), "embed": percentiles([0.0]), "sql": percentiles(took)}
    return out


def _encode_rate(model: Any, texts: list[str], threads: int | None, batch_size: int) -> dict[str, Any]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model.encode(texts[:batch_size], batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        started, load_before = time.perf_counter(), load()
        model.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(before)
    return {"threads": threads or before, "chunks": len(texts), "seconds": round(seconds, 1),
            "chunks_per_s": round(len(texts) / seconds, 2), "load_before": load_before, "load_after": load()}


def _single_query_ms(model: Any, queries: list[str], threads: int) -> dict[str, Any]:
    import torch

    from knowledge.eval import percentiles

    before, took = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for i, q in enumerate(queries[:WARMUP] + queries):
            t0 = time.perf_counter()
            model.encode([q], normalize_embeddings=True, show_progress_bar=False)
            if i >= WARMUP:
                took.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(before)
    return {"threads": threads, "queries": len(queries), **percentiles(took), "load_after": load()}


def ingest(ctx: Any, data: Any, index: StoredIndex, ingest_row: dict[str, Any], sample: int,
           thread_sample: int) -> dict[str, Any]:
    """Raw `model.encode` throughput on the first `sample` stored chunk texts vs the sync's chunks/s."""
    import torch

    from knowledge.embedding import DEFAULT_BATCH
    from knowledge.sync import embedder_for

    model = embedder_for(ctx).model
    texts = index.embed_texts[:sample]
    raw = _encode_rate(model, texts, None, DEFAULT_BATCH)
    threads = [_encode_rate(model, index.embed_texts[:thread_sample], n, DEFAULT_BATCH) for n in (1, 2)]
    queries = list(data.queries.values())[:100]
    single = [_single_query_ms(model, queries, n) for n in (1, 2)]
    out: dict[str, Any] = {"raw_encode": raw, "torch_threads_default": torch.get_num_threads(),
                           "batch_encode_by_threads": threads, "single_query_by_threads": single}
    chunks, embed_s = ingest_row.get("chunks_embedded") or 0, (ingest_row.get("where_s") or {}).get("embed")
    if chunks and ingest_row.get("seconds"):
        model_s = chunks / raw["chunks_per_s"]  # raw model time for the whole corpus, at the sample's rate
        out["ladder_chunks_per_s"] = ingest_row["chunks_per_s"]
        out["ladder_over_raw"] = round(ingest_row["chunks_per_s"] / raw["chunks_per_s"], 3)
        out["raw_model_s_for_all_chunks"] = round(model_s, 1)
        out["raw_model_share_of_ingest"] = round(model_s / ingest_row["seconds"], 3)
        if embed_s:
            out["raw_model_over_ladder_embed_step"] = round(model_s / embed_s, 3)
    return out
