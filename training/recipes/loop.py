"""The supervised training loop shared by lora, qlora, sft and distill, shaped like nanoGPT's.

One checkpoint dict holds everything needed to resume (trainable weights, optimizer, step, RNG,
loss history, the "before" evaluation); the batch order is a pure function of (seed, epoch), so a
resumed run sees exactly the batches the interrupted one would have.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from training import evaluate, report
from training.recipes.base import RunContext
from training.recipes.common import autocast, collate, grouped_batches, response_nll

Row = tuple[list[int], list[int]]


def lr_at(step: int, config: Any) -> float:
    """Linear warm-up, then cosine decay to 10% of `lr` at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    return torch.load(path / "ckpt.pt" if path.is_dir() else path, map_location="cpu", weights_only=False)


def train_sft(ctx: RunContext, model: Any, tok: Any, train: list[Row], held: list[Row],
              prompts: list[list[dict[str, str]]], save: Callable[[Path], dict[str, Path]],
              extra_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the parameters of `model` that require grad; evaluate before/after; save; write the report."""
    import torch

    config = ctx.config
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.95))
    pad = tok.pad_token_id
    ckpt_path = ctx.workdir / "ckpt.pt"
    state: dict[str, Any] = {"step": 0, "history": [], "evals": []}
    if ctx.resume_from is not None:
        state = load_checkpoint(ctx.resume_from)
        model.load_state_dict(state["trainable"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        random.setstate(state["rng"]["python"])
        torch.set_rng_state(state["rng"]["torch"])
        ctx.emit("log", message=f"resumed from step {state['step']}")
    else:
        ctx.emit("log", message=f"{len(train)} training / {len(held)} held-out examples; evaluating the base")
        state["ppl_before"] = evaluate.perplexity(model, held, pad)
        state["samples_before"] = evaluate.generate(model, tok, prompts, config.max_new_tokens)
        ctx.emit("metric", name="ppl_before", value=state["ppl_before"])

    def checkpoint() -> None:
        state.update(trainable={n: p.detach().clone() for n, p in params.items()}, optimizer=optimizer.state_dict(),
                     rng={"python": random.getstate(), "torch": torch.get_rng_state()}, config=asdict(config))
        save_checkpoint(ckpt_path, state)
        ctx.checkpoint(ckpt_path)

    lengths = [len(ids) for ids, _ in train]
    per_epoch = math.ceil(len(train) / config.batch_size)
    real_tokens, started, stopped, first = 0, time.perf_counter(), False, state["step"]
    model.train()
    for step in range(state["step"], config.steps):
        if ctx.should_stop():
            stopped = True
            break
        lr = lr_at(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum, tokens = 0.0, 0
        for micro in range(config.grad_accum):
            index = step * config.grad_accum + micro
            epoch, position = divmod(index, per_epoch)
            batch_ids = grouped_batches(lengths, config.batch_size, config.seed, epoch)[position]
            batch = collate([train[i] for i in batch_ids], pad)
            with autocast(config.dtype, ctx.device):
                nll, n = response_nll(model, batch)
            (nll / max(1, n) / config.grad_accum).backward()
            loss_sum += float(nll.detach())
            tokens += n
            real_tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(params.values(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_sum / max(1, tokens)
        state["history"].append({"step": step + 1, "loss": loss, "lr": lr})
        state["step"] = step + 1
        if (step + 1) % config.log_every == 0 or step + 1 == config.steps:
            elapsed = time.perf_counter() - started
            rate = real_tokens / elapsed if elapsed else 0.0
            eta = elapsed / max(1, step + 1 - first) * (config.steps - step - 1)
            ctx.emit("progress", step=step + 1, total=config.steps, loss=round(loss, 4), lr=lr,
                     tokens_per_s=round(rate, 1), eta_s=round(eta, 1))
        if config.eval_every and (step + 1) % config.eval_every == 0 and step + 1 < config.steps:
            ppl = evaluate.perplexity(model, held, pad)
            state["evals"].append({"step": step + 1, "ppl": ppl})
            ctx.emit("metric", name="ppl", step=step + 1, value=ppl)
        if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            checkpoint()
    elapsed = time.perf_counter() - started
    if stopped:
        checkpoint()
        return {"stopped": True, "step": state["step"]}
    ppl_after = evaluate.perplexity(model, held, pad)
    samples_after = evaluate.generate(model, tok, prompts, config.max_new_tokens)
    saved = save(ctx.workdir)
    for kind, path in saved.items():
        ctx.artifact(kind, path)
    history = state["history"]
    metrics = {"ppl_before": state["ppl_before"], "ppl_after": ppl_after, "steps": state["step"],
               "train_loss_first": history[0]["loss"] if history else None,
               "train_loss": sum(h["loss"] for h in history[-5:]) / max(1, len(history[-5:])) if history else None,
               "real_tokens_per_s": real_tokens / elapsed if elapsed else 0.0, "train_examples": len(train),
               "held_out_examples": len(held), **(extra_metrics or {})}
    ctx.emit("metric", name="ppl_after", value=ppl_after)
    samples = evaluate.samples_table(prompts, state["samples_before"], samples_after)
    files = report.write(ctx.workdir, metrics, history, samples, artifacts={k: str(v) for k, v in saved.items()},
                         title=f"job {ctx.job_id}")
    for kind, path in files.items():
        ctx.artifact(kind, path)
    return {**metrics, "samples": samples, "artifacts": {k: str(v) for k, v in {**saved, **files}.items()}}

