"""Training recipes, one file each, registered with `@recipe`; `get(name)` and `names()` find them.

    @recipe("lora", config=LoraConfig, memory=lora_memory_gb)
    def run(ctx: RunContext) -> dict:
        ...
        return {"ppl_before": 7.5, "ppl_after": 6.6}

Recipe modules import torch/transformers only inside `run`, so validating `/train` in the bot is cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from bot.commands import nearest
from bot.errors import UserError
from training.recipes.base import RecipeSpec, RunContext, parse_params

MODULES = ("lora", "qlora", "sft", "dpo", "pretrain", "distill")
_REGISTRY: dict[str, RecipeSpec] = {}


def recipe(name: str, *, config: type, memory: Callable[[Any], float] | None = None, needs_cuda: bool = False,
           help: str = "") -> Callable[[Callable[[RunContext], dict[str, Any]]], Callable[[RunContext], dict]]:
    """Register `run` as recipe `name`; a second registration of the same name fails at import."""

    def register(run: Callable[[RunContext], dict[str, Any]]) -> Callable[[RunContext], dict[str, Any]]:
        if name in _REGISTRY:
            raise RuntimeError(f"recipe {name} registered twice")
        _REGISTRY[name] = RecipeSpec(name=name, config_cls=config, run=run, needs_cuda=needs_cuda,
                                     estimate_memory_gb=memory or (lambda c: 1.0), help=help or (run.__doc__ or ""))
        return run

    return register


def _load_all() -> None:
    for module in MODULES:
        importlib.import_module(f"training.recipes.{module}")


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> RecipeSpec:
    """The recipe called `name`, or a one-line `UserError` with the nearest name."""
    _load_all()
    if name not in _REGISTRY:
        hint = nearest(name, list(_REGISTRY))
        raise UserError(f"Unknown recipe `{name}`." + (f" Did you mean `{hint}`?" if hint else "")
                        + f" Recipes: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]


def validate(name: str, params: dict[str, Any], *, device: str | None = None, check_files: bool = True) -> Any:
    """Submit-time check: the config, or a `UserError` (incl. a CUDA-only recipe on a box without CUDA)."""
    spec = get(name)
    config = parse_params(spec, params, check_files=check_files)
    if spec.needs_cuda and device is not None and device != "cuda":
        raise UserError(f"Recipe {name} needs a CUDA GPU (4-bit bitsandbytes); no CUDA worker/device here. "
                        "Use `lora` on CPU, or run a worker with `--device cuda`.")
    return config


__all__ = ["RecipeSpec", "RunContext", "get", "names", "parse_params", "recipe", "validate"]
