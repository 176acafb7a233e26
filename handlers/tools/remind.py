"""`remind`: post a message in this channel (or thread) at a time, via the persisted scheduler.

The time is resolved before the user is asked to confirm, so the confirmation shows the exact moment:

    >>> from datetime import datetime, timezone
    >>> base = datetime(2025, 1, 1, 15, 0, tzinfo=timezone.utc)
    >>> parse_when("tomorrow at 9", base).isoformat()
    '2025-01-02T09:00:00+00:00'
    >>> parse_when("in 2 hours", base).isoformat()
    '2025-01-01T17:00:00+00:00'
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import Field

from bot import scheduler
from bot.messages import Reply
from handlers.tools import ToolContext, ToolError, tool
from handlers.tools.now import local_zone

log = logging.getLogger(__name__)
_IN = re.compile(r"^in\s+(\d+)\s*(minute|min|hour|hr|day|week)s?$")
_AT = re.compile(r"^(?:(today|tomorrow)\s*)?(?:at\s*)?(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")
_UNITS = {"minute": "minutes", "min": "minutes", "hour": "hours", "hr": "hours", "day": "days", "week": "weeks"}
MAX_AHEAD = timedelta(days=366)


def parse_when(text: str, now: datetime) -> datetime:
    """An absolute time from ISO 8601, "in N minutes|hours|days", or "[today|tomorrow] at H[:MM][am|pm]"."""
    raw = text.strip().lower()
    try:
        when = datetime.fromisoformat(text.strip())
        return when if when.tzinfo else when.replace(tzinfo=now.tzinfo)
    except ValueError:
        pass
    if m := _IN.match(raw):
        return now + timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    if m := _AT.match(raw):
        day, hour, minute, half = m.group(1), int(m.group(2)), int(m.group(3) or 0), m.group(4)
        if half == "pm" and hour < 12:
            hour += 12
        if half == "am" and hour == 12:
            hour = 0
        if hour > 23 or minute > 59:
            raise ToolError(f"not a time of day: {text!r}")
        when = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if day == "tomorrow":
            when += timedelta(days=1)
        elif day is None and when <= now:
            when += timedelta(days=1)
        return when
    raise ToolError(f"cannot read the time {text!r}; use ISO 8601 (2025-01-02T09:00), 'in 2 hours' "
                    "or 'tomorrow at 9'")


async def _prepare(tc: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(local_zone(tc.ctx.settings))
    when = parse_when(args["when"], now)
    if when <= now:
        raise ToolError(f"{when.isoformat()} is in the past")
    if when - now > MAX_AHEAD:
        raise ToolError("reminders can be at most a year ahead")
    return {**args, "when": when.replace(microsecond=0).isoformat()}


@tool("remind", side_effect=True, prepare=_prepare, summary="Post a reminder in this channel at {when}: {text}",
      description="Post a reminder message in this channel (or thread) at a given time. Needs the user's confirmation.")
async def remind(tc: ToolContext,
                 text: Annotated[str, Field(description="what to remind about", max_length=1000)],
                 when: Annotated[str, Field(description="ISO 8601 time, 'in 2 hours' or 'tomorrow at 9'")]) -> str:
    at = (await _prepare(tc, {"text": text, "when": when}))["when"]
    msg = tc.msg
    job_id = f"remind:{tc.pending_id or uuid.uuid4().hex[:12]}"
    scheduler.get(tc.ctx).add_job("handlers.tools.remind:fire", "date", run_date=datetime.fromisoformat(at),
                                  args=[msg.platform, msg.channel, msg.thread, msg.user, text], id=job_id,
                                  replace_existing=True)
    return f"Reminder set for {at} in this channel (job {job_id})."


async def fire(platform: str, channel: str, thread: str | None, user: str, text: str) -> None:
    """The persisted job: post the reminder through the platform the request came from."""
    ctx = scheduler.current()
    target = ctx.platforms.get(platform)
    if target is None:
        log.warning("reminder for %s:%s dropped: platform %s is not running", platform, channel, platform)
        return
    await target.post(channel, Reply(text=f"⏰ Reminder (asked by {user}): {text}"), thread)
