"""`ladder sync [SOURCE]`, `ladder sources list|add|remove|status`, `ladder reindex`.

    ladder sources add docs kind=folder path=docs schedule="0 * * * *"
    ladder sync docs
    ladder reindex        # after changing EMBEDDING_MODEL
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

T = TypeVar("T")
sources_app = typer.Typer(help="Knowledge sources: list, add, remove, status.", no_args_is_help=True)


def _run(body: Callable[[Any], Awaitable[T]]) -> T:
    """Run `body(ctx)` with a bot context; a UserError is one line on stderr and exit code 1."""
    from bot.app import build_context, close
    from bot.cli import run_async
    from bot.errors import UserError

    async def main(settings: Any) -> T:
        ctx = await build_context(settings)
        try:
            return await body(ctx)
        finally:
            from bot import scheduler

            scheduler.shutdown(ctx)
            await close(ctx)

    try:
        return run_async(main)
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


def sync(source: str | None = typer.Argument(None, help="Source name; all sources when omitted."),
         as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON.")) -> None:
    """Sync knowledge sources now, with a progress bar."""
    import json

    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from knowledge.sources.chat import platform_services
    from knowledge.sync import Progress as SyncProgress
    from knowledge.sync import SyncReport, embedder_for, sync_all, sync_source

    async def body(ctx: Any) -> list[Any]:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      transient=True, disable=as_json) as bar:
            task = bar.add_task(f"syncing {source or 'all sources'}", total=None)

            async def on_progress(p: SyncProgress) -> None:
                bar.update(task, description=f"{p.source}: {p.seen} read, {p.changed} written, "
                                             f"{p.chunks_embedded} chunks embedded")

            embedder = embedder_for(ctx)
            async with platform_services(ctx) as services:  # chat-channel sources: adapters built from settings
                if source:
                    return [await sync_source(ctx.db, source, embedder=embedder, progress=on_progress,
                                              services=services)]
                return await sync_all(ctx.db, embedder=embedder, progress=on_progress, services=services)

    reports = _run(body)
    if as_json:
        typer.echo(json.dumps([r.as_dict() if isinstance(r, SyncReport) else {"error": r} for r in reports]))
        return
    if not reports:
        typer.echo("No sources. Add one: ladder sources add docs kind=folder path=docs")
    for r in reports:
        typer.echo(r.summary() if isinstance(r, SyncReport) else r)
        for s in getattr(r, "skipped", []):
            typer.echo(f"  skipped {s['document']}: {s['error']}")
    if any(not isinstance(r, SyncReport) for r in reports):
        raise typer.Exit(1)


def reindex() -> None:
    """Re-embed every chunk with the configured embedding model (after changing it)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from knowledge.sync import embedder_for, model_id
    from knowledge.sync import reindex as do_reindex

    async def body(ctx: Any) -> str:
        embedder = embedder_for(ctx)
        with Progress(BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("re-embedding", total=None)

            async def on_progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            n = await do_reindex(ctx.db, embedder=embedder, progress=on_progress)
        return f"Re-embedded {n} chunks with {model_id(embedder)} (dimension {embedder.dimension})."

    typer.echo(_run(body))


@sources_app.command("list")
def sources_list() -> None:
    """Sources with their document and chunk counts."""
    from knowledge import admin

    typer.echo(_run(admin.list_text))


@sources_app.command("status")
def sources_status(name: str | None = typer.Argument(None)) -> None:
    """Last sync, counts, skipped documents and errors, reranker state."""
    from knowledge import admin

    typer.echo(_run(lambda ctx: admin.status_text(ctx, name)))


@sources_app.command("add")
def sources_add(name: str,
                settings: list[str] = typer.Argument(..., help="kind=KIND path=... [schedule=CRON]")) -> None:
    """Add a source, e.g. `ladder sources add docs kind=folder path=docs schedule="0 * * * *"`."""
    from knowledge import admin

    async def body(ctx: Any) -> str:
        config = admin.parse_config(settings)
        kind = config.pop("kind", None)
        if not kind:
            from bot.errors import UserError

            raise UserError("Say what kind of source: kind=folder|slack_export|web|...")
        schedule = config.pop("schedule", None)
        row = await admin.add_source(ctx, name, kind=kind, config=config, schedule=schedule)
        return f"Added source {admin.describe(row)}. Run `ladder sync {name}` to import it."

    typer.echo(_run(body))


@sources_app.command("remove")
def sources_remove(name: str) -> None:
    """Remove a source with its documents, chunks and schedule."""
    from knowledge import admin

    async def body(ctx: Any) -> str:
        return f"Removed source {name} and its {await admin.remove_source(ctx, name)} documents."

    typer.echo(_run(body))


def register(app: typer.Typer) -> None:
    """Mount on the `ladder` app (called once from bot/cli.py)."""
    app.command("sync")(sync)
    app.command("reindex")(reindex)
    app.add_typer(sources_app, name="sources")
