"""Per-channel settings (persona, model, examples), read and written in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.llm.base import ChatModel
from bot.llm.hub import ModelHub
from bot.messages import Incoming
from bot.models import ChannelSettings


async def load(db: async_sessionmaker[AsyncSession], msg: Incoming) -> ChannelSettings:
    """The channel's settings, or unsaved defaults when it has none."""
    async with db() as session:
        row = (await session.execute(select(ChannelSettings).where(
            ChannelSettings.platform == msg.platform, ChannelSettings.workspace == msg.workspace,
            ChannelSettings.channel == msg.channel))).scalar_one_or_none()
    return row or ChannelSettings(platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                                  rag_enabled=True, examples=[])


async def update(db: async_sessionmaker[AsyncSession], msg: Incoming, **values: Any) -> None:
    """Upsert some columns of the channel's settings."""
    stmt = pg_insert(ChannelSettings).values(platform=msg.platform, workspace=msg.workspace,
                                             channel=msg.channel, **values)
    stmt = stmt.on_conflict_do_update(constraint="uq_channel_settings_platform", set_=values)
    async with db() as session, session.begin():
        await session.execute(stmt)


async def chat_model(models: ModelHub, chan: ChannelSettings, override: str | None = None) -> ChatModel:
    """The model that answers in this channel (or `override`, on the default backend), ready to budget for."""
    model = await models.model_for(override or chan.model, None if override else chan.backend)
    await model.prepare()
    return model
