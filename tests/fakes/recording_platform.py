"""A recording chat platform (the `Platform` protocol): what the notifier and reminders posted and edited.

    fake = RecordingPlatform("slack")
    ctx.platforms["slack"] = fake
    ...; fake.posts -> [(channel, thread, Reply, message_id)], fake.updates -> [(channel, message_id, Reply)]
"""

from __future__ import annotations

import itertools

from bot.messages import Reply


class RecordingPlatform:
    def __init__(self, name: str = "fake"):
        self.name = name
        self.posts: list[tuple[str, str | None, Reply, str]] = []
        self.updates: list[tuple[str, str, Reply]] = []
        self.fail_next = 0  # the next N calls raise, like a platform outage
        self._ids = itertools.count(1)

    def _maybe_fail(self) -> None:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("platform unavailable")

    async def post(self, channel: str, reply: Reply, thread: str | None = None) -> str:
        self._maybe_fail()
        message_id = f"m{next(self._ids)}"
        self.posts.append((channel, thread, reply, message_id))
        return message_id

    async def update(self, channel: str, message_id: str, reply: Reply) -> None:
        self._maybe_fail()
        self.updates.append((channel, message_id, reply))
