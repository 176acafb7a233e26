"""The notifier: one edited progress message and the final report per job, in the origin thread, exactly once."""

from __future__ import annotations

import asyncio
import base64
import io

from sqlalchemy import func, select, text

from tests.fakes.recording_platform import RecordingPlatform
from training import queue
from training.models import JobEvent
from training.notifier import Notifier
from training.queue import Submission, WorkerCaps

CPU = WorkerCaps(id="w1", device="cpu", memory_gb=8)


def png_bytes() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([3, 2, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


async def running_job(ctx, key: str, platform: str = "slack"):
    await queue.submit(ctx.db, Submission(recipe="lora", params={"steps": "3"}, requested_by="U1", platform=platform,
                                          workspace="T", channel="C9", thread="1700.1", idempotency_key=key))
    return await queue.claim(ctx.db, CPU, 60)


async def emit(ctx, job_id: int, kind: str, **data) -> None:
    async with ctx.db() as session, session.begin():
        await queue.add_event(session, job_id, kind, **data)


async def unposted(ctx) -> int:
    async with ctx.db() as session:
        return await session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.posted_at.is_(None)))


async def _reset(ctx) -> RecordingPlatform:
    async with ctx.db() as session, session.begin():
        await session.execute(text("DELETE FROM jobs"))
    fake = RecordingPlatform("slack")
    ctx.platforms.clear()
    ctx.platforms["slack"] = fake
    return fake


async def test_progress_is_one_edited_message_then_the_report_with_png(ctx):
    fake = await _reset(ctx)
    job = await running_job(ctx, "n1")
    notifier = Notifier(ctx)
    await emit(ctx, job.id, "progress", step=1, total=3, loss=2.5, lr=2e-4, tokens_per_s=120.0, eta_s=30)
    await notifier.tick()
    assert len(fake.posts) == 1
    channel, thread, first, message_id = fake.posts[0]
    assert (channel, thread) == ("C9", "1700.1")
    assert "step 1/3" in first.text and "loss 2.5000" in first.text and "ETA 30s" in first.text
    await emit(ctx, job.id, "progress", step=2, total=3, loss=2.0, lr=2e-4, tokens_per_s=130.0, eta_s=15)
    await notifier.tick()
    assert len(fake.posts) == 1 and fake.updates[-1][1] == message_id and "step 2/3" in fake.updates[-1][2].text

    png = png_bytes()
    await queue.finish(ctx.db, job.id, job.attempts, "succeeded", result={"ppl_before": 7.5, "ppl_after": 6.6},
                       metrics={"ppl_before": 7.5, "ppl_after": 6.6}, png_b64=base64.b64encode(png).decode(),
                       png_name="loss.png", artifacts=[{"kind": "adapter", "path": "/art/job-1/adapter"}])
    await notifier.tick()
    assert fake.updates[-1][1] == message_id and "succeeded" in fake.updates[-1][2].text
    assert len(fake.posts) == 2
    channel, thread, report, _ = fake.posts[1]
    assert (channel, thread) == ("C9", "1700.1")
    assert "| ppl_after | 6.6 |" in report.text and "/art/job-1/adapter" in report.text
    assert report.files[0].data == png and report.files[0].mime == "image/png"
    assert await unposted(ctx) == 0


async def test_events_are_posted_exactly_once_across_a_restart_and_replicas(ctx):
    fake = await _reset(ctx)
    job = await running_job(ctx, "n2")
    for step in range(1, 4):
        await emit(ctx, job.id, "progress", step=step, total=3, loss=1.0)
    posted = await asyncio.gather(Notifier(ctx).tick(), Notifier(ctx).tick())  # two bot replicas at once
    assert sorted(posted) == [0, 5] and len(fake.posts) == 1  # queued, running, 3 x progress
    await queue.finish(ctx.db, job.id, job.attempts, "succeeded", result={"loss": 0.5}, metrics={"loss": 0.5})
    await Notifier(ctx).tick()
    assert len(fake.posts) == 2
    restarted = Notifier(ctx)  # a new bot process: nothing is posted again
    assert await restarted.tick() == 0
    assert len(fake.posts) == 2 and len(fake.updates) == 1


async def test_a_platform_error_posts_nothing_and_is_retried_once(ctx):
    fake = await _reset(ctx)
    job = await running_job(ctx, "n3")
    await queue.finish(ctx.db, job.id, job.attempts, "failed",
                       error="Traceback (most recent call last):\n" + "\n".join(f"  frame {i}" for i in range(30))
                       + "\ntorch.OutOfMemoryError: CUDA out of memory")
    fake.fail_next = 1  # the platform is down for this tick
    notifier = Notifier(ctx)
    assert await notifier.tick() == 0 and fake.posts == [] and await unposted(ctx) > 0
    fake.fail_next = 0
    await notifier.tick()
    failure = [r for _, _, r, _ in fake.posts if r.error]
    assert len(failure) == 1
    assert "failed after 1 attempt" in failure[0].text and "CUDA out of memory" in failure[0].text
    assert "frame 29" in failure[0].text and "frame 3\n" not in failure[0].text  # the last lines only
    assert await notifier.tick() == 0 and len([r for _, _, r, _ in fake.posts if r.error]) == 1


async def test_jobs_from_platforms_this_bot_does_not_run_are_left_for_another(ctx):
    fake = await _reset(ctx)
    job = await running_job(ctx, "n4", platform="discord")
    await emit(ctx, job.id, "progress", step=1, total=3)
    assert await Notifier(ctx).tick() == 0 and fake.posts == []
    assert await unposted(ctx) == 3  # queued, running, progress: waiting for the Discord bot
    ctx.platforms.clear()
