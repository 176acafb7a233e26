"""Human in the loop: side effects the agent proposed wait here until the human who asked confirms.

    /confirm p3f9a2c1b     run the proposed action (buttons on Slack/Discord do the same)
    /cancel p3f9a2c1b      drop it (`/cancel` is shared with training jobs: a number is a job,
                           an id starting with "p" is a pending action -> `cancel_pending`)

A proposal stores exactly what will run (tool name and prepared arguments) plus the asker's
permissions at the time; the model never chooses them. Rows expire after AGENT_CONFIRM_TTL_S.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import actions
from bot.audit import audit
from bot.context import Context
from bot.errors import UserError
from bot.messages import Action, Incoming, Reply
from bot.models import PendingAction
from bot.router import command

log = logging.getLogger(__name__)
KIND = "tool"


async def propose(ctx: Context, msg: Incoming, tool: str, arguments: dict[str, Any], summary: str) -> PendingAction:
    """Store a pending tool call for `msg.user` to confirm; returns the row (its id goes on the buttons)."""
    now = datetime.now(UTC)
    row = PendingAction(id="p" + secrets.token_hex(4), platform=msg.platform, workspace=msg.workspace,
                        channel=msg.channel, thread=msg.thread, user_id=msg.user, kind=KIND, summary=summary,
                        payload={"tool": tool, "arguments": arguments, "requester_is_admin": msg.is_admin,
                                 "requester_is_dm": msg.is_dm, "requester_name": msg.user_name},
                        status="pending", created_at=now,
                        expires_at=now + timedelta(seconds=ctx.settings.agent_confirm_ttl_s))
    async with ctx.db() as session, session.begin():
        session.add(row)
    return row


def buttons(row: PendingAction) -> tuple[Action, ...]:
    return (Action(actions.CONFIRM, "Confirm", value=row.id, style="primary"),
            Action(actions.CANCEL, "Cancel", value=row.id, style="danger"))


def requester(row: PendingAction) -> Incoming:
    """The human who asked, with the permissions they had when asking (never more)."""
    p = row.payload or {}
    return Incoming(platform=row.platform, workspace=row.workspace, channel=row.channel, thread=row.thread,
                    user=row.user_id, text="", is_admin=bool(p.get("requester_is_admin")),
                    is_dm=bool(p.get("requester_is_dm")), user_name=str(p.get("requester_name") or ""))


@actions.on_confirm(KIND)
async def run_tool(ctx: Context, row: PendingAction) -> Reply:
    """Run a confirmed tool call once, as the human who asked; audited like every tool call."""
    from handlers.agent import find_tool
    from handlers.tools import ToolContext, ToolError

    msg = requester(row)
    name, args = row.payload.get("tool", ""), row.payload.get("arguments") or {}
    tool = await find_tool(ctx, name)
    if tool is None or (tool.admin and not msg.is_admin):
        await audit(ctx.db, msg, f"tool:{name}", allowed=False, arguments=args, pending=row.id,
                    reason="not available to the requester")
        return Reply.fail(f"'{name}' is not available to you any more; nothing was run.")
    try:
        result = await tool.call(ToolContext(msg, ctx, pending_id=row.id), args)
    except ToolError as err:
        await audit(ctx.db, msg, f"tool:{name}", allowed=True, arguments=args, pending=row.id, error=str(err))
        return Reply.fail(f"Confirmed, but {name} failed: {err}")
    await audit(ctx.db, msg, f"tool:{name}", allowed=True, arguments=args, pending=row.id, confirmed=True,
                result=result[:1000])
    return Reply(text=f"Done: {row.summary}\n{result}", thread=row.thread)


def _action_id(msg: Incoming, verb: str) -> str:
    action_id = msg.body.strip()
    if not action_id:
        raise UserError(f"Which action? /{verb} ID (the id is in the proposal).")
    return action_id


@command("confirm", help="Run an action the bot proposed", usage="/confirm ID")
async def confirm(msg: Incoming, ctx: Context) -> Reply:
    return await actions.resolve(ctx, msg, _action_id(msg, "confirm"), confirm=True)


async def cancel_pending(msg: Incoming, ctx: Context) -> Reply:
    """`/cancel pID`: what the `/cancel` command runs for an id that is not a training job number."""
    return await actions.resolve(ctx, msg, _action_id(msg, "cancel"), confirm=False)


def is_pending_id(text: str) -> bool:
    """Pending action ids start with "p"; training jobs are numbers.

    >>> is_pending_id("p3f9a2c1b"), is_pending_id("12")
    (True, False)
    """
    return text.strip().startswith("p") and text.strip()[1:].isalnum()
