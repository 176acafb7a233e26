"""Incremental sync of one source: connector -> chunk -> embed new content hashes -> upsert -> delete gone.

    report = await sync_source(ctx.db, "docs", embedder=embedder_for(ctx))
    print(report.summary())   # "docs: 3 added, 1 updated, 0 removed, 12 chunks embedded in 2.1 s ..."

Guarantees: one transaction per batch also saves the cursor (so it advances only after its batch commits);
documents the source no longer has are removed; documents whose content hash is unchanged cost no
embedding; a per-source Postgres advisory lock keeps two syncs of one source from interleaving; a sync
killed half-way and rerun ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from knowledge import store
from knowledge.chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP, chunk_document, signature
from knowledge.embedding import Embedder, default_model_path
from knowledge.models import Source
from knowledge.sources import Found, SourceInfo, make_connector
from knowledge.types import ChunkIn, SourceDocument

log = logging.getLogger(__name__)
LOCK_CLASS = 0x4C44  # advisory lock namespace "LD"; the object id is the source id
BATCH_DOCS = 32


@dataclass
class SyncReport:
    source: str
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_written: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=lambda: {"read": 0.0, "chunk": 0.0, "embed": 0.0,
                                                                "write": 0.0})

    def summary(self) -> str:
        where = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (f"{self.source}: {self.added} added, {self.updated} updated, {self.removed} removed, "
                f"{self.unchanged} unchanged{skipped}; {self.chunks_embedded} chunks embedded "
                f"({self.chunks_written} written) in {self.seconds:.1f} s ({where})")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Progress:
    source: str
    seen: int  # documents looked at so far
    changed: int  # documents written so far
    chunks_embedded: int
    done: bool = False


ProgressFn = Callable[[Progress], Awaitable[None]]


def model_id(embedder: Embedder) -> str:
    """A stable name for the model (the packaged default's path differs between installs)."""
    return "all-MiniLM-L6-v2" if embedder.model_name == str(default_model_path()) else embedder.model_name


def embedder_for(ctx: Any) -> Embedder:
    """The process's embedder (service name "embedder"), shared with retrieval."""
    return ctx.service("embedder", lambda: Embedder.default(ctx.settings.embedding_model))


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of a cursor patch; a None value deletes the key (e.g. a thread no longer tracked)."""
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


async def load_source(session: AsyncSession, source: str | int) -> Source:
    stmt = select(Source).where(Source.id == source if isinstance(source, int) else Source.name == source)
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise UserError(f"No source named '{source}'. See /sources list, or add one with /sources add.")
    return row


class _Lock:
    """Per-source advisory lock held by an open transaction on its own connection (released if we die)."""

    def __init__(self, db: async_sessionmaker[AsyncSession], source_id: int, name: str, wait: bool):
        self.db, self.source_id, self.name, self.wait = db, source_id, name, wait

    async def __aenter__(self) -> _Lock:
        self.session = self.db()
        fn = "pg_advisory_xact_lock" if self.wait else "pg_try_advisory_xact_lock"
        got = (await self.session.execute(text(f"select {fn}(:c, :o)"),
                                          {"c": LOCK_CLASS, "o": self.source_id})).scalar()
        if not self.wait and got is False:
            await self.session.close()
            raise UserError(f"Source '{self.name}' is already being synced; try again when that sync finishes.")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.close()  # rolls back: the lock goes with the transaction


async def sync_source(db: async_sessionmaker[AsyncSession], source: str | int, *, embedder: Embedder,
                      progress: ProgressFn | None = None, wait: bool = False,
                      batch_docs: int = BATCH_DOCS, services: dict[str, Any] | None = None) -> SyncReport:
    """Sync one source (by name or id). Raises UserError when it is already syncing (unless `wait`).

    `services` reach the connector (chat-channel sources read through `services["platform"]`, see
    `knowledge.sources.chat.platform_services`); `db` is always among them."""
    async with db() as session:
        row = await load_source(session, source)
        source_id, name = row.id, row.name
    async with _Lock(db, source_id, name, wait):
        try:
            return await _sync_locked(db, source_id, embedder, progress, batch_docs, services)
        except BaseException as err:
            async with db() as session, session.begin():
                row = await session.get(Source, source_id)
                if row is not None:
                    row.status, row.last_error = "error", (str(err) or type(err).__name__)[:1000]
            raise


async def _sync_locked(db: async_sessionmaker[AsyncSession], source_id: int, embedder: Embedder,
                       progress: ProgressFn | None, batch_docs: int,
                       services: dict[str, Any] | None = None) -> SyncReport:
    started = time.perf_counter()
    async with db() as session, session.begin():
        row = await session.get(Source, source_id)
        assert row is not None
        await store.check_embedding_model(session, model_id(embedder), lambda: embedder.dimension)
        row.status = "syncing"
        name, kind, config, cursor = row.name, row.kind, dict(row.config), dict(row.cursor or {})
        info = SourceInfo(name=row.name, platform=row.platform, workspace=row.workspace)
        known = {k: v["meta"] for k, v in (await store.known_documents(session, source_id)).items()}
    max_tokens = int(config.get("chunk_tokens", DEFAULT_MAX_TOKENS))
    overlap = int(config.get("chunk_overlap", DEFAULT_OVERLAP))
    sig = signature(max_tokens, overlap)
    if cursor.get("chunking") != sig:
        cursor = {"chunking": sig}  # re-read everything; unchanged chunk texts still reuse their embeddings
    cursor["docs"] = {k: v for k, v in (cursor.get("docs") or {}).items() if k in known}
    report = SyncReport(source=name)
    connector = make_connector(kind, config, info, {**(services or {}), "db": db})
    seen: set[str] = set()
    batch: list[Found] = []

    async def flush() -> None:
        nonlocal cursor
        if not batch:
            return
        t0 = time.perf_counter()
        items: list[tuple[SourceDocument, list[ChunkIn]]] = []
        for found in batch:
            assert found.doc is not None
            items.append((found.doc, chunk_document(found.doc, max_tokens=max_tokens, overlap=overlap,
                                                    count_tokens=embedder.count_tokens)))
        t1 = time.perf_counter()
        report.timings["chunk"] += t1 - t0
        async with db() as session, session.begin():
            result = await store.upsert_documents(session, source_id, items, embedder.aencode,
                                                  extra_meta={"chunking": sig})
            for found in batch:
                cursor = merge(cursor, found.cursor)
            row = await session.get(Source, source_id)
            assert row is not None
            row.cursor = cursor
        report.timings["embed"] += result.embed_seconds
        report.timings["write"] += time.perf_counter() - t1 - result.embed_seconds
        for status in result.status.values():
            setattr(report, status, getattr(report, status) + 1)
        report.chunks_embedded += result.chunks_embedded
        report.chunks_written += result.chunks_written
        batch.clear()
        if progress:
            await progress(Progress(name, len(seen), report.added + report.updated, report.chunks_embedded))

    scan: AsyncIterator[Found] = connector.scan(cursor)
    while True:
        t0 = time.perf_counter()
        try:
            found = await anext(scan)
        except StopAsyncIteration:
            break
        finally:
            report.timings["read"] += time.perf_counter() - t0
        if found.error is not None:
            report.skipped.append({"document": found.external_id, "error": found.error})
            continue
        seen.add(found.external_id)
        meta = known.get(found.external_id)
        if found.doc is None or (meta is not None and meta.get("source_hash") == found.doc.content_hash
                                 and meta.get("chunking") == sig):
            report.unchanged += 1
            if found.cursor:  # e.g. a touched file with the same content: remember its new stamp
                cursor = merge(cursor, found.cursor)
            continue
        batch.append(found)
        if len(batch) >= batch_docs:
            await flush()
    await flush()

    async with db() as session, session.begin():
        if connector.lists_all:
            report.removed = await store.delete_missing(session, source_id, seen)
            cursor["docs"] = {k: v for k, v in (cursor.get("docs") or {}).items() if k in seen}
        report.seconds = time.perf_counter() - started
        row = await session.get(Source, source_id)
        assert row is not None
        row.cursor, row.status, row.last_error = cursor, "ok", None
        row.errors, row.stats = report.skipped, report.as_dict()
        row.last_synced_at = datetime.now(UTC)
    if progress:
        await progress(Progress(name, len(seen), report.added + report.updated, report.chunks_embedded, done=True))
    log.info("sync %s", report.summary())
    return report


async def sync_all(db: async_sessionmaker[AsyncSession], *, embedder: Embedder,
                   progress: ProgressFn | None = None,
                   services: dict[str, Any] | None = None) -> list[SyncReport | str]:
    """Every source in turn; a source that fails gives its one-line error and the others still run."""
    async with db() as session:
        names = list((await session.execute(select(Source.name).order_by(Source.name))).scalars())
    out: list[SyncReport | str] = []
    for name in names:
        try:
            out.append(await sync_source(db, name, embedder=embedder, progress=progress, services=services))
        except UserError as err:
            out.append(f"{name}: {err}")
    return out


async def scheduled_sync(source_id: int) -> None:
    """The persisted APScheduler job for a source's cron schedule (see knowledge.admin.set_schedule)."""
    from bot import scheduler
    from knowledge.sources.chat import platform_services

    ctx = scheduler.current()
    try:
        async with platform_services(ctx) as services:
            report = await sync_source(ctx.db, source_id, embedder=embedder_for(ctx), services=services)
        log.info("scheduled sync: %s", report.summary())
    except UserError as err:
        log.warning("scheduled sync of source %s not run: %s", source_id, err)


async def reindex(db: async_sessionmaker[AsyncSession], *, embedder: Embedder,
                  progress: Callable[[int, int], Awaitable[None]] | None = None) -> int:
    """Re-embed every chunk with the configured model (one transaction; all sync locks held meanwhile)."""
    async with db() as session, session.begin():
        ids = list((await session.execute(select(Source.id))).scalars())
        for sid in ids:
            got = (await session.execute(text("select pg_try_advisory_xact_lock(:c, :o)"),
                                         {"c": LOCK_CLASS, "o": sid})).scalar()
            if not got:
                raise UserError("A sync is running; run `ladder reindex` again when it finishes.")
        return await store.reembed_all(session, embedder.aencode, model_id(embedder), embedder.dimension,
                                       progress=progress)
