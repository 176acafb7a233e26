"""`/deploy JOB [NAME]`: make a finished job's model answerable by name, and remember it across restarts.

Local backend: base checkpoint + LoRA adapter, registered with the hub (`/models use NAME`).
Ollama: a model created from `FROM base` + `ADAPTER` through the Ollama API (blobs uploaded first).
Either way a `model_registry` row records it; `restore(ctx)` re-registers local ones at bot start.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from bot.context import Context
from bot.errors import ModelUnavailable, UserError
from bot.models import ModelRegistry
from training import queue

log = logging.getLogger(__name__)
NAME_RE = re.compile(r"^[A-Za-z0-9][\w.:-]{0,127}$")


async def _record(ctx: Context, name: str, backend: str, base: str, adapter: Path | None, job_id: int,
                  details: dict) -> None:
    values = dict(name=name, backend=backend, base_model=base, adapter_path=str(adapter) if adapter else None,
                  source_job_id=job_id, details=details)
    stmt = pg_insert(ModelRegistry).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={k: v for k, v in values.items() if k != "name"})
    async with ctx.db() as session, session.begin():
        await session.execute(stmt)


async def deploy(ctx: Context, job_id: int, name: str | None, *, backend: str = "local",
                 ollama_base: str | None = None) -> str:
    """Register the job's result; returns the one-line answer."""
    from training import export

    job = await queue.get_job(ctx.db, job_id)
    if job.status != "succeeded":
        raise UserError(f"Job {job_id} is {job.status}; only a succeeded job can be deployed.")
    name = name or f"job{job_id}-{job.recipe}"
    if not NAME_RE.match(name):
        raise UserError(f"Bad model name '{name}': letters, digits, '.', '_', '-' and ':' only.")
    workdir = ctx.settings.artifact_dir / f"job-{job_id}"
    plan = export.deploy_plan(workdir)
    for path in filter(None, (plan.base_path, plan.adapter_path)):
        if not path.exists():
            raise UserError(f"{path} is not reachable from this bot. Share the artifact directory "
                            "(LADDER_ARTIFACT_DIR) between the workers and the bot, or copy the job's folder.")
    details = {"base": plan.base_name, "recipe": job.recipe, "result": {k: v for k, v in (job.result or {}).items()
                                                                       if isinstance(v, int | float | str)}}
    if backend == "local":
        ctx.models.register_local(name, plan.base_path, plan.adapter_path)
        await _record(ctx, name, "local", str(plan.base_path), plan.adapter_path, job_id, details)
        what = "base + adapter" if plan.adapter_path else "full model"
        return f"Deployed job {job_id} as {name} (local backend, {what}). Use it with /models use {name}"
    if backend == "ollama":
        if not ollama_base:
            raise UserError("Name the Ollama base the adapter was trained on: /deploy ID NAME backend=ollama "
                            "from=smollm2:135m")
        modelfile = export.ollama_modelfile_for(workdir, ollama_base)
        await create_ollama(ctx, name, ollama_base, plan.adapter_path)
        await _record(ctx, name, "ollama", ollama_base, plan.adapter_path, job_id,
                      {**details, "modelfile": str(modelfile)})
        return (f"Deployed job {job_id} as {name} on Ollama (FROM {ollama_base} + ADAPTER). "
                f"Use it with /models use {name}")
    raise UserError(f"Unknown backend '{backend}' for /deploy: use local or ollama.")


async def create_ollama(ctx: Context, name: str, base: str, adapter: Path | None) -> None:
    """Upload the adapter's files as blobs and create `name` from `base` + those adapter files."""
    from ollama import AsyncClient, ResponseError

    assert adapter is not None
    client = AsyncClient(host=ctx.settings.ollama_host, timeout=ctx.settings.llm_timeout_s)
    try:
        files = sorted(p for p in adapter.iterdir() if p.name.startswith("adapter_"))
        adapters = {p.name: await client.create_blob(p) for p in files}
        await client.create(model=name, from_=base, adapters=adapters)
    except ResponseError as err:
        raise ModelUnavailable(f"Ollama at {ctx.settings.ollama_host} refused to create {name}: {err.error}") from None
    except Exception as err:  # connection refused, timeout
        raise ModelUnavailable(f"Could not reach Ollama at {ctx.settings.ollama_host}: {err}") from None


async def restore(ctx: Context) -> int:
    """Register every deployed local model again (the hub lives in memory); returns how many."""
    async with ctx.db() as session:
        rows = list((await session.execute(select(ModelRegistry).where(ModelRegistry.backend == "local"))).scalars())
    count = 0
    for row in rows:
        base, adapter = Path(row.base_model), Path(row.adapter_path) if row.adapter_path else None
        if base.exists() and (adapter is None or adapter.exists()):
            ctx.models.register_local(row.name, base, adapter)
            count += 1
        else:
            log.warning("deployed model %s: files missing (%s), not registered", row.name, row.adapter_path or base)
    return count
