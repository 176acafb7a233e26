"""The `RunContext` a recipe gets inside the job's child process: events, artifacts, checkpoints, cancel.

Synchronous on purpose (recipes call it from their training loop). Every write is fenced by the
attempt number: once the lease is lost (the job was re-queued and another worker took it), writes
from this process are dropped and `should_stop()` turns true, so a stale process never speaks twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from training.queue import _EVENT_SQL

log = logging.getLogger(__name__)
STOP_CHECK_INTERVAL_S = 1.0

_OURS = "SELECT 1 FROM jobs WHERE id = :job_id AND attempts = :attempt AND status = 'running'"


class JobRunContext:
    """Implements `training.recipes.base.RunContext` over the database (only rank 0 writes)."""

    def __init__(self, engine: Engine, *, job_id: int, attempt: int, config: Any, workdir: Path, device: str,
                 resume_from: Path | None, database_url: str | None = None):
        self.engine = engine
        self.job_id, self.attempt = job_id, attempt
        self.config, self.workdir, self.device, self.resume_from = config, workdir, device, resume_from
        self.database_url = database_url
        self.is_main = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, rank 0 reports
        self.parent = os.getppid()
        self.stop_reason: str | None = None
        self._checked = 0.0
        workdir.mkdir(parents=True, exist_ok=True)

    def _fenced(self, conn: Any) -> bool:
        return conn.execute(text(_OURS), {"job_id": self.job_id, "attempt": self.attempt}).first() is not None

    def _event(self, conn: Any, kind: str, data: dict[str, Any]) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.job_id})
        conn.execute(_EVENT_SQL, {"job_id": self.job_id, "kind": kind, "data": json.dumps(data, default=str)})

    def emit(self, kind: str, **data: Any) -> None:
        """progress (step, total, loss, lr, tokens_per_s, eta_s) | metric | log."""
        if not self.is_main:
            return
        with self.engine.begin() as conn:
            if self._fenced(conn):
                self._event(conn, kind, data)

    def artifact(self, kind: str, path: Path, **meta: Any) -> None:
        """Record a file the job produced (adapter, model, tokenizer, plot, report)."""
        if not self.is_main:
            return
        with self.engine.begin() as conn:
            if not self._fenced(conn):
                return
            conn.execute(text("INSERT INTO artifacts (job_id, kind, path, meta) "
                              "VALUES (:j, :k, :p, CAST(:m AS jsonb))"),
                         {"j": self.job_id, "k": kind, "p": str(path), "m": json.dumps(meta, default=str)})
            self._event(conn, "artifact", {"kind": kind, "path": str(path), **meta})

    def checkpoint(self, path: Path) -> None:
        """The latest resumable checkpoint; a re-queued attempt starts from it (`resume_from`)."""
        if not self.is_main:
            return
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET checkpoint_path = :p WHERE id = :job_id AND attempts = :attempt "
                              "AND status = 'running'"), {"p": str(path), "job_id": self.job_id,
                                                          "attempt": self.attempt})

    def should_stop(self) -> bool:
        """True once a cancel was requested, the job is no longer ours, or our worker died."""
        if self.stop_reason:
            return True
        if os.getppid() != self.parent:
            self.stop_reason = "worker gone"
            return True
        now = time.monotonic()
        if now - self._checked < STOP_CHECK_INTERVAL_S:
            return False
        self._checked = now
        with self.engine.connect() as conn:
            row = conn.execute(text("SELECT status, attempts, cancel_requested FROM jobs WHERE id = :j"),
                               {"j": self.job_id}).first()
        if row is None or row.status != "running" or row.attempts != self.attempt:
            self.stop_reason = "lease lost"
        elif row.cancel_requested:
            self.stop_reason = "cancelled"
        return self.stop_reason is not None

    def artifacts(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT kind, path, meta FROM artifacts WHERE job_id = :j ORDER BY id"),
                                {"j": self.job_id}).all()
        return [(r.kind, r.path, r.meta) for r in rows]
