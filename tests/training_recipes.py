"""A test-only recipe, `count`: counts steps, emits progress, checkpoints every step, draws a PNG.

It exercises the queue and worker without real training. Worker subprocesses load it through
`LADDER_EXTRA_RECIPES=tests.training_recipes`.

    /train count steps=20 sleep=0.2
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from training.recipes import recipe
from training.recipes.base import opt


@dataclass
class CountConfig:
    steps: int = opt(5, min=1, max=100_000)
    sleep: float = opt(0.02, min=0.0, max=10.0, help="seconds per step")
    fail_at: int = opt(0, min=0, max=100_000, help="raise at this step (0 = never)")
    die_at: int = opt(0, min=0, max=100_000, help="SIGKILL itself at this step (a hard crash)")
    ignore_cancel: bool = opt(False)
    memory_gb: float = opt(0.1, min=0.0, max=10_000.0)


def _png(path: Path, losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot(range(1, len(losses) + 1), losses)
    fig.savefig(path)
    plt.close(fig)


@recipe("count", config=CountConfig, memory=lambda c: c.memory_gb, help="test recipe: counts steps")
def run_count(ctx) -> dict:
    cfg: CountConfig = ctx.config
    ckpt = ctx.workdir / "ckpt.json"
    state = json.loads(ctx.resume_from.read_text()) if ctx.resume_from else {"step": 0, "losses": []}
    resumed_at = state["step"]
    for step in range(state["step"] + 1, cfg.steps + 1):
        if not cfg.ignore_cancel and ctx.should_stop():
            break
        time.sleep(cfg.sleep)
        if cfg.fail_at == step:
            raise RuntimeError(f"boom at step {step}")
        if cfg.die_at == step:
            os.kill(os.getpid(), 9)
        state = {"step": step, "losses": [*state["losses"], 1.0 / step]}
        tmp = ckpt.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(ckpt)
        ctx.checkpoint(ckpt)
        ctx.emit("progress", step=step, total=cfg.steps, loss=1.0 / step, lr=1e-3, tokens_per_s=100.0,
                 eta_s=(cfg.steps - step) * cfg.sleep)
    if state["losses"]:
        _png(ctx.workdir / "loss.png", state["losses"])
        ctx.artifact("plot", ctx.workdir / "loss.png")
    report = ctx.workdir / "report.md"
    report.write_text(f"| metric | value |\n|---|---|\n| steps | {state['step']} |\n")
    ctx.artifact("report", report)
    return {"steps": state["step"], "resumed_at": resumed_at, "train_loss": state["losses"][-1] if state["losses"]
            else None}
