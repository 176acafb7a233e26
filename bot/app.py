"""The one place that wires everything together: database, models, router, adapters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot import db
from bot.config import Settings
from bot.context import Context
from bot.llm.hub import ModelHub
from bot.middleware import DEFAULT_CHAIN
from bot.router import Router

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 60.0


async def build_context(settings: Settings, *, migrate: bool = True) -> Context:
    """Connect to (or start) the database, bring the schema to head, and set up the model hub."""
    url = await asyncio.to_thread(db.resolve_url, settings)
    engine = db.make_engine(url)
    await db.check(engine)
    if migrate:
        await asyncio.to_thread(db.upgrade, url)
    ctx = Context(settings=settings, db=db.sessionmaker(engine), models=ModelHub.from_settings(settings))
    ctx.services["engine"] = engine
    ctx.services["connect_platform"] = connect_platform  # for syncs outside `ladder run` (knowledge.sources.chat)
    return ctx


def build_router(ctx: Context) -> Router:
    import handlers

    handlers.load_all()
    return Router(ctx, DEFAULT_CHAIN)


def configured_adapters(settings: Settings) -> list[str]:
    names = []
    if settings.slack_bot_token and (settings.slack_app_token or settings.slack_signing_secret):
        names.append("slack")
    if settings.discord_token:
        names.append("discord")
    return names


async def connect_platform(ctx: Context, name: str) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """An adapter built from settings to read channels outside `ladder run` (e.g. `ladder sync` of a
    slack_channel source), and how to close it. Slack needs only the bot token; Discord logs in and
    connects the gateway (it answers messages meanwhile, de-duplicated as usual) until closed."""
    from bot.errors import UserError

    if name == "slack":
        if not ctx.settings.slack_bot_token:
            raise UserError("This source reads Slack: set SLACK_BOT_TOKEN (OAuth & Permissions -> Bot User OAuth "
                            "Token) to sync it.")
        from bot.adapters.slack import SlackAdapter

        async def nothing() -> None:
            return None

        return SlackAdapter(build_router(ctx), ctx), nothing
    if name == "discord":
        if not ctx.settings.discord_token:
            raise UserError("This source reads Discord: set DISCORD_TOKEN to sync it.")
        from bot.adapters.discord import DiscordAdapter

        adapter = DiscordAdapter(build_router(ctx), ctx)
        task = asyncio.create_task(adapter.run())
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({task, ready}, timeout=CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()

        async def close() -> None:
            await adapter.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10)

        if not adapter.ready.is_set():
            error = task.exception() if task.done() else None
            await close()
            raise UserError(f"Could not connect to Discord to sync: {error or 'timed out'}")
        return adapter, close
    raise UserError(f"No adapter for platform '{name}'.")


async def run_platforms(settings: Settings, *, http_port: int | None = None) -> bool:
    """`ladder run`: every configured adapter, the scheduler and the notifier in one asyncio loop.

    An adapter that fails (bad token, missing intent) is logged and the others keep running.
    Returns False when every adapter failed, so the process can exit non-zero.
    """
    from bot import scheduler

    ctx = await build_context(settings)
    router = build_router(ctx)
    adapters = []
    for name in configured_adapters(settings):
        if name == "slack":
            from bot.adapters.slack import SlackAdapter

            adapters.append(SlackAdapter(router, ctx, http_port=http_port))
        elif name == "discord":
            from bot.adapters.discord import DiscordAdapter

            adapters.append(DiscordAdapter(router, ctx))
    for adapter in adapters:
        ctx.platforms[adapter.name] = adapter
    scheduler.get(ctx)
    import training

    await training.attach(ctx)  # notifier: job progress and reports back to the threads that asked
    try:
        results = await asyncio.gather(*(a.run() for a in adapters), return_exceptions=True)
        for adapter, result in zip(adapters, results, strict=True):
            if isinstance(result, BaseException):
                log.error("%s adapter stopped: %s", adapter.name, result)
        return not all(isinstance(r, BaseException) for r in results)
    finally:
        await close(ctx)


async def close(ctx: Context) -> None:
    """Stop background tasks (notifier, ...) and the scheduler before the engine goes away."""
    from bot import scheduler

    tasks = [t for t in ctx.services.values() if isinstance(t, asyncio.Task) and not t.done()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    scheduler.shutdown(ctx)
    engine = ctx.services.get("engine")
    if engine is not None:
        await engine.dispose()
