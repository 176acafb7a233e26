"""`list_jobs`: recent training jobs. Admins see all; others see the jobs of this channel or their own."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import or_, select

from handlers.tools import ToolContext, tool

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")


def visible(stmt: Any, job: Any, tc: ToolContext) -> Any:
    """Filter a job query to what the asking human may see (origin channels can be private)."""
    if tc.msg.is_admin:
        return stmt
    msg = tc.msg
    return stmt.where(job.platform == msg.platform, or_(job.channel == msg.channel, job.requested_by == msg.user))


def line(job: Any) -> str:
    when = job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else "?"
    return f"job {job.id}: {job.recipe} {job.status} (requested by {job.requested_by}, {when})"


@tool("list_jobs", description="List recent training jobs with their status.")
async def list_jobs(tc: ToolContext,
                    status: Annotated[str | None, Field(description="only this status: " + ", ".join(STATUSES))] = None,
                    limit: Annotated[int, Field(ge=1, le=50)] = 10) -> str:
    from training.models import Job

    stmt = visible(select(Job), Job, tc).order_by(Job.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Job.status == status)
    async with tc.ctx.db() as session:
        jobs = (await session.execute(stmt)).scalars().all()
    return "\n".join(line(j) for j in jobs) if jobs else "No training jobs."
