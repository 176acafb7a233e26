"""The one place that wires everything together: database, models, router, adapters."""

from __future__ import annotations

import asyncio
import logging

from bot import db
from bot.config import Settings
from bot.context import Context
from bot.llm.hub import ModelHub
from bot.middleware import DEFAULT_CHAIN
from bot.router import Router

log = logging.getLogger(__name__)


async def build_context(settings: Settings, *, migrate: bool = True) -> Context:
    """Connect to (or start) the database, bring the schema to head, and set up the model hub."""
    url = await asyncio.to_thread(db.resolve_url, settings)
    engine = db.make_engine(url)
    await db.check(engine)
    if migrate:
        await asyncio.to_thread(db.upgrade, url)
    ctx = Context(settings=settings, db=db.sessionmaker(engine), models=ModelHub.from_settings(settings))
    ctx.services["engine"] = engine
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


async def run_platforms(settings: Settings, *, http_port: int | None = None) -> None:
    """`ladder run`: every configured adapter, the scheduler and the notifier in one asyncio loop.

    An adapter that fails (bad token, missing intent) is logged and the others keep running.
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
    finally:
        scheduler.shutdown(ctx)
        await close(ctx)


async def close(ctx: Context) -> None:
    engine = ctx.services.get("engine")
    if engine is not None:
        await engine.dispose()
