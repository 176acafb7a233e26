"""APScheduler on the bot's asyncio loop, with its job store in Postgres so schedules survive restarts.

Persisted jobs must be importable module-level functions with plain arguments; they reach the running
bot through `current()`:

    from bot import scheduler
    scheduler.get(ctx).add_job("knowledge.sync:scheduled_sync", "cron", args=[source_id],
                               id=f"sync:{source_id}", replace_existing=True, **cron_fields("0 * * * *"))

    async def scheduled_sync(source_id: int) -> None:
        ctx = scheduler.current()
        ...
"""

from __future__ import annotations

from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.context import Context
from bot.errors import UserError

_current: Context | None = None


def current() -> Context:
    """The running bot's context, for persisted jobs."""
    if _current is None:
        raise RuntimeError("the scheduler is not running in this process")
    return _current


def get(ctx: Context, *, start: bool = True) -> AsyncIOScheduler:
    """The process's scheduler (created on first use, started unless `start=False`)."""
    global _current
    sched: AsyncIOScheduler | None = ctx.services.get("scheduler")
    if sched is None:
        engine = ctx.services["engine"]
        sync_url = engine.url.render_as_string(hide_password=False)
        store = SQLAlchemyJobStore(url=sync_url, tablename="apscheduler_jobs")
        sched = AsyncIOScheduler(jobstores={"default": store}, job_defaults={"coalesce": True,
                                                                            "misfire_grace_time": 3600})
        ctx.services["scheduler"] = sched
        _current = ctx
    if start and not sched.running:
        sched.start()
    return sched


def cron_trigger(expr: str) -> CronTrigger:
    """A 5-field cron expression as a trigger, with a clear error for a bad one."""
    try:
        return CronTrigger.from_crontab(expr)
    except ValueError as err:
        raise UserError(f"Bad cron expression '{expr}': {err}. Example: cron=\"0 2 * * 6\" (Saturdays 02:00).") \
            from None


def shutdown(ctx: Context) -> None:
    global _current
    sched: Any = ctx.services.pop("scheduler", None)
    if sched is not None and sched.running:
        sched.shutdown(wait=False)
    _current = None
