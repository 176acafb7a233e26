"""What every recipe shares: its spec, the run context the worker gives it, and parameter validation.

A recipe is a config dataclass plus `run(ctx) -> metrics`. `/train lora base=smollm2 steps=20` reaches
`parse_params(spec, {"base": "smollm2", "steps": "20"})`, which returns the config or raises a
one-line `UserError` (unknown key with the nearest suggestion, bad type, out of range, unknown base
model, missing dataset) before anything is queued.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bot.commands import nearest
from bot.errors import UserError

BUILTIN_BASES = {"smollm2": 134_515_008, "tiny-llama": 150_000}  # name -> parameter count


@dataclass(frozen=True)
class RecipeSpec:
    name: str
    config_cls: type
    run: Callable[[RunContext], dict[str, Any]]
    needs_cuda: bool = False
    estimate_memory_gb: Callable[[Any], float] = lambda config: 1.0
    help: str = ""


class RunContext(Protocol):
    """What a recipe may use while it runs; the worker implements it (tests use `testing.LocalRunContext`)."""

    job_id: int
    config: Any
    workdir: Path
    device: str  # "cpu" | "cuda"
    resume_from: Path | None

    def emit(self, kind: str, **data: Any) -> None: ...  # progress | metric | log
    def artifact(self, kind: str, path: Path, **meta: Any) -> None: ...  # adapter | model | tokenizer | plot | report
    def should_stop(self) -> bool: ...
    def checkpoint(self, path: Path) -> None: ...


def opt(default: Any, *, min: float | None = None, max: float | None = None,
        choices: tuple[str, ...] | None = None, help: str = "") -> Any:
    """A config field with a range or choices that `parse_params` enforces."""
    meta = {"min": min, "max": max, "choices": choices, "help": help}
    return field(default=default, metadata=meta)


@dataclass
class CommonConfig:
    """Fields every fine-tuning recipe takes; `/train lora base=smollm2 data=FILE steps=60 lr=2e-4`."""

    base: str = opt("smollm2", help="smollm2 | tiny-llama | a local checkpoint directory")
    data: str = opt("", help="JSONL/JSON file path, kb, kb:SOURCE or threads")
    steps: int = opt(60, min=1, max=1_000_000)
    batch_size: int = opt(8, min=1, max=1024)
    grad_accum: int = opt(1, min=1, max=1024)
    lr: float = opt(2e-4, min=1e-7, max=1.0)
    warmup_steps: int = opt(0, min=0, max=100_000)
    max_length: int = opt(256, min=8, max=32_768)
    held_out: float = opt(0.1, min=0.0, max=0.5, help="fraction of examples kept out for perplexity")
    max_eval: int = opt(100, min=0, max=100_000, help="at most this many held-out examples are scored")
    eval_every: int = opt(0, min=0, max=1_000_000, help="0 = only before and after")
    checkpoint_every: int = opt(50, min=0, max=1_000_000)
    log_every: int = opt(5, min=1, max=100_000)
    seed: int = opt(1337, min=0, max=2**31 - 1)
    threads: int = opt(0, min=0, max=512, help="torch CPU threads; 0 = all cores")
    samples: int = opt(3, min=0, max=20, help="fixed prompts generated before and after")
    max_new_tokens: int = opt(48, min=1, max=4096)
    dtype: str = opt("auto", choices=("auto", "float32", "bfloat16"))
    limit: int = opt(0, min=0, max=10_000_000, help="use only the first N examples (0 = all)")

    def validate(self, check_files: bool = True) -> None:
        check_base(self.base)
        if check_files:
            from training.data import check_source

            check_source(self.data)


def _type_name(tp: Any) -> str:
    return {int: "a whole number", float: "a number", bool: "true or false", str: "text"}.get(tp, str(tp))


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """`int | None` -> (int, True)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def convert(key: str, raw: Any, tp: Any) -> Any:
    tp, optional = _unwrap(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("", "none", "null"))):
        return None
    if not isinstance(raw, str):
        raw = json.dumps(raw) if not isinstance(raw, int | float | bool) else str(raw)
    try:
        if tp is bool:
            low = raw.lower()
            if low in ("true", "yes", "1", "on"):
                return True
            if low in ("false", "no", "0", "off"):
                return False
            raise ValueError
        if tp is int:
            value = float(raw)
            if value != int(value):
                raise ValueError
            return int(value)
        if tp is float:
            return float(raw)
    except ValueError:
        raise UserError(f"`{key}={raw}`: {key} must be {_type_name(tp)}.") from None
    return raw


def parse_params(spec: RecipeSpec, params: dict[str, Any], *, check_files: bool = True) -> Any:
    """Strings from `/train` -> the recipe's validated config dataclass; one-line `UserError` otherwise.

        >>> from training.recipes import get
        >>> parse_params(get("lora"), {"base": "tiny-llama", "data": "kb", "steps": "5"}).steps
        5
    """
    fields = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    hints = typing.get_type_hints(spec.config_cls)
    values: dict[str, Any] = {}
    for key, raw in params.items():
        if key not in fields:
            hint = nearest(key, list(fields))
            suggestion = f" Did you mean `{hint}`?" if hint else ""
            raise UserError(f"Unknown parameter `{key}` for recipe {spec.name}.{suggestion} "
                            f"Known: {', '.join(sorted(fields))}.")
        value = convert(key, raw, hints[key])
        meta = fields[key].metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise UserError(f"`{key}={value}`: choose one of {', '.join(meta['choices'])}.")
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = meta.get("min"), meta.get("max")
            if (low is not None and value < low) or (high is not None and value > high):
                raise UserError(f"`{key}={value}` is out of range: {key} must be between {low} and {high}.")
        values[key] = value
    config = spec.config_cls(**values)
    check = getattr(config, "validate", None)
    if check is not None:
        check(check_files=check_files)
    return config


def check_base(base: str) -> None:
    """A base model is a built-in name or a local checkpoint directory (config.json inside)."""
    if base in BUILTIN_BASES:
        return
    path = Path(base).expanduser()
    if (path / "config.json").exists():
        return
    known = ", ".join(BUILTIN_BASES)
    raise UserError(f"Unknown base model `{base}`: use {known} or a local checkpoint directory with a config.json.")


def parameter_count(base: str) -> int:
    """Rough parameter count of a base (for memory estimates), from config.json when it is a path."""
    if base in BUILTIN_BASES:
        return BUILTIN_BASES[base]
    try:
        cfg = json.loads((Path(base).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return 1_000_000_000
    hidden, layers = cfg.get("hidden_size", 2048), cfg.get("num_hidden_layers", 24)
    inter, vocab = cfg.get("intermediate_size", 4 * hidden), cfg.get("vocab_size", 32_000)
    return layers * (4 * hidden * hidden + 3 * hidden * inter) + vocab * hidden * (1 if cfg.get(
        "tie_word_embeddings") else 2)


def activation_gb(config: Any, hidden: int = 576, layers: int = 30) -> float:
    """Activations kept for backward: ~ tokens x hidden x layers x 34 bytes (fp32, no checkpointing)."""
    tokens = getattr(config, "batch_size", 8) * getattr(config, "max_length", 256)
    return tokens * hidden * layers * 34 / 1e9
