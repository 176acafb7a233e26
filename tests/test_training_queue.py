"""The training queue on the real embedded Postgres: exactly-once claims, leases, retries, cancel, idempotency."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text

from bot import db as botdb
from training import queue
from training.models import Job, JobEvent
from training.queue import Submission, WorkerCaps


def sub(**over) -> Submission:
    values = dict(recipe="count", params={"steps": 3}, requested_by="admin", platform="console",
                  workspace="local", channel="test")
    values.update(over)
    return Submission(**values)


CPU = WorkerCaps(id="w-cpu", device="cpu", memory_gb=8.0)


async def _clear(ctx) -> None:
    async with ctx.db() as session, session.begin():
        await session.execute(text("DELETE FROM jobs"))


async def test_fifty_jobs_three_concurrent_claimers_each_claimed_once(ctx, database_url):
    await _clear(ctx)
    for i in range(50):
        await queue.submit(ctx.db, sub(idempotency_key=f"fifty:{i}"))
    engines = [botdb.make_engine(database_url) for _ in range(3)]

    async def claimer(n: int) -> list[int]:
        maker = botdb.sessionmaker(engines[n])
        got = []
        while (job := await queue.claim(maker, WorkerCaps(id=f"w{n}", device="cpu", memory_gb=8), 60)) is not None:
            got.append(job.id)
        return got

    try:
        results = await asyncio.gather(*(claimer(n) for n in range(3)))
    finally:
        for engine in engines:
            await engine.dispose()
    claimed = [j for r in results for j in r]
    assert len(claimed) == 50 and len(set(claimed)) == 50
    async with ctx.db() as session:
        rows = (await session.execute(select(Job.status, Job.attempts))).all()
        running_events = await session.scalar(select(func.count()).select_from(JobEvent).where(
            JobEvent.data["status"].as_string() == "running"))
    assert {(s, a) for s, a in rows} == {("running", 1)}
    assert running_events == 50


async def test_claim_respects_memory_devices_cuda_and_tags(ctx):
    await _clear(ctx)
    big, _ = await queue.submit(ctx.db, sub(idempotency_key="big", est_memory_gb=40.0))
    cuda, _ = await queue.submit(ctx.db, sub(idempotency_key="cuda", needs_cuda=True))
    tagged, _ = await queue.submit(ctx.db, sub(idempotency_key="tag", tags=["a100"]))
    multi, _ = await queue.submit(ctx.db, sub(idempotency_key="multi", devices=4))
    assert await queue.claim(ctx.db, CPU, 60) is None
    gpu = WorkerCaps(id="w-gpu", device="cuda", memory_gb=80.0, gpu_count=4, tags=("a100", "fast"))
    got = {(await queue.claim(ctx.db, gpu, 60)).id for _ in range(4)}
    assert got == {big.id, cuda.id, tagged.id, multi.id}


async def test_priority_then_age(ctx):
    await _clear(ctx)
    low, _ = await queue.submit(ctx.db, sub(idempotency_key="low"))
    high, _ = await queue.submit(ctx.db, sub(idempotency_key="high", priority=5))
    assert (await queue.claim(ctx.db, CPU, 60)).id == high.id
    assert (await queue.claim(ctx.db, CPU, 60)).id == low.id


async def test_same_key_twice_is_one_job(ctx):
    await _clear(ctx)
    first, created1 = await queue.submit(ctx.db, sub(idempotency_key="sched:7@2026-12-24T02:00"))
    again, created2 = await asyncio.gather(*(queue.submit(ctx.db, sub(idempotency_key="sched:7@2026-12-24T02:00"))
                                             for _ in range(2)))
    assert created1 and not again[1] and not created2[1]
    assert again[0].id == created2[0].id == first.id
    async with ctx.db() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1


async def test_derived_key_duplicates_within_window_also_across_a_boundary(ctx):
    await _clear(ctx)
    s = sub(params={"steps": 9})
    keys_now = queue.duplicate_keys(s, now=1_000_000.0)
    keys_next = queue.duplicate_keys(s, now=1_000_000.0 + queue.DUPLICATE_WINDOW_S)
    assert keys_next[1] == keys_now[0]  # the next window still finds the previous request
    assert queue.duplicate_keys(sub(params={"steps": 10}), now=1_000_000.0)[0] != keys_now[0]
    assert queue.duplicate_keys(sub(requested_by="other"), now=1_000_000.0)[0] != queue.duplicate_keys(
        sub(), now=1_000_000.0)[0]
    a, created = await queue.submit(ctx.db, s)
    b, again = await queue.submit(ctx.db, sub(params={"steps": 9}))
    assert created and not again and a.id == b.id


async def test_expired_lease_requeues_with_next_attempt_then_fails_after_max(ctx):
    await _clear(ctx)
    job, _ = await queue.submit(ctx.db, sub(idempotency_key="lease", max_attempts=2))
    first = await queue.claim(ctx.db, CPU, 0.05)
    assert first.attempts == 1
    await asyncio.sleep(0.1)
    assert await queue.requeue_expired(ctx.db) == [(job.id, "queued")]
    assert await queue.extend_lease(ctx.db, job.id, 1, 60) == "lost"  # the dead attempt can't come back
    second = await queue.claim(ctx.db, CPU, 0.05)
    assert second.id == job.id and second.attempts == 2
    await asyncio.sleep(0.1)
    assert await queue.requeue_expired(ctx.db) == [(job.id, "failed")]
    final = await queue.get_job(ctx.db, job.id)
    assert final.status == "failed" and "attempt 2 of 2" in final.error
    states = [e.data.get("status") for e in await queue.events(ctx.db, job.id) if e.kind == "state"]
    assert states == ["queued", "running", "queued", "running", "failed"]
    assert [e.seq for e in await queue.events(ctx.db, job.id)] == list(range(1, 6))


async def test_finish_is_fenced_by_attempt(ctx):
    await _clear(ctx)
    job, _ = await queue.submit(ctx.db, sub(idempotency_key="fence"))
    claimed = await queue.claim(ctx.db, CPU, 60)
    assert not await queue.finish(ctx.db, job.id, claimed.attempts + 1, "succeeded", result={})
    assert await queue.finish(ctx.db, job.id, claimed.attempts, "succeeded", result={"loss": 1.0})
    assert not await queue.finish(ctx.db, job.id, claimed.attempts, "failed", error="late")
    assert (await queue.get_job(ctx.db, job.id)).status == "succeeded"


async def test_cancel_queued_at_once_running_cooperatively(ctx):
    await _clear(ctx)
    queued, _ = await queue.submit(ctx.db, sub(idempotency_key="c1"))
    assert "Cancelled job" in await queue.cancel(ctx.db, queued.id, "admin")
    assert (await queue.get_job(ctx.db, queued.id)).status == "cancelled"
    assert "already cancelled" in await queue.cancel(ctx.db, queued.id, "admin")
    running, _ = await queue.submit(ctx.db, sub(idempotency_key="c2"))
    claimed = await queue.claim(ctx.db, CPU, 60)
    assert claimed.id == running.id
    assert "stops after the current step" in await queue.cancel(ctx.db, running.id, "admin")
    assert await queue.extend_lease(ctx.db, running.id, claimed.attempts, 60) == "cancel"
    assert await queue.claim(ctx.db, CPU, 60) is None


async def test_cancel_unknown_job_is_a_clear_error(ctx):
    import pytest

    from bot.errors import UserError

    with pytest.raises(UserError, match="no job 999999"):
        await queue.cancel(ctx.db, 999999, "admin")


async def test_scheduled_for_future_is_not_claimed(ctx):
    await _clear(ctx)
    async with ctx.db() as session:
        later = await session.scalar(text("SELECT now() + interval '1 hour'"))
    await queue.submit(ctx.db, sub(idempotency_key="later", scheduled_for=later))
    assert await queue.claim(ctx.db, CPU, 60) is None
