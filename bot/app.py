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


async def close(ctx: Context) -> None:
    engine = ctx.services.get("engine")
    if engine is not None:
        await engine.dispose()
