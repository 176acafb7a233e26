"""Knowledge sources and sync: `/sources list|add|remove|status`, `/sync [SOURCE]`.

    /sources add docs kind=folder path=docs schedule="0 * * * *"
    /sources status docs
    /sync docs
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.audit import audit
from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply
from bot.router import command
from knowledge import admin
from knowledge.sources.chat import platform_services
from knowledge.sync import Progress, SyncReport, embedder_for, sync_all, sync_source

ADMIN_SUBCOMMANDS = {"add", "remove", "status"}  # status shows per-source counts and errors


@command("sources", help="Knowledge sources: list, add, remove, status",
         usage='/sources list | status [NAME] | add NAME kind=KIND path=... [schedule="0 * * * *"] | remove NAME',
         subcommands={"list": "sources with document and chunk counts", "status": "[NAME]: last sync, errors (admin)",
                      "add": "NAME kind=folder|slack_export|web|... (admin)", "remove": "NAME (admin)"},
         free_text=True)
async def sources(msg: Incoming, ctx: Context) -> Reply:
    assert msg.command is not None
    sub, *rest = msg.command.args
    if sub in ADMIN_SUBCOMMANDS:
        await audit(ctx.db, msg, f"command:sources {sub}", allowed=msg.is_admin, text=msg.text[:500])
        if not msg.is_admin:
            raise UserError(f"/sources {sub} is for admins only; ask a workspace admin to run it.")
    if sub == "list":
        return Reply(text=await admin.list_text(ctx, with_counts=msg.is_admin))
    if sub == "status":
        return Reply(text=await admin.status_text(ctx, rest[0] if rest else None))
    if not rest or "=" in rest[0]:
        raise UserError(f"Name the source: /sources {sub} NAME" + (" kind=folder path=docs" if sub == "add" else ""))
    if sub == "remove":
        n = await admin.remove_source(ctx, rest[0])
        return Reply(text=f"Removed source {rest[0]} and its {n} documents.")
    config = admin.parse_config(rest[1:])
    kind = config.pop("kind", None)
    if not kind:
        raise UserError("Say what kind of source: kind=folder|slack_export|web|slack_channel|discord_channel.")
    schedule = config.pop("schedule", None)
    row = await admin.add_source(ctx, rest[0], kind=kind, config=config, schedule=schedule,
                                 platform=msg.platform, workspace=msg.workspace)
    when = f" on schedule {schedule}" if schedule else "; run /sync " + row.name + " to import it"
    return Reply(text=f"Added source {admin.describe(row)}{when}.")


def progress_text(p: Progress) -> str:
    return (f"Syncing {p.source}… {p.seen} documents read, {p.changed} written, "
            f"{p.chunks_embedded} chunks embedded")


@command("sync", help="Sync knowledge sources now", usage="/sync [SOURCE]", admin=True)
async def sync(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
    """One progress message edited in place (partial replies), then the report."""
    assert msg.command is not None
    name = msg.command.args[0] if msg.command.args else None
    updates: asyncio.Queue[Progress] = asyncio.Queue()

    async def on_progress(p: Progress) -> None:
        updates.put_nowait(p)

    embedder = embedder_for(ctx)

    async def run() -> SyncReport | list[SyncReport | str]:
        async with platform_services(ctx) as services:  # chat-channel sources read through the adapters
            if name:
                return await sync_source(ctx.db, name, embedder=embedder, progress=on_progress, services=services)
            return await sync_all(ctx.db, embedder=embedder, progress=on_progress, services=services)

    task = asyncio.ensure_future(run())
    yield Reply(text=f"Syncing {name or 'all sources'}…", partial=True)
    try:
        while not task.done():
            getter = asyncio.ensure_future(updates.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield Reply(text=progress_text(getter.result()), partial=True)
            else:
                getter.cancel()
        result = task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    reports = result if isinstance(result, list) else [result]
    if not reports:
        yield Reply(text="No sources to sync. Add one with /sources add NAME kind=folder path=DIR.")
        return
    lines = [r.summary() if isinstance(r, SyncReport) else r for r in reports]
    skipped = [f"  skipped {s['document']}: {s['error']}" for r in reports if isinstance(r, SyncReport)
               for s in r.skipped[:5]]
    data = {"reports": [r.as_dict() if isinstance(r, SyncReport) else {"error": r} for r in reports]}
    yield Reply(text="\n".join(lines + skipped), data=data)
