"""The training queue in Postgres: submit, claim, lease + heartbeat, re-queue, cancel, finish.

Every state change writes a `job_events` row in the same transaction, so the notifier sees it.

    job, created = await submit(ctx.db, Submission(recipe="lora", params={"steps": "20"}, ...))
    job = await claim(db, worker)            # SELECT ... FOR UPDATE SKIP LOCKED: each job once
    await extend_lease(db, job.id, job.attempts, lease_s=60)   # the worker's heartbeat
    await requeue_expired(db)                # a dead worker's job goes back (attempts + 1 on next claim)

Time is always the database's `now()`, so boxes with skewed clocks agree on leases.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.errors import UserError
from training.models import FINAL, Job, JobEvent, Worker

DUPLICATE_WINDOW_S = 600  # the same /train from the same user within this window is the same job

_EVENT_SQL = text("""
    INSERT INTO job_events (job_id, seq, kind, data)
    SELECT :job_id, coalesce(max(seq), 0) + 1, :kind, CAST(:data AS jsonb) FROM job_events WHERE job_id = :job_id
    RETURNING id""")


@dataclass
class Submission:
    """Everything `submit` needs; `params` are the validated values as strings/numbers (JSON-able)."""

    recipe: str
    params: dict[str, Any]
    requested_by: str
    platform: str
    workspace: str
    channel: str
    thread: str | None = None
    est_memory_gb: float = 0.0
    devices: int = 1
    needs_cuda: bool = False
    tags: list[str] = field(default_factory=list)
    priority: int = 0
    max_attempts: int = 3
    scheduled_for: datetime | None = None
    idempotency_key: str | None = None  # None = derived from user + recipe + params + time window


@dataclass(frozen=True)
class WorkerCaps:
    """What a worker can take: memory for one job, GPUs, device, tags."""

    id: str
    device: str
    memory_gb: float
    gpu_count: int = 0
    tags: tuple[str, ...] = ()


def params_key(sub: Submission, window: int) -> str:
    blob = json.dumps([sub.platform, sub.workspace, sub.requested_by, sub.recipe, sub.params, sub.devices,
                       sorted(sub.tags)], sort_keys=True, default=str)
    return f"train:{hashlib.sha256(blob.encode()).hexdigest()[:32]}:{window}"


def duplicate_keys(sub: Submission, now: float | None = None, window_s: int = DUPLICATE_WINDOW_S) -> list[str]:
    """The key for this time window first, then the previous window's (a duplicate across a boundary)."""
    bucket = int((now if now is not None else time.time()) // window_s)
    return [params_key(sub, bucket), params_key(sub, bucket - 1)]


async def add_event(session: AsyncSession, job_id: int, kind: str, **data: Any) -> None:
    """Append an event; the advisory lock keeps `seq` gap-free when two processes write for one job."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": job_id})
    await session.execute(_EVENT_SQL, {"job_id": job_id, "kind": kind, "data": json.dumps(data, default=str)})


async def submit(db: async_sessionmaker[AsyncSession], sub: Submission) -> tuple[Job, bool]:
    """Queue a job; returns (job, created). A duplicate idempotency key returns the existing job."""
    keys = [sub.idempotency_key] if sub.idempotency_key else duplicate_keys(sub)
    async with db() as session, session.begin():
        if len(keys) > 1:  # a derived key: an earlier identical request in the previous window counts
            existing = (await session.execute(select(Job).where(Job.idempotency_key == keys[1]))).scalar_one_or_none()
            if existing is not None:
                return existing, False
        values = dict(recipe=sub.recipe, params=sub.params, requested_by=sub.requested_by, platform=sub.platform,
                      workspace=sub.workspace, channel=sub.channel, thread=sub.thread,
                      est_memory_gb=sub.est_memory_gb, devices=sub.devices, needs_cuda=sub.needs_cuda,
                      tags=list(sub.tags), priority=sub.priority, max_attempts=sub.max_attempts,
                      scheduled_for=sub.scheduled_for, idempotency_key=keys[0])
        stmt = pg_insert(Job).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
        new_id = (await session.execute(stmt.returning(Job.id))).scalar_one_or_none()
        if new_id is None:
            job = (await session.execute(select(Job).where(Job.idempotency_key == keys[0]))).scalar_one()
            return job, False
        await add_event(session, new_id, "state", status="queued", by=sub.requested_by)
        job = (await session.execute(select(Job).where(Job.id == new_id))).scalar_one()
    return job, True


async def requeue_expired(db: async_sessionmaker[AsyncSession]) -> list[tuple[int, str]]:
    """Running jobs whose lease ran out (their worker died): queued again, or failed after max attempts."""
    sql = text("""
        UPDATE jobs SET
          status = CASE WHEN cancel_requested THEN 'cancelled'
                        WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
          error = CASE WHEN NOT cancel_requested AND attempts >= max_attempts
                       THEN 'The worker running it stopped answering (lease expired) on attempt '
                            || attempts || ' of ' || max_attempts || '.' ELSE error END,
          finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN now() END,
          worker_id = NULL, lease_until = NULL
        WHERE id IN (SELECT id FROM jobs WHERE status = 'running' AND lease_until < now()
                     FOR UPDATE SKIP LOCKED)
        RETURNING id, status, attempts, error""")
    async with db() as session, session.begin():
        rows = (await session.execute(sql)).all()
        for row in rows:
            await add_event(session, row.id, "state", status=row.status, attempt=row.attempts,
                            reason="lease expired", error=row.error)
    return [(row.id, row.status) for row in rows]


async def claim(db: async_sessionmaker[AsyncSession], worker: WorkerCaps, lease_s: float) -> Job | None:
    """Take the best queued job this worker can run, or None. Concurrent claimers never share a job."""
    await requeue_expired(db)
    sql = text("""
        UPDATE jobs SET status = 'running', attempts = attempts + 1, worker_id = :worker,
               lease_until = now() + make_interval(secs => :lease), started_at = coalesce(started_at, now())
        WHERE id = (SELECT id FROM jobs
                    WHERE status = 'queued' AND NOT cancel_requested
                      AND (scheduled_for IS NULL OR scheduled_for <= now())
                      AND est_memory_gb <= :memory AND devices <= :devices
                      AND (NOT needs_cuda OR :cuda) AND tags <@ CAST(:tags AS jsonb)
                    ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING id, attempts""")
    params = {"worker": worker.id, "lease": float(lease_s), "memory": worker.memory_gb,
              "devices": max(worker.gpu_count, 1), "cuda": worker.device == "cuda",
              "tags": json.dumps(list(worker.tags))}
    async with db() as session, session.begin():
        row = (await session.execute(sql, params)).first()
        if row is None:
            return None
        await add_event(session, row.id, "state", status="running", attempt=row.attempts, worker=worker.id)
        await session.execute(text("UPDATE workers SET current_job_id = :j, heartbeat_at = now() WHERE id = :w"),
                              {"j": row.id, "w": worker.id})
        return (await session.execute(select(Job).where(Job.id == row.id))).scalar_one()


async def extend_lease(db: async_sessionmaker[AsyncSession], job_id: int, attempt: int, lease_s: float) -> str:
    """The heartbeat for a running job: 'ok', 'cancel' (cancel requested) or 'lost' (no longer ours)."""
    sql = text("""UPDATE jobs SET lease_until = now() + make_interval(secs => :lease)
                  WHERE id = :id AND attempts = :attempt AND status = 'running' RETURNING cancel_requested""")
    async with db() as session, session.begin():
        row = (await session.execute(sql, {"id": job_id, "attempt": attempt, "lease": float(lease_s)})).first()
    if row is None:
        return "lost"
    return "cancel" if row.cancel_requested else "ok"


async def finish(db: async_sessionmaker[AsyncSession], job_id: int, attempt: int, status: str, *,
                 result: dict[str, Any] | None = None, error: str | None = None, **event: Any) -> bool:
    """Close a running job (only the attempt that holds it may); False when it was no longer ours."""
    assert status in FINAL
    sql = text("""UPDATE jobs SET status = :status, result = CAST(:result AS jsonb), error = :error,
                  finished_at = now(), lease_until = NULL
                  WHERE id = :id AND attempts = :attempt AND status = 'running' RETURNING id""")
    async with db() as session, session.begin():
        row = (await session.execute(sql, {"id": job_id, "attempt": attempt, "status": status, "error": error,
                                           "result": json.dumps(result, default=str) if result is not None
                                           else None})).first()
        if row is None:
            return False
        await add_event(session, job_id, "state", status=status, attempt=attempt, error=error, result=result,
                        **event)
    return True


async def cancel(db: async_sessionmaker[AsyncSession], job_id: int, by: str) -> str:
    """Cancel: a queued job at once; a running one cooperatively (the recipe stops between steps)."""
    async with db() as session, session.begin():
        job = (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one_or_none()
        if job is None:
            raise UserError(f"There is no job {job_id}. See /jobs.")
        if job.status in FINAL:
            return f"Job {job_id} already {job.status}."
        if job.status == "queued":
            job.status, job.cancel_requested = "cancelled", True
            job.finished_at = await session.scalar(text("SELECT now()"))
            await add_event(session, job_id, "state", status="cancelled", by=by)
            return f"Cancelled job {job_id} (it had not started)."
        if job.cancel_requested:
            return f"Job {job_id} is already stopping."
        job.cancel_requested = True
        await add_event(session, job_id, "log", message=f"cancel requested by {by}")
        return f"Stopping job {job_id}: it stops after the current step."


async def get_job(db: async_sessionmaker[AsyncSession], job_id: int) -> Job:
    async with db() as session:
        job = await session.get(Job, job_id)
    if job is None:
        raise UserError(f"There is no job {job_id}. See /jobs.")
    return job


async def list_jobs(db: async_sessionmaker[AsyncSession], *, limit: int = 20,
                    statuses: tuple[str, ...] | None = None) -> list[Job]:
    stmt = select(Job).order_by(Job.id.desc()).limit(limit)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    async with db() as session:
        return list((await session.execute(stmt)).scalars())


async def events(db: async_sessionmaker[AsyncSession], job_id: int) -> list[JobEvent]:
    async with db() as session:
        return list((await session.execute(select(JobEvent).where(JobEvent.job_id == job_id)
                                           .order_by(JobEvent.seq))).scalars())


async def live_workers(db: async_sessionmaker[AsyncSession], within_s: float = 120.0) -> list[Worker]:
    """Workers that sent a heartbeat recently."""
    stmt = select(Worker).where(Worker.heartbeat_at > text(f"now() - interval '{float(within_s)} seconds'"))
    async with db() as session:
        return list((await session.execute(stmt.order_by(Worker.id))).scalars())


def can_take(worker: Worker, *, memory_gb: float, devices: int, needs_cuda: bool, tags: list[str]) -> bool:
    """The same test as `claim`'s SQL, for telling the admin which workers could run a job."""
    return (worker.memory_gb >= memory_gb and max(worker.gpu_count, 1) >= devices
            and (worker.device == "cuda" or not needs_cuda) and set(tags) <= set(worker.tags or []))
