"""One job in its own process: `python -m training.run_job JOB_ID --attempt N --device cpu --threads 2`.

The worker starts this as a child, so a crash, an OOM kill or a CUDA fault fails the job, never the
worker. It needs only `DATABASE_URL` (set by the worker) and the artifact directory. On success it
closes the job itself with the metrics and the report (text + loss-curve PNG, inlined in the final
event so the bot needs no access to the GPU box's disk); a cancelled run closes as cancelled; an
exception exits non-zero and the worker fails the job with the error's last lines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import sys
from pathlib import Path
from typing import Any

MAX_INLINE_PNG = 4 * 2**20
MAX_REPORT_CHARS = 6000
log = logging.getLogger("training.run_job")


def import_extra_recipes() -> None:
    """Recipes from your own packages: `LADDER_EXTRA_RECIPES=mypkg.recipes,other.mod`."""
    import importlib

    for name in filter(None, (m.strip() for m in os.environ.get("LADDER_EXTRA_RECIPES", "").split(","))):
        importlib.import_module(name)


def report_event(ctx: Any, result: dict[str, Any]) -> dict[str, Any]:
    """What the notifier needs for the final post: metrics, report text, the PNG, where artifacts are."""
    out: dict[str, Any] = {"metrics": result, "artifacts": []}
    for kind, path, meta in ctx.artifacts():
        out["artifacts"].append({"kind": kind, "path": path, **({"meta": meta} if meta else {})})
        file = Path(path)
        if kind == "report" and file.is_file() and "report" not in out:
            out["report"] = file.read_text(errors="replace")[:MAX_REPORT_CHARS]
        if kind == "plot" and file.suffix == ".png" and file.is_file() and "png_b64" not in out:
            if file.stat().st_size <= MAX_INLINE_PNG:
                out["png_b64"] = base64.b64encode(file.read_bytes()).decode()
                out["png_name"] = file.name
    return out


def set_threads(device: str, threads: int) -> None:
    """A CPU job uses exactly `threads` threads: two jobs sharing cores with too many threads crawl."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def run(job_id: int, attempt: int, device: str, threads: int) -> int:
    from sqlalchemy import create_engine

    from bot.config import Settings
    from bot.db import make_engine, sessionmaker
    from training import queue, recipes
    from training.models import Job
    from training.recipes.base import parse_params
    from training.runctx import JobRunContext

    settings = Settings()
    if settings.database_url is None:
        print("DATABASE_URL is not set (the worker passes it to each job).", file=sys.stderr)
        return 2
    url = settings.database_url.get_secret_value()
    engine = create_engine(url, pool_size=2, pool_pre_ping=True)
    with engine.connect() as conn:
        from sqlalchemy import select

        job = conn.execute(select(Job.__table__).where(Job.id == job_id)).first()
    if job is None or job.status != "running" or job.attempts != attempt:
        print(f"job {job_id} attempt {attempt} is not ours to run", file=sys.stderr)
        return 3
    set_threads(device, threads)
    import_extra_recipes()
    spec = recipes.get(job.recipe)
    config = parse_params(spec, dict(job.params))
    workdir = settings.artifact_dir / f"job-{job_id}"
    resume = Path(job.checkpoint_path) if job.checkpoint_path and Path(job.checkpoint_path).exists() else None
    ctx = JobRunContext(engine, job_id=job_id, attempt=attempt, config=config, workdir=workdir, device=device,
                        resume_from=resume, database_url=url)
    if resume:
        ctx.emit("log", message=f"resuming from checkpoint {resume} (attempt {attempt})")
    result = spec.run(ctx) or {}
    if not ctx.is_main:
        return 0
    if ctx.stop_reason == "lease lost" or ctx.stop_reason == "worker gone":
        return 4
    status = "cancelled" if ctx.stop_reason == "cancelled" else "succeeded"
    event = report_event(ctx, result) if status == "succeeded" else {}

    async def close() -> bool:
        aengine = make_engine(url)
        try:
            return await queue.finish(sessionmaker(aengine), job_id, attempt, status, result=result, **event)
        finally:
            await aengine.dispose()

    closed = asyncio.run(close())
    engine.dispose()
    return 0 if closed else 4


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when the worker that started it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: should_stop() notices the parent change instead
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id", type=int)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if int(os.environ.get("RANK", "0")) == 0 and "LOCAL_RANK" not in os.environ:
        _die_with_parent()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run(args.job_id, args.attempt, args.device, args.threads))


if __name__ == "__main__":
    main()
