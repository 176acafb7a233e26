"""`/train lora base=smollm2 data=alpaca.jsonl steps=60 r=16`: LoRA on the attention projections.

A lean loop (training/recipes/loop.py) rather than trl's SFTTrainer: length-grouped batches padded
only to their own longest example, logits computed for response tokens only, no gradient
checkpointing on CPU; on a 2-core CPU this trains on ~1.5-2x the real tokens/s of a default
SFTTrainer script (bench/train_lora.py measures it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.recipes import recipe
from training.recipes.base import CommonConfig, RunContext, activation_gb, opt, parameter_count


@dataclass
class LoraConfig(CommonConfig):
    r: int = opt(16, min=1, max=1024)
    alpha: int = opt(32, min=1, max=4096)
    dropout: float = opt(0.05, min=0.0, max=0.9)
    targets: str = opt("q_proj,k_proj,v_proj,o_proj", help="comma-separated module names to adapt")

    def validate(self, check_files: bool = True) -> None:
        import re

        from bot.errors import UserError

        names = [t.strip() for t in self.targets.split(",") if t.strip()]
        if not names or not all(re.fullmatch(r"[A-Za-z_][\w.]*", n) for n in names):
            raise UserError(f"`targets={self.targets}`: give module names like q_proj,k_proj,v_proj,o_proj.")
        super().validate(check_files)


def lora_memory_gb(config: Any) -> float:
    """fp32 base weights + activations + a little for the adapter and optimizer."""
    return round(parameter_count(config.base) * 4 / 1e9 * 1.2 + activation_gb(config) + 0.3, 2)


def prepare(ctx: RunContext, config: Any, examples: list[Any] | None = None,
            base_model: tuple[Any, Any, Path] | None = None) -> dict[str, Any]:
    """Threads, seed, base model + tokenizer, tokenised train/held-out rows and fixed sample prompts."""
    import os

    from training import data
    from training.recipes.common import encode_sft, load_base, seed_all, set_threads

    set_threads(config.threads)
    seed_all(config.seed)
    if examples is None:
        examples = data.load(config.data, "sft", database_url=getattr(ctx, "database_url", None)
                             or os.environ.get("DATABASE_URL"))
    examples = data.limit(examples, config.limit)
    train, held = data.split(examples, config.held_out, config.seed, config.max_eval or None)
    on_gpu = ctx.device == "cuda"
    # fp32 master weights; the loop computes under bf16 autocast where that is fast (see common.autocast)
    model, tok, path = load_base(config.base) if base_model is None else base_model
    if on_gpu and base_model is None:
        model.to("cuda")
    rows = [encode_sft(tok, ex, config.max_length) for ex in train]
    held_rows = [encode_sft(tok, ex, config.max_length) for ex in held]
    prompts = [ex.prompt for ex in (held or train)[:config.samples]]
    return {"model": model, "tok": tok, "base_path": path, "train": rows, "held": held_rows, "prompts": prompts}


def attach_lora(model: Any, config: Any) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = [t.strip() for t in config.targets.split(",") if t.strip()]
    peft_config = PeftLoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_config)


def adapter_saver(model: Any, tok: Any, base: str, base_path: Path):
    """Saves the adapter (+ tokenizer) and deploy.json: what /deploy and the local backend load."""
    from training.export import write_deploy_info

    def save(workdir: Path) -> dict[str, Path]:
        adapter = workdir / "adapter"
        model.save_pretrained(adapter)
        tok.save_pretrained(adapter)
        write_deploy_info(workdir, base, base_path, adapter)
        return {"adapter": adapter}

    return save


def train_lora(ctx: RunContext, examples: list[Any] | None = None) -> dict[str, Any]:
    from training.recipes.loop import train_sft

    config = ctx.config
    parts = prepare(ctx, config, examples)
    model = attach_lora(parts["model"], config)
    save = adapter_saver(model, parts["tok"], config.base, parts["base_path"])
    return train_sft(ctx, model, parts["tok"], parts["train"], parts["held"], parts["prompts"], save,
                     extra_metrics={"trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)})


@recipe("lora", config=LoraConfig, memory=lora_memory_gb, help="LoRA adapter on a frozen base (peft)")
def run(ctx: RunContext) -> dict[str, Any]:
    """LoRA fine-tune: adapter weights only; the base stays frozen."""
    return train_lora(ctx)
