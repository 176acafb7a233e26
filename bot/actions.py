"""Button actions every platform shares: confirm/cancel of pending side effects, and answer feedback.

What a confirmed action *does* belongs to whoever created it; they register it by kind:

    @on_confirm("post_message")
    async def post_message(ctx: Context, row: PendingAction) -> Reply:
        ...
        return Reply(text="Posted.")

Adapters call `resolve(...)` when Confirm/Cancel is pressed (or `/confirm ID` typed): only the user who
asked, or an admin, may resolve; the row changes state with an update that can succeed only once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from bot.audit import audit
from bot.context import Context
from bot.errors import UserError
from bot.messages import Citation, Incoming, Reply
from bot.models import Feedback, PendingAction

log = logging.getLogger(__name__)

ConfirmHandler = Callable[[Context, PendingAction], Awaitable[Reply]]
_ON_CONFIRM: dict[str, ConfirmHandler] = {}

FEEDBACK_UP, FEEDBACK_DOWN, CONFIRM, CANCEL, DEPLOY = "feedback_up", "feedback_down", "confirm", "cancel", "deploy"
ADMIN_ACTIONS = frozenset({DEPLOY})  # buttons only admins may press, checked on the server
VALUE_LIMIT = 2000  # Slack's limit for a button value; Discord custom ids are shorter still


def on_confirm(kind: str) -> Callable[[ConfirmHandler], ConfirmHandler]:
    """Register what runs when a pending action of `kind` is confirmed. A duplicate kind fails at import."""

    def register(fn: ConfirmHandler) -> ConfirmHandler:
        if kind in _ON_CONFIRM:
            raise RuntimeError(f"confirm handler for {kind!r} registered twice")
        _ON_CONFIRM[kind] = fn
        return fn

    return register


async def run_confirmed(ctx: Context, action_row: PendingAction) -> Reply:
    """Run the registered handler for a confirmed row; a missing handler is a clear reply, not a crash."""
    handler = _ON_CONFIRM.get(action_row.kind)
    if handler is None:
        log.error("no confirm handler for kind %s (action %s)", action_row.kind, action_row.id)
        return Reply.fail(f"Confirmed, but nothing knows how to run a '{action_row.kind}' action. It was not run.")
    return await handler(ctx, action_row)


def may_resolve(row: PendingAction, user: str, is_admin: bool) -> bool:
    """Only the user who asked for the action, or an admin, may confirm or cancel it."""
    return is_admin or row.user_id == user


async def resolve(ctx: Context, msg: Incoming, action_id: str, *, confirm: bool) -> Reply:
    """Confirm (and run) or cancel pending action `action_id` for the user in `msg`; one line back."""
    now = datetime.now(UTC)
    async with ctx.db() as session:
        row = await session.get(PendingAction, action_id)
    if row is None:
        raise UserError(f"There is no pending action {action_id}.")
    verb = "confirm" if confirm else "cancel"
    allowed = may_resolve(row, msg.user, msg.is_admin)
    await audit(ctx.db, msg, f"{verb}:{row.kind}", allowed=allowed, pending=action_id)
    if not allowed:
        log.warning("refused %s of %s for %s:%s", verb, action_id, msg.platform, msg.user)
        raise UserError("Only the person who asked for this action, or an admin, can confirm or cancel it.")
    if row.status != "pending":
        raise UserError(f"This action was already {row.status}.")
    if row.expires_at <= now:
        status = "expired"
    else:
        status = "confirmed" if confirm else "cancelled"
    stmt = (update(PendingAction).where(PendingAction.id == action_id, PendingAction.status == "pending")
            .values(status=status, resolved_at=now, resolved_by=msg.user).returning(PendingAction.id))
    async with ctx.db() as session, session.begin():
        won = (await session.execute(stmt)).first() is not None
    if not won:
        raise UserError("This action was just resolved by someone else.")
    if status == "expired":
        raise UserError("This action expired; ask again.")
    if not confirm:
        return Reply(text=f"Cancelled: {row.summary}")
    async with ctx.db() as session:
        row = (await session.execute(select(PendingAction).where(PendingAction.id == action_id))).scalar_one()
    return await run_confirmed(ctx, row)


def feedback_value(question: str, citations: Sequence[Citation] = ()) -> str:
    """What a feedback button carries back: the question and the sources, cut to fit the value limit.

    >>> json.loads(feedback_value("why?", [Citation(1, "Runbook", "https://w/r")]))
    {'q': 'why?', 's': [{'title': 'Runbook', 'url': 'https://w/r'}]}
    """
    sources = [{"title": c.title[:200], "url": c.url} for c in citations]
    value = {"q": question, "s": sources}
    text = json.dumps(value, ensure_ascii=False)
    while len(text) > VALUE_LIMIT and value["s"]:
        value["s"] = value["s"][:-1]
        text = json.dumps(value, ensure_ascii=False)
    if len(text) > VALUE_LIMIT:
        value["q"] = question[: max(0, len(question) - (len(text) - VALUE_LIMIT) - 8)] + "…"
        text = json.dumps(value, ensure_ascii=False)
    return text


def parse_feedback_value(raw: str) -> tuple[str, list[dict[str, Any]]]:
    """Inverse of `feedback_value`; anything unreadable gives an empty question and no sources."""
    try:
        value = json.loads(raw)
        return str(value.get("q", "")), list(value.get("s", []))
    except (ValueError, AttributeError):
        return "", []


async def record_feedback(ctx: Context, msg: Incoming, *, score: int, message_id: str | None, answer: str,
                          value: str) -> None:
    """Store one 👍 (+1) or 👎 (-1) with the question, answer and sources it was about."""
    question, sources = parse_feedback_value(value)
    async with ctx.db() as session, session.begin():
        session.add(Feedback(platform=msg.platform, workspace=msg.workspace, channel=msg.channel,
                             thread=msg.thread, message_id=message_id, user_id=msg.user, score=score,
                             question=question, answer=answer, sources=sources))
