"""`/train sft base=smollm2 data=alpaca.jsonl steps=100 lr=2e-5`: full fine-tune, every weight trains.

Same loop as `lora` (length-grouped batches, response-only loss); the result is a whole checkpoint,
so memory is weights + gradients + two AdamW moments (~16 bytes a parameter) plus activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.recipes import recipe
from training.recipes.base import CommonConfig, RunContext, activation_gb, opt, parameter_count


@dataclass
class SFTConfig(CommonConfig):
    lr: float = opt(2e-5, min=1e-8, max=1.0)


def sft_memory_gb(config: Any) -> float:
    return round(parameter_count(config.base) * 16 / 1e9 + activation_gb(config) + 0.3, 2)


@recipe("sft", config=SFTConfig, memory=sft_memory_gb, help="full fine-tune of every weight")
def run(ctx: RunContext) -> dict[str, Any]:
    """Full supervised fine-tune; saves a complete checkpoint."""
    from training.export import write_deploy_info
    from training.recipes.loop import train_sft
    from training.recipes.lora import prepare

    config = ctx.config
    parts = prepare(ctx, config)
    model, tok = parts["model"], parts["tok"]

    def save(workdir: Path) -> dict[str, Path]:
        out = workdir / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        write_deploy_info(workdir, config.base, out, None)
        return {"model": out}

    return train_sft(ctx, model, tok, parts["train"], parts["held"], parts["prompts"], save,
                     extra_metrics={"trainable_params": sum(p.numel() for p in model.parameters())})
