"""One dispatch's replies as Slack calls, so streaming, errors and buttons behave the same everywhere.

The first visible reply is posted and later ones edit it (partials at most once per the adapter's
`edit_interval`, the final one always); errors go only to the user; answers get 👍/👎 carrying the
question and sources. A slash command in a channel the bot cannot post in answers via `response_url`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot.actions import feedback_value
from bot.adapters.slack_blocks import render
from bot.messages import Incoming, Reply

if TYPE_CHECKING:
    from bot.adapters.slack import SlackAdapter

NOT_POSTABLE = ("not_in_channel", "channel_not_found", "is_archived")


class ReplyStream:
    """Turns the Replies of one dispatch into chat.postMessage / chat.update / ephemeral calls."""

    def __init__(self, adapter: SlackAdapter, msg: Incoming, thread: str | None, response_url: str | None = None,
                 context: str | None = None):
        self.a, self.msg, self.thread = adapter, msg, thread
        self.response_url, self.context = response_url, context
        self.ts: str | None = None
        self.last_edit = 0.0
        self.via_webhook = False

    async def send(self, reply: Reply) -> None:
        channel, thread = self.msg.channel, reply.thread or self.thread
        if reply.ephemeral or reply.error:
            if self.ts is not None:
                await self.a.delete(channel, self.ts)
                self.ts = None
            await self.a.ephemeral(self.msg, reply, thread, self.response_url)
            return
        now = time.monotonic()
        if reply.partial and (self.via_webhook or self.ts and now - self.last_edit < self.a.edit_interval):
            return
        self.last_edit = now
        feedback = feedback_value(self.msg.body, reply.citations) if reply.model and not reply.partial else None
        if self.ts is not None:
            await self.a.update(channel, self.ts, reply, thread=thread, feedback=feedback, context=self.context)
            return
        if not self.via_webhook:
            try:
                self.ts = await self.a.post(channel, reply, thread, feedback=feedback, context=self.context)
                return
            except SlackApiError as err:
                if not self.response_url or err.response.get("error") not in NOT_POSTABLE:
                    raise
                self.via_webhook = True  # e.g. /ladder in a channel the bot is not in: answer via response_url
        if not reply.partial:
            body = render(reply, self.a.allowlist, feedback=feedback, context=self.context)
            await AsyncWebhookClient(self.response_url).send(response_type="in_channel", **body)
