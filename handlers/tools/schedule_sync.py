"""`schedule_sync` (admin, side effect): sync a knowledge source now, through the same path as `/sync`.

Like `start_training`, the call becomes the slash command (`/sync SOURCE`), checked before the user is
asked to confirm and run by the router as the human who asked.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any

from pydantic import Field

from handlers.tools import ToolContext, check_command, run_command, tool


def command_text(source: str) -> str:
    return f"/sync {shlex.quote(source)}"


async def _prepare(tc: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    check_command(command_text(args["source"]))
    return args


@tool("schedule_sync", admin=True, side_effect=True, prepare=_prepare, summary="Sync the knowledge source {source}",
      description="Sync (re-index) a knowledge source now. Needs the user's confirmation.")
async def schedule_sync(tc: ToolContext,
                        source: Annotated[str, Field(description="the source name", min_length=1, max_length=200)]
                        ) -> str:
    return await run_command(tc, command_text(source))
