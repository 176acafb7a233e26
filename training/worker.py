"""`ladder worker` on each GPU (or CPU) box: register, heartbeat, claim, run each job in a child process.

    DATABASE_URL=postgresql://... LADDER_ARTIFACT_DIR=/shared/artifacts ladder worker --device cuda --tags a100

It needs only the database URL and the artifact directory, never chat tokens. One job at a time:
the job runs in `python -m training.run_job` (or under `accelerate launch` when it asks for several
GPUs), so a crash or OOM fails that job and the worker claims the next. While the child runs, the
worker extends the job's lease; if the worker dies, the lease runs out and another worker re-runs
the job from its last checkpoint. A cancel is cooperative (the recipe stops between steps); a
child that ignores it is killed after `cancel_grace_s`. SIGTERM/Ctrl-C: finish the current job,
then exit (SIGKILL instead: the job is re-queued when its lease runs out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from training import queue
from training.models import Job, Worker

log = logging.getLogger(__name__)
ERROR_TAIL_LINES = 15


@dataclass
class WorkerOptions:
    device: str = "cpu"
    tags: tuple[str, ...] = ()
    once: bool = False
    lease_s: float = 60.0
    heartbeat_s: float = 10.0
    poll_s: float = 2.0
    threads: int = 0  # CPU: torch threads per job; 0 = every core this process may use
    memory_gb: float | None = None  # what a job may use; None = detect
    cancel_grace_s: float = 60.0


def detect_box(device: str) -> dict:
    """GPU name, count and memory, torch/CUDA versions, and the memory a job may use."""
    import psutil
    import torch

    info = {"hostname": socket.gethostname(), "device": device, "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda, "gpu_name": None, "gpu_count": 0, "gpu_memory_gb": None}
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA GPU on this box (install a CUDA build of "
                             "torch, check nvidia-smi), or run with --device cpu.")
        props = torch.cuda.get_device_properties(0)
        info.update(gpu_name=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
        info["memory_gb"] = info["gpu_memory_gb"]
    else:
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    return info


def cpu_threads(requested: int) -> int:
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def child_command(job: Job, device: str, threads: int) -> list[str]:
    """`python -m training.run_job`, or `accelerate launch` across `job.devices` GPUs."""
    args = ["-m", "training.run_job", str(job.id), "--attempt", str(job.attempts), "--device", device,
            "--threads", str(threads)]
    if device == "cuda" and job.devices > 1:
        accelerate = shutil.which("accelerate") or "accelerate"
        return [accelerate, "launch", "--num_processes", str(job.devices), "--num_machines", "1", *args]
    return [sys.executable, *args]


def error_tail(log_path: Path, returncode: int) -> str:
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    tail = "\n".join(line for line in lines[-ERROR_TAIL_LINES:])
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.Signals._value2member_map_ else returncode
        cause = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"The job's process was killed by {name}{cause}.\n{tail}".strip()
    return tail or f"The job's process exited with code {returncode}."


class TrainingWorker:
    def __init__(self, db: async_sessionmaker[AsyncSession], database_url: str, artifact_dir: Path,
                 options: WorkerOptions):
        self.db, self.database_url, self.artifact_dir, self.opt = db, database_url, artifact_dir, options
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.box: dict = {}
        self.stopping = asyncio.Event()
        self.current: tuple[int, int] | None = None  # (job id, attempt)

    @property
    def caps(self) -> queue.WorkerCaps:
        return queue.WorkerCaps(id=self.id, device=self.opt.device, memory_gb=self.box["memory_gb"],
                                gpu_count=self.box["gpu_count"], tags=self.opt.tags)

    async def register(self) -> None:
        self.box = await asyncio.to_thread(detect_box, self.opt.device)
        if self.opt.memory_gb is not None:
            self.box["memory_gb"] = self.opt.memory_gb
        values = dict(id=self.id, tags=list(self.opt.tags), **self.box)
        async with self.db() as session, session.begin():
            await session.execute(pg_insert(Worker).values(**values).on_conflict_do_nothing())
            # workers killed without a goodbye: forget them after a day of silence
            await session.execute(text("DELETE FROM workers WHERE heartbeat_at < now() - interval '1 day'"))
        log.info("worker %s registered: %s", self.id, self.box)

    async def beat(self) -> None:
        async with self.db() as session, session.begin():
            await session.execute(text("UPDATE workers SET heartbeat_at = now(), current_job_id = :j WHERE id = :w"),
                                  {"j": self.current[0] if self.current else None, "w": self.id})

    async def run(self) -> None:
        await self.register()
        beat = asyncio.create_task(self._beat_forever())
        try:
            while not self.stopping.is_set():
                job = await queue.claim(self.db, self.caps, self.opt.lease_s)
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), self.opt.poll_s)
                    continue
                await self.run_job(job)
                if self.opt.once:
                    break
        finally:
            beat.cancel()
            async with self.db() as session, session.begin():
                await session.execute(text("DELETE FROM workers WHERE id = :w"), {"w": self.id})

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as err:  # the database blinked: try again next beat
                log.warning("heartbeat failed: %s", err)
            await asyncio.sleep(self.opt.heartbeat_s)

    async def run_job(self, job: Job) -> str:
        """Run one claimed job to its end in a child process; returns its final status."""
        self.current = (job.id, job.attempts)
        workdir = self.artifact_dir / f"job-{job.id}"
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"attempt-{job.attempts}.log"
        threads = cpu_threads(self.opt.threads) if self.opt.device == "cpu" else self.opt.threads
        env = {**os.environ, "DATABASE_URL": self.database_url, "LADDER_ARTIFACT_DIR": str(self.artifact_dir)}
        if threads:
            env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        log.info("job %s attempt %s: %s", job.id, job.attempts, job.recipe)
        with open(log_path, "ab") as out:
            child = await asyncio.create_subprocess_exec(*child_command(job, self.opt.device, threads), env=env,
                                                         stdout=out, stderr=asyncio.subprocess.STDOUT)
            outcome = await self._watch(child, job)
        try:
            return await self._close(job, child.returncode or 0, outcome, log_path)
        finally:
            self.current = None

    async def _watch(self, child: asyncio.subprocess.Process, job: Job) -> str:
        """Extend the lease while the child runs; kill it when the job is lost or a cancel is ignored."""
        cancel_seen: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await asyncio.wait_for(child.wait(), timeout=min(self.opt.heartbeat_s, self.opt.lease_s / 3))
                return "exited"
            except TimeoutError:
                pass
            try:
                state = await queue.extend_lease(self.db, job.id, job.attempts, self.opt.lease_s)
            except Exception as err:
                log.warning("lease renewal for job %s failed: %s", job.id, err)
                continue
            if state == "lost":
                log.warning("job %s is no longer ours; stopping its process", job.id)
                child.kill()
                await child.wait()
                return "lost"
            if state == "cancel":
                cancel_seen = cancel_seen or loop.time()
                if loop.time() - cancel_seen > self.opt.cancel_grace_s:
                    child.kill()
                    await child.wait()
                    return "cancel-killed"

    async def _close(self, job: Job, code: int, outcome: str, log_path: Path) -> str:
        if outcome == "lost":
            return "lost"
        if outcome == "cancel-killed":
            await queue.finish(self.db, job.id, job.attempts, "cancelled", error="stopped by the worker: the "
                               "recipe did not stop within the grace period")
            return "cancelled"
        current = await queue.get_job(self.db, job.id)
        if current.status != "running" or current.attempts != job.attempts:
            return current.status  # the child closed it (succeeded / cancelled)
        if code == 0:  # exited cleanly without closing: treat as a failure, never silently succeed
            code = 1
        error = error_tail(log_path, code)
        await queue.finish(self.db, job.id, job.attempts, "failed", error=error)
        return "failed"


async def serve(settings, options: WorkerOptions) -> None:
    """Connect (DATABASE_URL, or the embedded Postgres of this data dir), migrate nothing, work."""
    from bot import db

    url = await asyncio.to_thread(db.resolve_url, settings)
    engine = db.make_engine(url)
    await db.check(engine)
    worker = TrainingWorker(db.sessionmaker(engine), url, settings.artifact_dir, options)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    """`python -m training.worker --device cpu --once` (the same as `ladder worker`)."""
    import argparse

    from bot.config import Settings

    parser = argparse.ArgumentParser(description="Ladder training worker")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--tags", default="", help="comma-separated")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--lease-s", type=float, default=60.0)
    parser.add_argument("--heartbeat-s", type=float, default=10.0)
    parser.add_argument("--poll-s", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--memory-gb", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    opts = WorkerOptions(device=args.device, tags=tuple(t for t in args.tags.split(",") if t), once=args.once,
                         lease_s=args.lease_s, heartbeat_s=args.heartbeat_s, poll_s=args.poll_s,
                         threads=args.threads, memory_gb=args.memory_gb)
    asyncio.run(serve(Settings(), opts))


if __name__ == "__main__":
    main()
