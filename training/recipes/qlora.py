"""`/train qlora base=PATH data=... r=16`: LoRA on a 4-bit (NF4, bitsandbytes) base; CUDA only.

Refused at submit time where no CUDA device is available (`needs_cuda=True`): bitsandbytes' 4-bit
kernels run on GPUs; on a CPU box use `lora`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.errors import UserError
from training.recipes import recipe
from training.recipes.base import RunContext, activation_gb, opt, parameter_count
from training.recipes.lora import LoraConfig


@dataclass
class QLoraConfig(LoraConfig):
    quant_type: str = opt("nf4", choices=("nf4", "fp4"))
    double_quant: bool = opt(True)


def qlora_memory_gb(config: Any) -> float:
    """~0.55 bytes a parameter for the 4-bit base, plus activations and adapter."""
    return round(parameter_count(config.base) * 0.55 / 1e9 + activation_gb(config) + 0.5, 2)


@recipe("qlora", config=QLoraConfig, memory=qlora_memory_gb, needs_cuda=True, help="LoRA on a 4-bit base (CUDA)")
def run(ctx: RunContext) -> dict[str, Any]:
    """QLoRA: the base is loaded in 4 bits with bitsandbytes; only the LoRA adapter trains."""
    import importlib.util

    import torch

    if ctx.device != "cuda" or not torch.cuda.is_available():
        raise UserError("qlora needs a CUDA GPU; this worker has none. Use the lora recipe on CPU.")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("qlora needs `bitsandbytes` on the worker: pip install bitsandbytes")
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from training.recipes.common import base_path
    from training.recipes.loop import train_sft
    from training.recipes.lora import adapter_saver, attach_lora, prepare

    config = ctx.config
    path = base_path(config.base)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                               bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant, device_map={"": 0})
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    parts = prepare(ctx, config, base_model=(model, tok, path))
    model = attach_lora(parts["model"], config)
    save = adapter_saver(model, tok, config.base, path)
    return train_sft(ctx, model, tok, parts["train"], parts["held"], parts["prompts"], save,
                     extra_metrics={"quantization": f"4-bit {config.quant_type}"})
