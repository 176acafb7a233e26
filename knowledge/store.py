"""Writes documents and chunks; embeds only chunk texts whose content hash is not stored yet.

The caller owns the transaction (`async with db() as s, s.begin(): ...`), so one batch of documents,
their chunks and the source's cursor commit together or not at all.

    n = await upsert_document(session, source_id, doc, chunk_document(doc, count_tokens=emb.count_tokens),
                              embed=emb.aencode)          # "added" | "updated" | "unchanged"
    await delete_missing(session, source_id, {"a.md", "b.md"})
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.errors import UserError
from knowledge.models import Chunk, Document, KnowledgeMeta
from knowledge.termstats import add_chunk_stats, remove_chunk_stats
from knowledge.types import ChunkIn, SourceDocument, sha256

Embed = Callable[[list[str]], Awaitable[np.ndarray]]


@dataclass
class UpsertResult:
    """Per-batch outcome: document id -> "added" | "updated" | "unchanged", plus chunk counts."""

    status: dict[str, str] = field(default_factory=dict)
    chunks_written: int = 0
    chunks_embedded: int = 0
    embed_seconds: float = 0.0


def stored_hash(doc: SourceDocument, chunks: Sequence[ChunkIn]) -> str:
    """What `documents.content_hash` holds: the document and the exact chunks made of it."""
    return sha256(doc.content_hash + ":" + ",".join(c.content_hash for c in chunks))


async def known_documents(session: AsyncSession, source_id: int,
                          external_ids: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """external_id -> {"id", "hash", "meta"} for the source's documents (all, or just those named)."""
    stmt = select(Document.id, Document.external_id, Document.content_hash, Document.meta).where(
        Document.source_id == source_id)
    if external_ids is not None:
        stmt = stmt.where(Document.external_id.in_(list(external_ids)))
    rows = (await session.execute(stmt)).all()
    return {r.external_id: {"id": r.id, "hash": r.content_hash, "meta": r.meta or {}} for r in rows}


async def stored_embeddings(session: AsyncSession, hashes: Collection[str]) -> dict[str, Any]:
    if not hashes:
        return {}
    stmt = (select(Chunk.content_hash, Chunk.embedding).where(Chunk.content_hash.in_(list(hashes)))
            .distinct(Chunk.content_hash))
    return {h: e for h, e in (await session.execute(stmt)).all()}


async def upsert_documents(session: AsyncSession, source_id: int,
                           items: Sequence[tuple[SourceDocument, Sequence[ChunkIn]]], embed: Embed,
                           *, extra_meta: dict[str, Any] | None = None) -> UpsertResult:
    """Insert or replace documents and their chunks; embeddings of identical chunk texts are reused."""
    result = UpsertResult()
    known = await known_documents(session, source_id, [d.external_id for d, _ in items])
    todo = []
    for doc, chunks in items:
        digest = stored_hash(doc, chunks)
        if doc.external_id in known and known[doc.external_id]["hash"] == digest:
            result.status[doc.external_id] = "unchanged"
        else:
            todo.append((doc, chunks, digest))
    if not todo:
        return result
    wanted = {c.content_hash: c.embed_text for _, chunks, _ in todo for c in chunks}
    vectors = await stored_embeddings(session, wanted)
    missing = [h for h in wanted if h not in vectors]
    if missing:
        started = time.perf_counter()
        fresh = await embed([wanted[h] for h in missing])
        result.embed_seconds = time.perf_counter() - started
        vectors.update(zip(missing, fresh, strict=True))
        result.chunks_embedded = len(missing)
    replaced = [known[d.external_id]["id"] for d, _, _ in todo if d.external_id in known]
    await remove_chunk_stats(session, await chunk_ids(session, replaced))
    new_ids: list[int] = []
    for doc, chunks, digest in todo:
        values = dict(source_id=source_id, external_id=doc.external_id, title=doc.title[:2000], url=doc.url,
                      content_hash=digest, acl=list(doc.acl),
                      meta={**doc.meta, **(extra_meta or {}), "source_hash": doc.content_hash},
                      updated_at=doc.updated_at or func.now())
        stmt = pg_insert(Document).values(**values)
        stmt = stmt.on_conflict_do_update(index_elements=[Document.source_id, Document.external_id],
                                          set_={k: stmt.excluded[k] for k in values if k not in
                                                ("source_id", "external_id")}).returning(Document.id)
        doc_id = (await session.execute(stmt)).scalar_one()
        if doc.external_id in known:
            await session.execute(delete(Chunk).where(Chunk.document_id == doc_id))
        if chunks:
            new_ids += (await session.execute(insert(Chunk).returning(Chunk.id), [
                dict(document_id=doc_id, ord=c.ord, heading=c.heading, text=c.text, content_hash=c.content_hash,
                     tokens=c.tokens, embedding=vectors[c.content_hash], acl=list(doc.acl)) for c in chunks])
            ).scalars().all()
        result.chunks_written += len(chunks)
        result.status[doc.external_id] = "updated" if doc.external_id in known else "added"
    await add_chunk_stats(session, new_ids)
    return result


