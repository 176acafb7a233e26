"""training: the job queue, the GPU-box worker, recipes, evaluation, reports, export.

The public face for the rest of the bot (handlers, app wiring):

    job, created = await training.submit(ctx.db, training.Submission(recipe="lora", params={...}, ...))
    await training.cancel(ctx.db, job.id, by="U123")
    job = await training.status(ctx.db, job.id)
    training.attach(ctx)          # in the bot process: start the notifier, re-register deployed models
    training.recipes.names()      # ["dpo", "lora", ...]

Heavy imports (torch, transformers) happen only inside recipes and the worker's child processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from training import recipes
from training.queue import Submission, WorkerCaps, cancel, claim, list_jobs, submit
from training.queue import get_job as status

if TYPE_CHECKING:
    from bot.context import Context


async def attach(ctx: Context, interval_s: float = 2.0) -> None:
    """Bot side of training: post job events to chat and make deployed local models answerable again."""
    from training import deploy, notifier

    try:
        await deploy.restore(ctx)
    except Exception as err:  # never keep the bot from starting over a missing adapter folder
        import logging

        logging.getLogger(__name__).warning("could not restore deployed models: %s", err)
    notifier.start(ctx, interval_s)


__all__ = ["Submission", "WorkerCaps", "attach", "cancel", "claim", "list_jobs", "recipes", "status", "submit"]
