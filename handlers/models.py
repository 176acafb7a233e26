"""Level 2, local and served models: `/models list | pull NAME | use NAME | info NAME`.

    /models info deepseek-r1:1.5b-qwen-distill-q4_K_M ctx=8192
    /models use llama3.1:8b
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator

from bot import channels
from bot.commands import Opt
from bot.config import Settings
from bot.context import Context
from bot.errors import ModelUnavailable, UserError
from bot.llm import names
from bot.llm.base import ModelInfo
from bot.messages import Incoming, Reply
from bot.router import command

DEFAULT_CTX = 8192


@command("models", help="List, download, inspect and pick models",
         usage="/models list | pull NAME | use NAME | info NAME",
         subcommands={"list": "models the backends serve", "pull": "NAME: download to Ollama",
                      "use": "NAME: answer with it in this channel (default = reset)",
                      "info": "NAME: family, size, quantization, memory estimate"},
         options={"ctx": Opt(int, min=128, max=2_097_152, help="context length for the memory estimate")})
async def models(msg: Incoming, ctx: Context) -> AsyncIterator[Reply]:
    assert msg.command is not None
    sub, *rest = msg.command.args
    if sub != "list" and not rest:
        raise UserError(f"Name the model: /models {sub} NAME (e.g. llama3.1:8b).")
    if sub == "list":
        yield await _list(msg, ctx)
    elif sub == "use":
        yield await _use(msg, ctx, rest[0])
    elif sub == "info":
        yield await _info(ctx, rest[0], msg.command.options.get("ctx"))
    else:
        async for reply in _pull(ctx, rest[0]):
            yield reply


async def _list(msg: Incoming, ctx: Context) -> Reply:
    chan = await channels.load(ctx.db, msg)
    active = await ctx.models.active()
    lines = []
    for backend in ctx.models.backends.values():
        try:
            infos = await backend.list_models()
        except ModelUnavailable as err:
            lines.append(f"{backend.name}: unavailable ({err})")
            continue
        marker = " (default backend)" if backend is active else ""
        lines.append(f"{backend.name}{marker}:")
        for info in infos:
            using = " ← this channel" if info.name == chan.model else ""
            size = f" {info.size_bytes / 1e9:.1f} GB" if info.size_bytes else ""
            quant = f" {info.quantization}" if info.quantization else ""
            lines.append(f"  {info.name}{size}{quant}{using}")
        if not infos:
            lines.append("  (none; /models pull NAME)")
    return Reply(text="\n".join(lines))


async def _use(msg: Incoming, ctx: Context, name: str) -> Reply:
    if name == "default":
        await channels.update(ctx.db, msg, model=None, backend=None)
        return Reply(text="This channel now uses the default model.")
    backend, info = await ctx.models.find(name)
    await channels.update(ctx.db, msg, model=info.name, backend=backend.name)
    return Reply(text=f"This channel now answers with {info.name} ({backend.name}).")


async def _pull(ctx: Context, name: str) -> AsyncIterator[Reply]:
    backend = ctx.models.backend("ollama")
    last = ""
    async for p in backend.pull(name):
        if p.total:
            line = f"Pulling {name}: {p.status} {100 * (p.completed or 0) / p.total:.0f}% " \
                   f"({(p.completed or 0) / 1e9:.2f}/{p.total / 1e9:.2f} GB)"
        else:
            line = f"Pulling {name}: {p.status}"
        if line != last:
            last = line
            yield Reply(text=line, partial=True)
    yield Reply(text=f"Pulled {name}. Use it here with /models use {name}")


async def _info(ctx: Context, name: str, ctx_len: int | None) -> Reply:
    try:
        decoded = names.decode(name)
    except ValueError as err:
        raise UserError(str(err)) from None
    served: ModelInfo | None = None
    for backend in ctx.models.backends.values():
        try:
            served = await backend.show(name)
        except ModelUnavailable:
            continue
        if served:
            break
    if served and served.quantization and not decoded.quantization:
        decoded = dataclasses.replace(decoded, quantization=served.quantization.upper())
    params = names.parse_size(served.parameter_size) if served and served.parameter_size else None
    arch = names.Arch.from_modelinfo(served.details) if served and served.details else None
    context = ctx_len or (min(served.context_length or DEFAULT_CTX, DEFAULT_CTX) if served else DEFAULT_CTX)
    gpu, cpu = memory_budget(ctx.settings)
    try:
        estimate = names.estimate_memory(decoded, context, arch=arch, parameters_b=params)
    except names.ModelNameError as err:
        estimate, lines = None, [names.describe(decoded), f"No memory estimate: {err}"]
    else:
        lines = [names.describe(decoded, estimate, gpu_gb=gpu, cpu_gb=cpu)]
    if served:
        lines.append(f"Served by {served.backend}: context length {served.context_length or '?'}, "
                     f"quantization {served.quantization or '?'}"
                     + (f", license: {served.license}" if served.license else ""))
    return Reply(text="\n".join(lines))


@functools.cache
def _detect_gpu_gb() -> float | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_properties(0).total_memory / 2**30
    except Exception:
        return None
    return None


def memory_budget(settings: Settings) -> tuple[float | None, float | None]:
    """(GPU GB, CPU GB) the estimate is compared against: configured, else detected."""
    import psutil

    gpu = settings.gpu_memory_gb if settings.gpu_memory_gb is not None else _detect_gpu_gb()
    cpu = settings.cpu_memory_gb if settings.cpu_memory_gb is not None else psutil.virtual_memory().total / 2**30
    return gpu, cpu