async def chunk_ids(session: AsyncSession, document_ids: Collection[int]) -> list[int]:
    if not document_ids:
        return []
    stmt = select(Chunk.id).where(Chunk.document_id.in_(list(document_ids)))
    return list((await session.execute(stmt)).scalars())


async def upsert_document(session: AsyncSession, source_id: int, doc: SourceDocument, chunks: list[ChunkIn],
                          embed: Embed) -> str:
    """One document: "added" | "updated" | "unchanged" (then nothing is embedded or written)."""
    result = await upsert_documents(session, source_id, [(doc, chunks)], embed)
    return result.status[doc.external_id]


async def delete_documents(session: AsyncSession, source_id: int, external_ids: Collection[str]) -> int:
    if not external_ids:
        return 0
    doomed = select(Document.id).where(Document.source_id == source_id, Document.external_id.in_(list(external_ids)))
    await remove_chunk_stats(session, await chunk_ids(session, list((await session.execute(doomed)).scalars())))
    stmt = delete(Document).where(Document.source_id == source_id,
                                  Document.external_id.in_(list(external_ids))).returning(Document.id)
    return len((await session.execute(stmt)).all())


async def delete_missing(session: AsyncSession, source_id: int, keep_external_ids: Collection[str]) -> int:
    """Delete the source's documents (and, by cascade, chunks) not in `keep_external_ids`; returns how many."""
    known = await known_documents(session, source_id)
    return await delete_documents(session, source_id, set(known) - set(keep_external_ids))


# --- the embedding model the index was built with ------------------------------------------------------

async def get_meta(session: AsyncSession, key: str) -> dict[str, Any] | None:
    row = await session.get(KnowledgeMeta, key)
    return dict(row.value) if row else None


async def set_meta(session: AsyncSession, key: str, value: dict[str, Any]) -> None:
    stmt = pg_insert(KnowledgeMeta).values(key=key, value=value)
    await session.execute(stmt.on_conflict_do_update(index_elements=[KnowledgeMeta.key], set_={"value": value}))


async def check_embedding_model(session: AsyncSession, model: str, dimension: Callable[[], int]) -> None:
    """Record the model on first use; a different model or dimension later is a clear error.

    `dimension` is asked only when the stored model name differs: reading it loads the model, which a
    sync with nothing to embed should not pay for."""
    meta = await get_meta(session, "embedding")
    if meta is not None and meta.get("model") == model:
        return
    dim = dimension()
    if meta is None:
        await set_meta(session, "embedding", {"model": model, "dim": dim})
    else:
        raise UserError(f"The knowledge index was built with the embedding model {meta.get('model')} "
                        f"(dimension {meta.get('dim')}), but the configured model is {model} (dimension {dim}). "
                        "Run `ladder reindex` to re-embed everything with the new model.")


async def column_dimension(session: AsyncSession) -> int:
    sql = text("select atttypmod from pg_attribute where attrelid = 'chunks'::regclass and attname = 'embedding'")
    return int((await session.execute(sql)).scalar_one())


async def reembed_all(session: AsyncSession, embed: Embed, model: str, dim: int, *, batch: int = 256,
                      progress: Callable[[int, int], Awaitable[None]] | None = None) -> int:
    """Re-embed every chunk with a new model inside the caller's transaction (all or nothing).

    A new dimension changes the column type and rebuilds the HNSW index.
    """
    total = (await session.execute(select(func.count()).select_from(Chunk))).scalar_one()
    if await column_dimension(session) != dim:
        await session.execute(text("drop index if exists ix_chunks_embedding_hnsw"))
        await session.execute(text("alter table chunks alter column embedding drop not null"))
        await session.execute(text(f"alter table chunks alter column embedding type vector({int(dim)}) using null"))
    done = 0
    last_id = 0
    while True:
        rows = (await session.execute(select(Chunk.id, Chunk.heading, Chunk.text).where(Chunk.id > last_id)
                                      .order_by(Chunk.id).limit(batch))).all()
        if not rows:
            break
        vectors = await embed([ChunkIn(0, r.heading, r.text, 0).embed_text for r in rows])
        await session.execute(update(Chunk), [{"id": r.id, "embedding": v} for r, v in zip(rows, vectors, strict=True)])
        done += len(rows)
        last_id = rows[-1].id
        if progress:
            await progress(done, total)
    await session.execute(text("alter table chunks alter column embedding set not null"))
    await session.execute(text("create index if not exists ix_chunks_embedding_hnsw on chunks using hnsw "
                               "(embedding vector_cosine_ops) with (m = 16, ef_construction = 64)"))
    await set_meta(session, "embedding", {"model": model, "dim": dim})
    return done
