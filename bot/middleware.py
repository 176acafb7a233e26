"""The middleware chain: each concern one small function, in the order `DEFAULT_CHAIN` lists.

A middleware receives the message, the context, the command's spec and `next`; it yields replies,
either its own (refusing) or those of `next(msg)`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.audit import audit
from bot.commands import CommandSpec
from bot.context import Context
from bot.messages import Incoming, Reply
from bot.models import ProcessedEvent
from bot.router import Next

log = logging.getLogger(__name__)


async def claim_delivery(db: async_sessionmaker[AsyncSession], platform: str, key: str) -> bool:
    """True only for the first delivery of `key`: the insert can succeed only once, even concurrently.

    Adapters that must decide before acknowledging (Discord defers an interaction) call this directly."""
    stmt = (pg_insert(ProcessedEvent).values(platform=platform, key=key)
            .on_conflict_do_nothing().returning(ProcessedEvent.key))
    async with db() as session, session.begin():
        return (await session.execute(stmt)).first() is not None


async def dedupe(msg: Incoming, ctx: Context, spec: CommandSpec, next: Next) -> AsyncIterator[Reply]:
    """A platform delivery id is processed once."""
    if msg.event_id:
        if not await claim_delivery(ctx.db, msg.platform, msg.event_id):
            log.info("duplicate delivery %s:%s ignored", msg.platform, msg.event_id)
            return
    async for reply in next(msg):
        yield reply


async def reject_empty(msg: Incoming, ctx: Context, spec: CommandSpec, next: Next) -> AsyncIterator[Reply]:
    if msg.command is None and not msg.text.strip():
        yield Reply.fail("Your message was empty. Ask me something, or type /help for commands.")
        return
    async for reply in next(msg):
        yield reply


async def limit_size(msg: Incoming, ctx: Context, spec: CommandSpec, next: Next) -> AsyncIterator[Reply]:
    """Huge messages never reach the model whole: plain text is truncated with a notice, commands refused."""
    limit = ctx.settings.max_input_chars
    if len(msg.text) <= limit:
        async for reply in next(msg):
            yield reply
        return
    if msg.command is not None and msg.command.name != "ask":
        yield Reply.fail(f"That command is {len(msg.text):,} characters; the limit is {limit:,}. "
                         "Shorten it or attach the text as a file.")
        return
    notice = f"(Your message was {len(msg.text):,} characters; I read only the first {limit:,}.)"
    short = msg.text[:limit]
    cmd = msg.command
    if cmd is not None:
        cmd = type(cmd)(name=cmd.name, args=(cmd.rest[:limit],), options=cmd.options, raw=cmd.raw[:limit])
    async for reply in next(msg.evolve(text=short, command=cmd)):
        yield reply.evolve(text=f"{notice}\n{reply.text}")


async def admin_gate(msg: Incoming, ctx: Context, spec: CommandSpec, next: Next) -> AsyncIterator[Reply]:
    """Admin commands are checked here, on the server, whatever the platform's own permissions say."""
    if spec.admin:
        allowed = msg.is_admin
        await audit(ctx.db, msg, f"command:{spec.name}", allowed=allowed, text=msg.text[:500])
        if not allowed:
            log.warning("refused /%s for non-admin %s:%s", spec.name, msg.platform, msg.user)
            yield Reply.fail(f"/{spec.name} is for admins only; ask a workspace admin to run it.")
            return
    async for reply in next(msg):
        yield reply


DEFAULT_CHAIN = [dedupe, reject_empty, limit_size, admin_gate]
