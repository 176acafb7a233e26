"""`ladder worker` (run jobs on this box) and `ladder jobs` (list / show / cancel from the terminal).

    DATABASE_URL=postgresql://... ladder worker --device cuda --tags a100,fast
    ladder worker --device cpu --once          # take one job, run it, exit
    ladder jobs                                 # recent jobs
    ladder jobs 12                              # one job in detail
    ladder jobs 12 --cancel
"""

from __future__ import annotations

import typer


def worker(
    device: str = typer.Option("cpu", help="cuda | cpu"),
    tags: str = typer.Option("", help="Comma-separated tags; a job that names tags needs a worker with all of them."),
    once: bool = typer.Option(False, "--once", help="Run one job, then exit."),
    threads: int = typer.Option(0, help="CPU threads per job (0 = every core this process may use)."),
    memory_gb: float | None = typer.Option(None, help="Memory a job may use (default: GPU memory, or RAM)."),
    lease_s: float = typer.Option(60.0, help="A job whose worker is silent this long is re-queued."),
    heartbeat_s: float = typer.Option(10.0, help="How often the lease is renewed."),
    poll_s: float = typer.Option(2.0, help="How often an idle worker looks for work."),
) -> None:
    """Run training jobs on this box. Needs only DATABASE_URL and the artifact dir (LADDER_ARTIFACT_DIR)."""
    import asyncio

    from bot.cli import EXIT_DB
    from bot.config import get_settings
    from bot.errors import DatabaseUnavailable
    from training.worker import WorkerOptions, serve

    if device not in ("cpu", "cuda"):
        typer.echo("error: --device must be cpu or cuda", err=True)
        raise typer.Exit(2)
    opts = WorkerOptions(device=device, tags=tuple(t for t in tags.split(",") if t), once=once, threads=threads,
                         memory_gb=memory_gb, lease_s=lease_s, heartbeat_s=heartbeat_s, poll_s=poll_s)
    try:
        asyncio.run(serve(get_settings(), opts))
    except DatabaseUnavailable as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_DB) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def jobs(
    job_id: int | None = typer.Argument(None, help="Show this job in detail."),
    cancel: bool = typer.Option(False, "--cancel", help="Cancel the job."),
) -> None:
    """Training jobs: recent ones, one in detail, or cancel one."""
    from bot.cli import _slash

    if job_id is None:
        _slash("/jobs")
    else:
        _slash(f"/cancel {job_id}" if cancel else f"/job {job_id}")


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.command("jobs")(jobs)
