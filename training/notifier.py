"""The bot-side notifier: job events -> one edited progress message + the final report, in the origin thread.

Runs in the bot process (started by `run_platforms` and `ladder chat`), never on the GPU box:

    task = notifier.start(ctx)       # polls job_events not yet posted, for the platforms this bot runs

Per job, one transaction locks the job row (SKIP LOCKED: two bot replicas never post the same job),
posts or edits through `ctx.platforms[platform]`, and marks the events posted together with the
progress message id. A platform error rolls that job's transaction back and it is tried again.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update

from bot.context import Context
from bot.messages import FileOut, Reply
from training.models import FINAL, Job, JobEvent

log = logging.getLogger(__name__)
BATCH = 500


def _duration(job: Job, now: datetime | None) -> str:
    if not job.started_at or not now:
        return ""
    secs = int((now - job.started_at).total_seconds())
    return f" in {secs // 3600}h {secs % 3600 // 60}m" if secs >= 3600 else f" in {secs // 60}m {secs % 60}s"


def _eta(seconds: Any) -> str:
    try:
        s = int(float(seconds))
    except (TypeError, ValueError):
        return ""
    return f"ETA {s // 60}m {s % 60:02d}s" if s >= 60 else f"ETA {s}s"


def progress_line(data: dict[str, Any]) -> str:
    """`step 5/20 · loss 1.234 · lr 2.0e-04 · 812 tok/s · ETA 1m 10s`."""
    parts = []
    if "step" in data:
        parts.append(f"step {data['step']}" + (f"/{data['total']}" if data.get("total") else ""))
    if isinstance(data.get("loss"), int | float):
        parts.append(f"loss {data['loss']:.4f}")
    if isinstance(data.get("lr"), int | float):
        parts.append(f"lr {data['lr']:.1e}")
    if isinstance(data.get("tokens_per_s"), int | float):
        parts.append(f"{data['tokens_per_s']:.0f} tok/s")
    if data.get("eta_s") is not None:
        parts.append(_eta(data["eta_s"]))
    return " · ".join(p for p in parts if p)


def progress_text(job: Job, state: dict[str, Any] | None, progress: dict[str, Any] | None,
                  note: str | None) -> str:
    status = job.status
    head = f"Job {job.id} · {job.recipe} · {status}"
    if status == "running" and job.attempts > 1:
        head += f" (attempt {job.attempts} of {job.max_attempts})"
    if state and state.get("reason") == "lease expired" and status == "queued":
        head += " again: its worker stopped answering; it resumes from its last checkpoint"
    lines = [head]
    if progress:
        lines.append(progress_line(progress))
    if note:
        lines.append(note)
    return "\n".join(lines)


def metrics_table(metrics: dict[str, Any]) -> str:
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()
            if not isinstance(v, dict | list)]
    return "\n".join(["| metric | value |", "|---|---|", *rows]) if rows else ""


def final_reply(job: Job, data: dict[str, Any], now: datetime | None) -> Reply:
    """The report: metrics table (or the recipe's report), loss-curve PNG, artifacts; or the error's tail."""
    status = data.get("status", job.status)
    if status == "succeeded":
        body = data.get("report") or metrics_table(data.get("metrics") or data.get("result") or {})
        where = [f"  {a['kind']}: {a['path']}" for a in data.get("artifacts", []) if a.get("kind") != "plot"]
        text_ = f"Job {job.id} ({job.recipe}) succeeded{_duration(job, now)}.\n{body}".rstrip()
        if where:
            text_ += "\nArtifacts:\n" + "\n".join(where)
        text_ += f"\nDeploy it with /deploy {job.id} NAME"
        files: tuple[FileOut, ...] = ()
        if data.get("png_b64"):
            files = (FileOut(name=f"job-{job.id}-{data.get('png_name', 'loss.png')}",
                             data=base64.b64decode(data["png_b64"]), title=f"Job {job.id} loss curve"),)
        return Reply(text=text_, files=files, thread=job.thread)
    if status == "failed":
        error = (data.get("error") or job.error or "no error text").strip()
        tail = "\n".join(error.splitlines()[-15:])
        return Reply(text=f"Job {job.id} ({job.recipe}) failed after {job.attempts} attempt(s):\n```\n{tail}\n```",
                     thread=job.thread, error=True)
    return Reply(text=f"Job {job.id} ({job.recipe}) was cancelled" + (f" by {data['by']}" if data.get("by") else "")
                 + ".", thread=job.thread)


class Notifier:
    def __init__(self, ctx: Context, interval_s: float = 2.0):
        self.ctx, self.interval_s = ctx, interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("notifier tick failed; retrying")
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> int:
        """Post every unposted event of the jobs whose platform this bot runs; returns how many."""
        platforms = list(self.ctx.platforms)
        if not platforms:
            return 0
        stmt = (select(JobEvent.job_id).join(Job, Job.id == JobEvent.job_id)
                .where(JobEvent.posted_at.is_(None), Job.platform.in_(platforms))
                .group_by(JobEvent.job_id).order_by(JobEvent.job_id))
        async with self.ctx.db() as session:
            job_ids = list((await session.execute(stmt)).scalars())
        posted = 0
        for job_id in job_ids:
            try:
                posted += await self.post_job(job_id)
            except Exception as err:
                log.warning("could not post events of job %s (will retry): %s", job_id, err)
        return posted

    async def post_job(self, job_id: int) -> int:
        async with self.ctx.db() as session, session.begin():
            job = (await session.execute(select(Job).where(Job.id == job_id)
                                         .with_for_update(skip_locked=True))).scalar_one_or_none()
            if job is None:
                return 0
            events = list((await session.execute(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.posted_at.is_(None))
                .order_by(JobEvent.seq).limit(BATCH))).scalars())
            if not events:
                return 0
            platform = self.ctx.platforms[job.platform]
            state = next((e.data for e in reversed(events) if e.kind == "state"), None)
            final = next((e.data for e in events if e.kind == "state" and e.data.get("status") in FINAL), None)
            progress = await session.scalar(select(JobEvent.data).where(
                JobEvent.job_id == job_id, JobEvent.kind == "progress").order_by(JobEvent.seq.desc()).limit(1))
            last_log = await session.scalar(select(JobEvent.data).where(
                JobEvent.job_id == job_id, JobEvent.kind == "log").order_by(JobEvent.seq.desc()).limit(1))
            note = last_log.get("message") if last_log else None
            reply = Reply(text=progress_text(job, state, progress, note), thread=job.thread)
            if job.progress_message_id:
                await platform.update(job.channel, job.progress_message_id, reply)
            else:
                job.progress_message_id = await platform.post(job.channel, reply, thread=job.thread)
            if final is not None:
                now = await session.scalar(text("SELECT now()"))
                await platform.post(job.channel, final_reply(job, final, now), thread=job.thread)
            await session.execute(update(JobEvent).where(JobEvent.id.in_([e.id for e in events]))
                                  .values(posted_at=text("now()")))
            return len(events)


def start(ctx: Context, interval_s: float = 2.0) -> asyncio.Task:
    """Run the notifier on the bot's loop (idempotent per context)."""
    task = ctx.services.get("training_notifier")
    if task is None or task.done():
        task = asyncio.get_running_loop().create_task(Notifier(ctx, interval_s).run(), name="training-notifier")
        ctx.services["training_notifier"] = task
    return task


def stop(ctx: Context) -> None:
    task = ctx.services.pop("training_notifier", None)
    if task is not None:
        task.cancel()
