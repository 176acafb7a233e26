"""ORM tables of `training` (on the shared `bot.models.Base`); the schema changes only through migrations.

    jobs        one row per training run: recipe + params, where it was asked, who holds its lease
    job_events  append-only progress/metric/log/artifact/state events; the notifier marks them posted
    artifacts   files a job produced (adapter, model, tokenizer, plot, report) in the artifact dir
    workers     GPU (or CPU) boxes running `ladder worker`, with what they can take and a heartbeat
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bot.models import Base, Json, now_column

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_priority_id", "status", "priority", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipe: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    status: Mapped[str] = mapped_column(String(16), server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # times a worker started it
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="3")
    priority: Mapped[int] = mapped_column(Integer, server_default="0")
    idempotency_key: Mapped[str] = mapped_column(String(256), unique=True)
    requested_by: Mapped[str] = mapped_column(String(128))
    platform: Mapped[str] = mapped_column(String(32))
    workspace: Mapped[str] = mapped_column(String(128))
    channel: Mapped[str] = mapped_column(String(128))
    thread: Mapped[str | None] = mapped_column(String(128))
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default="false")
    progress_message_id: Mapped[str | None] = mapped_column(String(128))
    scheduled_for: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    est_memory_gb: Mapped[float] = mapped_column(Float, server_default="0")
    devices: Mapped[int] = mapped_column(Integer, server_default="1")
    needs_cuda: Mapped[bool] = mapped_column(Boolean, server_default="false")
    tags: Mapped[list[str]] = mapped_column(Json, server_default="[]")  # a worker must have all of these
    checkpoint_path: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = now_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "seq"), Index("ix_job_events_posted_at_id", "posted_at", "id"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # progress | metric | log | artifact | state
    data: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    created_at: Mapped[datetime] = now_column()
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))  # adapter | model | tokenizer | plot | report | checkpoint
    path: Mapped[str] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(Json, server_default="{}")
    created_at: Mapped[datetime] = now_column()


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(256))
    device: Mapped[str] = mapped_column(String(16))  # cpu | cuda
    gpu_name: Mapped[str | None] = mapped_column(String(256))
    gpu_count: Mapped[int] = mapped_column(Integer, server_default="0")
    gpu_memory_gb: Mapped[float | None] = mapped_column(Float)
    memory_gb: Mapped[float] = mapped_column(Float)  # what a job may use: GPU memory, or RAM on a CPU box
    torch_version: Mapped[str | None] = mapped_column(String(64))
    cuda_version: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[str]] = mapped_column(Json, server_default="[]")
    current_job_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = now_column()
    heartbeat_at: Mapped[datetime] = now_column()
