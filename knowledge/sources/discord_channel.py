"""A Discord channel read through discord.py (the Discord adapter's client): history after a message-id cursor.

    /sources add dev-chat kind=discord_channel channel=123456789012345678 name=dev

Incremental by message id (`after=`); each thread of the channel (active and archived, as far as the bot
can see) is one document, re-read when it has a message newer than the one last read. ACL: `public` when
@everyone may view the channel, else `channel:discord:<id>` with the members recorded at each sync (this
needs the Server Members Intent, DISCORD_MEMBERS_INTENT=true; without it membership is recorded as failed
and private replies use public documents only).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bot.errors import UserError
from bot.messages import HistoryMessage, Platform
from knowledge.sources import source
from knowledge.sources.chat import ChatChannelSource

DISCORD_EPOCH_MS = 1420070400000


@source("discord_channel")
class DiscordChannelSource(ChatChannelSource):
    platform_name = "discord"
    example_channel = "123456789012345678"

    @classmethod
    def check_channel(cls, channel: str) -> None:
        if not channel.isdigit():
            raise UserError(f"'{channel}' is not a Discord channel id (a number: turn on Developer Mode, then "
                            "right-click the channel -> Copy Channel ID).")

    async def thread_ids(self, platform: Platform, channel: str, messages: list[HistoryMessage],
                         tracked: dict[str, str]) -> tuple[set[str], set[str]]:
        """Every thread the platform lists for the channel; tracked ones no longer listed are forgotten."""
        listing = getattr(platform, "threads", None)
        listed = set(await listing(channel)) if listing is not None else set()
        listed |= {m.thread for m in messages if m.thread}
        return listed, set(tracked) - listed

    def id_time(self, message_id: str) -> datetime:
        return datetime.fromtimestamp(((int(message_id) >> 22) + DISCORD_EPOCH_MS) / 1000, UTC)

    def clean(self, text: str, names: dict[str, str]) -> str:
        text = re.sub(r"<@!?(\d+)>", lambda m: "@" + names.get(m.group(1), m.group(1)), text)
        return re.sub(r"<(#|@&)(\d+)>", lambda m: m.group(1) + m.group(2), text)

    def url(self, channel: str, first: HistoryMessage) -> str | None:
        return first.url
