"""Scheduled training: `/train ... at=2026-12-24T02:00` or `cron="0 2 * * 6"` as persisted APScheduler jobs.

The scheduler only enqueues, and always with an idempotency key made of the schedule id and the fire
time, so two bot replicas firing the same schedule (or one firing twice) queue one job.

    schedule_training(ctx, payload, at=datetime(2026, 12, 24, 2, tzinfo=UTC))
    schedule_training(ctx, payload, cron="0 2 * * 6")
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from bot import scheduler
from bot.context import Context
from bot.errors import UserError
from training import queue

log = logging.getLogger(__name__)
PREFIX = "train:"


def parse_at(raw: str, now: datetime | None = None) -> datetime:
    """`2026-12-24T02:00` (UTC unless an offset is given), which must lie in the future."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise UserError(f"Bad time at={raw}: use ISO format, e.g. at=2026-12-24T02:00 (UTC) or "
                        "at=2026-12-24T02:00+01:00.") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= (now or datetime.now(UTC)):
        raise UserError(f"at={raw} is in the past; pick a future time (UTC).")
    return when


def fire_key(schedule_id: str, fire_time: datetime) -> str:
    """One key per schedule and fire minute: a double fire (or a second replica) maps to the same job."""
    return f"sched:{schedule_id}@{fire_time.astimezone(UTC).replace(second=0, microsecond=0).isoformat()}"


async def enqueue(ctx: Context, schedule_id: str, payload: dict[str, Any], fire_time: datetime) -> tuple[Any, bool]:
    sub = queue.Submission(**{**payload, "idempotency_key": fire_key(schedule_id, fire_time)})
    return await queue.submit(ctx.db, sub)


async def fire(schedule_id: str, payload: dict[str, Any], at: str | None = None) -> None:
    """The persisted APScheduler job (module-level, plain arguments)."""
    fire_time = datetime.fromisoformat(at) if at else datetime.now(UTC)
    job, created = await enqueue(scheduler.current(), schedule_id, payload, fire_time)
    log.info("schedule %s fired: job %s (%s)", schedule_id, job.id, "queued" if created else "already queued")


def schedule_training(ctx: Context, sub: queue.Submission, *, at: datetime | None = None,
                      cron: str | None = None) -> tuple[str, datetime | None]:
    """Persist the schedule; returns (schedule id, next fire time)."""
    payload = {k: v for k, v in asdict(sub).items() if k not in ("idempotency_key", "scheduled_for")}
    schedule_id = uuid.uuid4().hex[:10]
    sched = scheduler.get(ctx)
    if cron:
        trigger = scheduler.cron_trigger(cron)
        job = sched.add_job(f"{__name__}:fire", trigger, args=[schedule_id, payload], id=PREFIX + schedule_id,
                            name=f"/train {sub.recipe} cron={cron}")
    else:
        assert at is not None
        job = sched.add_job(f"{__name__}:fire", "date", run_date=at, args=[schedule_id, payload, at.isoformat()],
                            id=PREFIX + schedule_id, name=f"/train {sub.recipe} at={at.isoformat()}")
    return schedule_id, getattr(job, "next_run_time", None)
