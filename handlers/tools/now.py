"""`now`: the current date and time, so the model can reason about "tomorrow at 9"."""

from __future__ import annotations

from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.config import Settings
from handlers.tools import ToolContext, tool


def local_zone(settings: Settings) -> tzinfo:
    """The configured IANA zone, else the server's own."""
    if settings.agent_timezone:
        try:
            return ZoneInfo(settings.agent_timezone)
        except ZoneInfoNotFoundError:
            pass
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    return zone


@tool("now", description="The current date, time and weekday in the team's time zone.")
async def now(tc: ToolContext) -> str:
    current = datetime.now(local_zone(tc.ctx.settings)).replace(microsecond=0)
    return f"{current.isoformat()} ({current.strftime('%A')}, time zone {current.tzname()})"
