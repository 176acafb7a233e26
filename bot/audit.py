"""The audit trail: admin actions, refusals and tool calls."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.messages import Incoming
from bot.models import AuditLog


async def audit(db: async_sessionmaker[AsyncSession], msg: Incoming, action: str, *, allowed: bool,
                **detail: Any) -> None:
    async with db() as session, session.begin():
        session.add(AuditLog(platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                             user_id=msg.user, action=action, allowed=allowed, detail=detail))
