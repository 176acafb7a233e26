"""Levels 6-7, training (admins only): `/train`, `/jobs`, `/job`, `/cancel`, `/workers`, `/deploy`.

    /train lora base=smollm2 data=docs/faq.jsonl steps=20
    /train pretrain data=kb steps=2000 cron="0 2 * * 6"
    /train dpo base=smollm2 data=prefs.jsonl at=2026-12-24T02:00
    /jobs          /job 12          /cancel 12          /workers
    /deploy 12 faq-bot             then: /models use faq-bot

Parameters are validated by the recipe before anything is queued; the reply says the estimated
memory and which registered workers can take the job. Progress and the report come back to the
thread that asked, posted by the notifier.
"""

from __future__ import annotations

from datetime import UTC, datetime

from bot.audit import audit
from bot.commands import Opt
from bot.context import Context
from bot.errors import UserError
from bot.messages import Incoming, Reply
from bot.router import command
from training import deploy as deploying
from training import queue, recipes, schedule
from training.notifier import progress_line

SCHEDULING = {"at", "cron"}
DATA_KIND = {"dpo": "preference", "pretrain": "text"}


def parse_train_args(args: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """`("lora", "base=smollm2", "steps=20")` -> ("lora", {"base": "smollm2", "steps": "20"})."""
    if not args:
        raise UserError(f"Name a recipe: /train RECIPE key=value ... Recipes: {', '.join(recipes.names())}.")
    params: dict[str, str] = {}
    for token in args[1:]:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise UserError(f"Bad argument '{token}': parameters are key=value, e.g. steps=20.")
        if key in params:
            raise UserError(f"{key} is given twice.")
        params[key] = value
    return args[0].lower(), params


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _workers_line(workers: list, fit: list) -> str:
    if fit:
        return "Workers that can take it: " + ", ".join(
            f"{w.hostname} ({w.gpu_name or w.device}, {w.memory_gb:g} GB)" for w in fit) + "."
    if workers:
        return ("None of the registered workers can take it now (memory, GPUs or tags); it waits for one that "
                "can: `ladder worker --device cuda` on a bigger box.")
    return "No worker is running: start one with `ladder worker --device cpu` (or `--device cuda` on a GPU box)."


def _save_attachment(msg: Incoming, ctx: Context, recipe: str, params: dict[str, str]) -> None:
    if not msg.attachments or "data" in params:
        return
    from training.data import save_attachment

    att = msg.attachments[0]
    directory = ctx.settings.artifact_dir / "uploads" / f"{msg.platform}-{msg.user}"
    params["data"] = str(save_attachment(att.data, att.name, directory, DATA_KIND.get(recipe, "sft")))


@command("train", admin=True, free_text=True,
         help="Queue a training job on a worker (admins)",
         usage="/train RECIPE key=value ... [at=2026-12-24T02:00 | cron=\"0 2 * * 6\"] [priority=N] [devices=N]",
         options={"at": Opt(str, help="run once at this time (UTC unless an offset is given)"),
                  "cron": Opt(str, help="run on this 5-field cron schedule"),
                  "priority": Opt(int, min=-100, max=100), "devices": Opt(int, min=1, max=64),
                  "tags": Opt(str, help="comma-separated worker tags the job needs"),
                  "attempts": Opt(int, min=1, max=10, help="tries before the job fails (default 3)")})
async def train(msg: Incoming, ctx: Context) -> Reply:
    """`/train lora base=smollm2 data=faq.jsonl steps=20`: validate, queue (or schedule), say who can run it."""
    assert msg.command is not None
    opts = msg.command.options
    recipe, params = parse_train_args(msg.command.args)
    if opts.get("at") and opts.get("cron"):
        raise UserError("Give either at= or cron=, not both.")
    _save_attachment(msg, ctx, recipe, params)
    workers = await queue.live_workers(ctx.db)
    device = "cuda" if any(w.device == "cuda" for w in workers) or _cuda_available() else "cpu"
    config = recipes.validate(recipe, params, device=device)
    spec = recipes.get(recipe)
    memory = round(float(spec.estimate_memory_gb(config)), 2)
    tags = [t for t in (opts.get("tags") or "").split(",") if t]
    sub = queue.Submission(recipe=recipe, params=params, requested_by=msg.user, platform=msg.platform,
                           workspace=msg.workspace, channel=msg.channel, thread=msg.thread, est_memory_gb=memory,
                           devices=opts.get("devices", 1), needs_cuda=spec.needs_cuda, tags=tags,
                           priority=opts.get("priority", 0), max_attempts=opts.get("attempts", 3))
    fit = [w for w in workers if queue.can_take(w, memory_gb=memory, devices=sub.devices,
                                                needs_cuda=sub.needs_cuda, tags=tags)]
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    if opts.get("at") or opts.get("cron"):
        at = schedule.parse_at(opts["at"]) if opts.get("at") else None
        sched_id, next_run = schedule.schedule_training(ctx, sub, at=at, cron=opts.get("cron"))
        when = f"at {at.isoformat()}" if at else f"on cron \"{opts['cron']}\""
        nxt = f" (next: {next_run.astimezone(UTC):%Y-%m-%d %H:%M} UTC)" if next_run and not at else ""
        return Reply(text=f"Scheduled /train {recipe} {shown} {when}{nxt} as schedule {sched_id}; "
                          f"estimated memory {memory:g} GB. {_workers_line(workers, fit)}")
    job, created = await queue.submit(ctx.db, sub)
    if not created:
        return Reply(text=f"Already queued as job {job.id} ({job.status}). See /job {job.id}.")
    return Reply(text=f"Queued job {job.id}: {recipe} {shown}; estimated memory {memory:g} GB. "
                      f"{_workers_line(workers, fit)} Progress will be posted here.",
                 data={"job_id": job.id})


def _job_id(msg: Incoming) -> int:
    assert msg.command is not None
    if not msg.command.args or not msg.command.args[0].lstrip("#").isdigit():
        raise UserError(f"Give the job number: /{msg.command.name} ID (see /jobs).")
    return int(msg.command.args[0].lstrip("#"))


@command("jobs", admin=True, help="Recent training jobs (admins)", usage="/jobs")
async def jobs(msg: Incoming, ctx: Context) -> Reply:
    rows = await queue.list_jobs(ctx.db, limit=15)
    if not rows:
        return Reply(text="No training jobs yet. Start one with /train RECIPE key=value ...")
    lines = [f"#{j.id} {j.recipe} {j.status}" + (f" (attempt {j.attempts}/{j.max_attempts})" if j.attempts > 1 else "")
             + (f" on {j.worker_id}" if j.status == "running" and j.worker_id else "") + f" by {j.requested_by}"
             for j in rows]
    return Reply(text="\n".join(lines))


@command("job", admin=True, help="One training job in detail (admins)", usage="/job ID")
async def job(msg: Incoming, ctx: Context) -> Reply:
    j = await queue.get_job(ctx.db, _job_id(msg))
    events = await queue.events(ctx.db, j.id)
    progress = next((e.data for e in reversed(events) if e.kind == "progress"), None)
    lines = [f"Job {j.id}: {j.recipe} {' '.join(f'{k}={v}' for k, v in j.params.items())}",
             f"status {j.status}, attempt {j.attempts} of {j.max_attempts}, estimated memory {j.est_memory_gb:g} GB, "
             f"asked by {j.requested_by}" + (f", on {j.worker_id}" if j.worker_id else "")]
    if progress:
        lines.append(progress_line(progress))
    if j.checkpoint_path:
        lines.append(f"last checkpoint: {j.checkpoint_path}")
    if j.result:
        lines.append("result: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in j.result.items() if isinstance(v, int | float | str)))
    if j.error:
        lines.append("error: " + j.error.strip().splitlines()[-1])
    return Reply(text="\n".join(lines))


@command("cancel", help="Cancel a training job (admins) or drop an action the bot proposed",
         usage="/cancel JOB_ID | /cancel pID")
async def cancel(msg: Incoming, ctx: Context) -> Reply:
    """Shared with pending actions: `p...` ids go to `handlers.confirm`; job numbers need an admin."""
    from handlers.confirm import cancel_pending, is_pending_id

    if is_pending_id(msg.body):
        return await cancel_pending(msg, ctx)
    job_id = _job_id(msg)
    await audit(ctx.db, msg, "command:cancel", allowed=msg.is_admin, text=msg.text[:500])
    if not msg.is_admin:  # the same refusal as the admin gate, which cannot see which kind of id this is
        return Reply.fail("/cancel of a training job is for admins only; ask a workspace admin to run it.")
    return Reply(text=await queue.cancel(ctx.db, job_id, msg.user))


@command("workers", admin=True, help="Training workers and what they can take (admins)", usage="/workers")
async def workers(msg: Incoming, ctx: Context) -> Reply:
    rows = await queue.live_workers(ctx.db)
    if not rows:
        return Reply(text="No worker is running. Start one with `ladder worker --device cpu` (or cuda).")
    now = datetime.now(UTC)
    lines = [f"{w.id}: {w.gpu_name or 'CPU'} x{max(w.gpu_count, 1)}, {w.memory_gb:g} GB, torch {w.torch_version}"
             + (f", CUDA {w.cuda_version}" if w.cuda_version else "") + (f", tags {','.join(w.tags)}" if w.tags else "")
             + (f", running job {w.current_job_id}" if w.current_job_id else ", idle")
             + f", seen {max(0, int((now - w.heartbeat_at).total_seconds()))}s ago" for w in rows]
    return Reply(text="\n".join(lines))


@command("deploy", admin=True, help="Make a finished job's model answerable (admins)",
         usage="/deploy ID [NAME] [backend=local|ollama from=OLLAMA_BASE]",
         options={"backend": Opt(str, choices=("local", "ollama")), "from": Opt(str, help="Ollama base model")})
async def deploy(msg: Incoming, ctx: Context) -> Reply:
    assert msg.command is not None
    job_id = _job_id(msg)
    name = msg.command.args[1] if len(msg.command.args) > 1 else None
    opts = msg.command.options
    return Reply(text=await deploying.deploy(ctx, job_id, name, backend=opts.get("backend", "local"),
                                             ollama_base=opts.get("from")))
