"""A Slack channel read through the Slack Web API (the Slack adapter's client): history + thread replies.

    /sources add eng-chat kind=slack_channel channel=C0123ABC schedule="*/30 * * * *"
    /sources add hr-chat kind=slack_channel channel=G0HR base_url=https://acme.slack.com thread_days=60

Incremental by timestamp (`conversations.history` with `oldest`); a thread is one document read with
`conversations.replies`. New replies to an older thread are found by re-checking threads active in the last
`thread_days` (Slack's history only lists a thread's parent). ACL: `public` for a public channel, else
`channel:slack:<id>`, with the members recorded at each sync (see `knowledge.sources.chat`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from bot.errors import UserError
from bot.messages import HistoryMessage, Platform
from knowledge.sources import source
from knowledge.sources.chat import ChatChannelSource
from knowledge.sources.slack_export import clean

_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


@source("slack_channel")
class SlackChannelSource(ChatChannelSource):
    platform_name = "slack"

    @classmethod
    def check_channel(cls, channel: str) -> None:
        if not _ID.match(channel):
            raise UserError(f"'{channel}' is not a Slack channel id (like C0123ABC: in Slack, open the channel's "
                            "details; the id is at the bottom).")

    def id_time(self, message_id: str) -> datetime:
        return datetime.fromtimestamp(float(message_id), UTC)

    def clean(self, text: str, names: dict[str, str]) -> str:
        return clean(text, names, {})

    async def label(self, platform: Platform, channel: str) -> str:
        if self.config.get("name"):
            return await super().label(platform, channel)
        info: dict[str, Any] = await platform.channel_info(channel) if hasattr(platform, "channel_info") else {}
        return "#" + (info.get("name") or channel)

    def url(self, channel: str, first: HistoryMessage) -> str | None:
        base = self.config.get("base_url")
        return f"{base.rstrip('/')}/archives/{channel}/p{first.id.replace('.', '')}" if base else None
