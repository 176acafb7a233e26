"""`job_status`: one training job in detail: status, progress, metrics or error."""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import Field
from sqlalchemy import select

from handlers.tools import ToolContext, ToolError, tool
from handlers.tools.list_jobs import line, visible


@tool("job_status", description="Status, latest progress and result of one training job.")
async def job_status(tc: ToolContext, job_id: Annotated[int, Field(description="the job number", ge=1)]) -> str:
    from training.models import Job, JobEvent

    async with tc.ctx.db() as session:
        job = (await session.execute(visible(select(Job), Job, tc).where(Job.id == job_id))).scalar_one_or_none()
        if job is None:
            raise ToolError(f"there is no job {job_id} you can see")
        event = (await session.execute(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.kind == "progress")
                                       .order_by(JobEvent.seq.desc()).limit(1))).scalar_one_or_none()
    parts = [line(job), f"params: {json.dumps(job.params, default=str)}"]
    if event is not None:
        parts.append(f"progress: {json.dumps(event.data, default=str)}")
    if job.result:
        parts.append(f"result: {json.dumps(job.result, default=str)}")
    if job.error:
        parts.append(f"error: {job.error[:500]}")
    return "\n".join(parts)
