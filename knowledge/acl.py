"""Who may read what: the principals of a reply's audience, and channel membership kept at sync time.

What may be used to answer is decided by who will see the reply. In a channel, everyone in it sees the
answer, so only `public` and that channel's own content qualify; in a DM or an ephemeral reply, what the
asker may read: `public`, `user:<p>:<asker>` and every channel the asker is a member of.

    >>> channel_audience("slack", "C1").principals
    ('public', 'channel:slack:C1')
    >>> private_audience("slack", "U1", ["C2"]).principals
    ('public', 'user:slack:U1', 'channel:slack:C2')

Membership comes from `channel_members`, filled by the chat-channel sources at sync (`set_members`), so a
change takes effect at the next sync. A fetch that failed is recorded with `membership_failed`; until a
later sync succeeds, private replies on that platform use public documents only and say so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from bot.context import Context
from bot.messages import Incoming
from knowledge.models import ChannelMember, MembershipSync
from knowledge.types import PUBLIC, channel_principal, user_principal

log = logging.getLogger(__name__)

DEGRADED_NOTE = ("I could not check which private channels you are in, so I used only public documents "
                 "for this answer.")


@dataclass(frozen=True)
class Audience:
    """The principals every reader of a reply holds; retrieval reads only chunks whose ACL shares one."""

    principals: tuple[str, ...]
    degraded: bool = False  # membership could not be determined: public only
    note: str = ""  # what to tell the user when degraded

    @classmethod
    def public(cls, note: str = "") -> Audience:
        return cls((PUBLIC,), degraded=bool(note), note=note)


def channel_audience(platform: str, channel: str) -> Audience:
    """A reply posted in a channel: public content and that channel's own."""
    return Audience((PUBLIC, channel_principal(platform, channel)))


def private_audience(platform: str, user: str, channels: Iterable[str]) -> Audience:
    """A DM or ephemeral reply: everything the asker may read."""
    member_of = [channel_principal(platform, c) for c in sorted(set(channels))]
    return Audience((PUBLIC, user_principal(platform, user), *member_of))


async def audience_for(ctx: Context, msg: Incoming, *, private_reply: bool) -> Audience:
    """The audience of the reply to `msg`. Never wider than it should be: on any doubt, public only."""
    if not private_reply:
        return channel_audience(msg.platform, msg.channel)
    try:
        async with ctx.db() as session:
            failed = (await session.execute(select(func.count()).select_from(MembershipSync).where(
                MembershipSync.platform == msg.platform, MembershipSync.ok.is_(False)))).scalar_one()
            if failed:
                return Audience.public(DEGRADED_NOTE)
            channels = (await session.execute(select(ChannelMember.channel).where(
                ChannelMember.platform == msg.platform, ChannelMember.user_id == msg.user))).scalars().all()
    except Exception:
        log.exception("membership lookup failed for %s:%s; answering from public documents", msg.platform, msg.user)
        return Audience.public(DEGRADED_NOTE)
    return private_audience(msg.platform, msg.user, channels)


async def set_members(session: AsyncSession, platform: str, channel: str, user_ids: Iterable[str]) -> None:
    """Replace the member list of one channel (called by chat-channel sources at sync; caller commits)."""
    members = sorted(set(user_ids))
    await session.execute(delete(ChannelMember).where(
        ChannelMember.platform == platform, ChannelMember.channel == channel, ChannelMember.user_id.not_in(members)))
    if members:
        await session.execute(pg_insert(ChannelMember).values(
            [{"platform": platform, "channel": channel, "user_id": u} for u in members])
            .on_conflict_do_update(index_elements=["platform", "channel", "user_id"], set_={"synced_at": func.now()}))
    await _record(session, platform, channel, ok=True, error=None)


async def membership_failed(session: AsyncSession, platform: str, channel: str, error: str) -> None:
    """Record that the member list of `channel` could not be fetched: private replies go public-only."""
    log.warning("membership of %s:%s could not be fetched: %s", platform, channel, error)
    await _record(session, platform, channel, ok=False, error=error[:500])


async def _record(session: AsyncSession, platform: str, channel: str, *, ok: bool, error: str | None) -> None:
    values = {"ok": ok, "error": error, "synced_at": func.now()}
    await session.execute(pg_insert(MembershipSync).values(platform=platform, channel=channel, **values)
                          .on_conflict_do_update(index_elements=["platform", "channel"], set_=values))
