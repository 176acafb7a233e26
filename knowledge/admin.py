"""Managing sources: add, remove, list, status, and their cron schedules (persisted APScheduler jobs).

    await add_source(ctx, "docs", kind="folder", config={"path": "docs"}, schedule="0 * * * *")
    print(await status_text(ctx))
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bot import scheduler
from bot.errors import UserError
from knowledge.models import Chunk, Document, Source
from knowledge.sources import SourceInfo, connector_class, kinds
from knowledge.sync import load_source

SYNC_JOB = "knowledge.sync:scheduled_sync"
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
_KV = re.compile(r"^(?:--)?([A-Za-z_][\w-]*)=(.*)$", re.S)


def parse_config(tokens: list[str]) -> dict[str, Any]:
    """`kind=folder path=docs urls=a,b` -> dict; a list for `urls`. Pure."""
    out: dict[str, Any] = {}
    for token in tokens:
        match = _KV.match(token)
        if not match:
            raise UserError(f"Expected key=value, got '{token}'. Example: /sources add docs kind=folder path=docs")
        key, value = match.group(1).replace("-", "_"), match.group(2)
        out[key] = [u for u in value.split(",") if u] if key == "urls" else value
    return out


def job_id(source_id: int) -> str:
    return f"sync:{source_id}"


def set_schedule(ctx: Any, source_id: int, expr: str | None) -> None:
    """Persist (or drop) the source's cron job in the Postgres job store, so it survives restarts."""
    sched = scheduler.get(ctx, start=False)
    if not sched.running:
        sched.start(paused=True)  # a paused scheduler still writes jobs to the store at once
    if expr:
        sched.add_job(SYNC_JOB, trigger=scheduler.cron_trigger(expr), args=[source_id], id=job_id(source_id),
                      replace_existing=True, name=f"sync source {source_id}")
    elif sched.get_job(job_id(source_id)):
        sched.remove_job(job_id(source_id))


async def add_source(ctx: Any, name: str, *, kind: str, config: dict[str, Any], schedule: str | None = None,
                     platform: str = "console", workspace: str = "local") -> Source:
    if not _NAME.match(name):
        raise UserError(f"Bad source name '{name}': use letters, digits, '-', '_' or '.' (up to 64).")
    cls = connector_class(kind)
    config = cls.check_config(dict(config))
    if schedule:
        scheduler.cron_trigger(schedule)  # validate before writing anything
    try:
        async with ctx.db() as session, session.begin():
            row = Source(name=name, kind=kind, config=config, schedule=schedule, platform=platform,
                         workspace=workspace)
            session.add(row)
            await session.flush()
    except IntegrityError:
        raise UserError(f"A source named '{name}' already exists; pick another name or remove it first.") from None
    if schedule:
        set_schedule(ctx, row.id, schedule)
    cls(config, SourceInfo(name, platform, workspace))  # constructible with the stored config
    return row


async def remove_source(ctx: Any, name: str) -> int:
    """Delete the source with its documents and chunks and its schedule; returns the documents removed."""
    async with ctx.db() as session, session.begin():
        row = await load_source(session, name)
        docs = (await session.execute(select(func.count()).select_from(Document)
                                      .where(Document.source_id == row.id))).scalar_one()
        await session.delete(row)
        source_id = row.id
    set_schedule(ctx, source_id, None)
    return int(docs)


async def source_rows(ctx: Any) -> list[dict[str, Any]]:
    """Each source with its document and chunk counts."""
    doc_counts = select(Document.source_id, func.count().label("docs")).group_by(Document.source_id).subquery()
    chunk_counts = (select(Document.source_id, func.count(Chunk.id).label("chunks"))
                    .join(Chunk, Chunk.document_id == Document.id).group_by(Document.source_id).subquery())
    stmt = (select(Source, func.coalesce(doc_counts.c.docs, 0), func.coalesce(chunk_counts.c.chunks, 0))
            .outerjoin(doc_counts, doc_counts.c.source_id == Source.id)
            .outerjoin(chunk_counts, chunk_counts.c.source_id == Source.id).order_by(Source.name))
    async with ctx.db() as session:
        return [{"source": s, "docs": d, "chunks": c} for s, d, c in (await session.execute(stmt)).all()]


def describe(source: Source) -> str:
    where = source.config.get("path") or source.config.get("channel") or ", ".join(source.config.get("urls", []))
    sched = f", schedule {source.schedule}" if source.schedule else ""
    return f"{source.name} ({source.kind}: {where}{sched})"


async def list_text(ctx: Any, *, with_counts: bool = True) -> str:
    """Counts only for admins: how much a private channel holds is itself private."""
    rows = await source_rows(ctx)
    if not rows:
        return ("No knowledge sources yet. Add one, e.g. /sources add docs kind=folder path=docs "
                f"(kinds: {', '.join(kinds())}).")
    if not with_counts:
        return "\n".join(f"• {describe(r['source'])}" for r in rows)
    return "\n".join(f"• {describe(r['source'])}: {r['docs']} documents, {r['chunks']} chunks" for r in rows)


def reranker_status(ctx: Any) -> str:
    """Hook for retrieval: `knowledge.retrieve.reranker_status(settings) -> str` when K2's module provides it."""
    try:
        fn = getattr(importlib.import_module("knowledge.retrieve"), "reranker_status", None)
    except ImportError:
        fn = None
    if fn is None:
        return "reranker: unknown (retrieval module not installed)"
    return str(fn(ctx.settings))


async def status_text(ctx: Any, name: str | None = None) -> str:
    rows = await source_rows(ctx)
    if name:
        rows = [r for r in rows if r["source"].name == name]
        if not rows:
            raise UserError(f"No source named '{name}'. See /sources list.")
    lines = []
    for r in rows:
        s: Source = r["source"]
        when = f"{s.last_synced_at:%Y-%m-%d %H:%M} UTC" if s.last_synced_at else "never"
        lines.append(f"• {describe(s)}: {s.status}, last sync {when}, {r['docs']} documents, {r['chunks']} chunks")
        if s.stats:
            st = s.stats
            lines.append(f"  last report: {st.get('added', 0)} added, {st.get('updated', 0)} updated, "
                         f"{st.get('removed', 0)} removed, {st.get('chunks_embedded', 0)} chunks embedded "
                         f"in {st.get('seconds', 0):.1f} s")
        if s.last_error:
            lines.append(f"  error: {s.last_error}")
        for e in (s.errors or [])[:10]:
            lines.append(f"  skipped {e['document']}: {e['error']}")
        if len(s.errors or []) > 10:
            lines.append(f"  … and {len(s.errors) - 10} more skipped")
    if not lines:
        lines.append("No knowledge sources yet.")
    lines.append(reranker_status(ctx))
    return "\n".join(lines)
