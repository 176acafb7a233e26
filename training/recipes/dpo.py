"""`/train dpo base=smollm2 data=prefs.jsonl steps=100 beta=0.1`: trl's DPOTrainer on prompt/chosen/rejected.

By default a LoRA adapter is trained (the frozen base doubles as the reference model, so no second
copy is kept). Before/after: perplexity of the held-out *chosen* responses and greedy samples; after:
the held-out preference accuracy (chosen reward > rejected reward).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.recipes import recipe
from training.recipes.base import RunContext, activation_gb, opt, parameter_count
from training.recipes.lora import LoraConfig


@dataclass
class DPOConfig(LoraConfig):
    lr: float = opt(5e-5, min=1e-8, max=1.0)
    beta: float = opt(0.1, min=0.001, max=10.0)
    batch_size: int = opt(4, min=1, max=1024)
    use_lora: bool = opt(True)

    def validate(self, check_files: bool = True) -> None:
        from training.data import check_source
        from training.recipes.base import check_base

        check_base(self.base)
        if check_files:
            check_source(self.data, "preference")


def dpo_memory_gb(config: Any) -> float:
    weights = parameter_count(config.base) * 4 / 1e9
    extra = 0.3 if config.use_lora else weights * 4  # full DPO: reference copy + grads + AdamW
    return round(weights * 1.2 + extra + 2 * activation_gb(config), 2)


def _callback(ctx: RunContext, total: int):
    import time

    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Trainer events -> ctx.emit; cooperative cancel; checkpoints recorded for resume."""

        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.first: int | None = None
            self.history: list[dict[str, Any]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            if self.first is None:
                self.first = state.global_step - 1
            elapsed = time.perf_counter() - self.started
            done = max(1, state.global_step - self.first)
            self.history.append({"step": state.global_step, "loss": float(logs["loss"])})
            ctx.emit("progress", step=state.global_step, total=total, loss=round(float(logs["loss"]), 4),
                     lr=logs.get("learning_rate"), eta_s=round(elapsed / done * (total - state.global_step), 1),
                     reward_margin=logs.get("rewards/margins"))

        def on_step_end(self, args, state, control, **kwargs):
            if ctx.should_stop():
                control.should_training_stop = True
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            ctx.checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    return Progress()


def _rows(examples: list[Any]) -> list[dict[str, Any]]:
    return [{"prompt": list(ex.prompt), "chosen": [{"role": "assistant", "content": ex.chosen}],
             "rejected": [{"role": "assistant", "content": ex.rejected}]} for ex in examples]


@recipe("dpo", config=DPOConfig, memory=dpo_memory_gb, help="direct preference optimisation (trl)")
def run(ctx: RunContext) -> dict[str, Any]:
    """DPO on prompt/chosen/rejected pairs with trl's DPOTrainer."""
    import os

    from datasets import Dataset
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer

    from training import data, evaluate, report
    from training.data import SFTExample
    from training.export import write_deploy_info
    from training.recipes.common import encode_sft, load_base, seed_all, set_threads
    from training.recipes.lora import attach_lora

    config = ctx.config
    threads = set_threads(config.threads)
    seed_all(config.seed)
    pairs = data.limit(data.load(config.data, "preference", database_url=getattr(ctx, "database_url", None)
                                 or os.environ.get("DATABASE_URL")), config.limit)
    train, held = data.split(pairs, config.held_out, config.seed, config.max_eval or None)
    model, tok, base_path = load_base(config.base)
    chosen = [encode_sft(tok, SFTExample((*ex.prompt, {"role": "assistant", "content": ex.chosen})),
                         config.max_length) for ex in held]
    prompts = [list(ex.prompt) for ex in (held or train)[:config.samples]]
    resuming = ctx.resume_from is not None
    ppl_before = evaluate.perplexity(model, chosen, tok.pad_token_id)
    samples_before = evaluate.generate(model, tok, prompts, config.max_new_tokens)
    if config.use_lora:
        model = attach_lora(model, config)
    args = TrlDPOConfig(
        output_dir=str(ctx.workdir / "trainer"), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr, warmup_steps=config.warmup_steps, beta=config.beta, max_length=config.max_length,
        logging_steps=config.log_every, save_strategy="steps" if config.checkpoint_every else "no",
        save_steps=config.checkpoint_every or 500, save_total_limit=1, seed=config.seed, report_to="none",
        bf16=ctx.device == "cuda", gradient_checkpointing=False, use_cpu=ctx.device != "cuda",
        disable_tqdm=True, dataloader_num_workers=0, dataset_num_proc=None, eval_strategy="no")
    progress = _callback(ctx, config.steps)
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(_rows(train)),
                         eval_dataset=Dataset.from_list(_rows(held)) if held else None, processing_class=tok,
                         callbacks=[progress])
    trainer.train(resume_from_checkpoint=str(ctx.resume_from) if resuming else None)
    if ctx.should_stop():
        return {"stopped": True, "step": trainer.state.global_step}
    accuracy = trainer.evaluate().get("eval_rewards/accuracies") if held else None
    ppl_after = evaluate.perplexity(model, chosen, tok.pad_token_id)
    samples = evaluate.samples_table(prompts, samples_before, evaluate.generate(model, tok, prompts,
                                                                                config.max_new_tokens))
    out = ctx.workdir / ("adapter" if config.use_lora else "model")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_deploy_info(ctx.workdir, config.base, base_path if config.use_lora else out, out if config.use_lora else None)
    ctx.artifact("adapter" if config.use_lora else "model", out)
    history = progress.history
    metrics = {"ppl_before": ppl_before, "ppl_after": ppl_after, "preference_accuracy": accuracy,
               "steps": trainer.state.global_step, "train_loss": history[-1]["loss"] if history else None,
               "train_examples": len(train), "held_out_examples": len(held), "threads": threads}
    files = report.write(ctx.workdir, metrics, history, samples, artifacts={"model": str(out)},
                         title=f"job {ctx.job_id} (dpo)")
    for kind, path in files.items():
        ctx.artifact(kind, path)
    return {**metrics, "samples": samples, "artifacts": {"model": str(out), **{k: str(v) for k, v in files.items()}}}
