"""`/train distill teacher=llama3.1:8b base=smollm2 data=kb steps=60`: a teacher answers, the student learns.

Questions come from a file (`questions=PATH`: one per line, or JSONL with `question`/`instruction`),
or from the knowledge base (`data=kb[:SOURCE]`: the first message of each thread, else each document's
title turned into "What does the documentation say about TITLE?"). The teacher is any model the bot
can reach through `bot.llm` (Ollama, an OpenAI-compatible server, the embedded model), or a
`ChatModel` given as `ctx.teacher`. Its answers become SFT examples for the `lora` recipe.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.errors import UserError
from training.recipes import recipe
from training.recipes.base import RunContext, opt
from training.recipes.lora import LoraConfig, lora_memory_gb


@dataclass
class DistillConfig(LoraConfig):
    teacher: str = opt("", help="model name the bot can use (empty = the bot's default model)")
    teacher_backend: str = opt("", help="ollama | openai | local (empty = the bot's choice)")
    questions: str = opt("", help="a file of questions; empty = drawn from data=kb")
    max_questions: int = opt(200, min=1, max=100_000)
    data: str = opt("kb", help="kb[:SOURCE] when questions= is not given")
    system: str = opt("Answer clearly and concisely.")

    def validate(self, check_files: bool = True) -> None:
        from training.recipes.base import check_base

        check_base(self.base)
        if check_files and self.questions and not Path(self.questions).expanduser().is_file():
            raise UserError(f"Question file `{self.questions}` not found.")


def read_questions(path: str) -> list[str]:
    out = []
    for number, line in enumerate(Path(path).expanduser().read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{Path(path).name} line {number}: not valid JSON ({err.msg}).") from None
            line = rec.get("question") or rec.get("instruction") or ""
            if not isinstance(line, str) or not line.strip():
                raise UserError(f"{Path(path).name} line {number}: needs a `question` string.")
        out.append(line)
    if not out:
        raise UserError(f"{Path(path).name}: no questions.")
    return out


def kb_questions(database_url: str, data: str) -> list[str]:
    from training.data import kb_documents, thread_pair

    source = data.partition(":")[2] or None
    out = []
    for title, meta, text in kb_documents(database_url, source):
        pair = thread_pair(text, meta)
        out.append(pair.prompt[-1]["content"] if pair else f"What does the documentation say about {title}?")
    return out


async def ask_teacher(teacher: Any, questions: list[str], system: str, max_tokens: int,
                      ctx: RunContext) -> list[Any]:
    from bot.llm.base import ChatMessage
    from training.data import SFTExample

    examples = []
    for i, question in enumerate(questions, 1):
        if ctx.should_stop():
            break
        result = await teacher.chat([ChatMessage("system", system), ChatMessage("user", question)],
                                    max_tokens=max_tokens)
        if result.text.strip():
            examples.append(SFTExample(({"role": "user", "content": question},
                                        {"role": "assistant", "content": result.text.strip()})))
        ctx.emit("progress", step=0, total=ctx.config.steps, phase="teacher", answered=i, questions=len(questions))
    return examples


async def resolve_teacher(config: Any) -> Any:
    from bot.config import Settings
    from bot.llm.hub import ModelHub

    hub = ModelHub.from_settings(Settings())
    return await hub.model_for(channel_model=config.teacher or None, channel_backend=config.teacher_backend or None)


@recipe("distill", config=DistillConfig, memory=lora_memory_gb, help="teacher answers, student LoRA learns")
def run(ctx: RunContext) -> dict[str, Any]:
    """Distil a teacher's answers into a LoRA student; the Q/A pairs are kept as distill.jsonl."""
    from training.recipes.lora import train_lora

    config = ctx.config
    cache = ctx.workdir / "distill.jsonl"
    if cache.exists():  # resumed: do not ask the teacher twice
        from training.data import load

        examples = load(str(cache), "sft")
    else:
        if config.questions:
            questions = read_questions(config.questions)
        else:
            url = getattr(ctx, "database_url", None) or os.environ.get("DATABASE_URL")
            if not url:
                raise UserError("distill needs questions=FILE or the knowledge base (DATABASE_URL).")
            questions = kb_questions(url, config.data)
        questions = questions[:config.max_questions]
        teacher = getattr(ctx, "teacher", None)
        examples = asyncio.run(_answers(teacher, config, questions, ctx))
        if len(examples) < 2:
            raise UserError(f"The teacher answered {len(examples)} question(s); need at least 2 to train.")
        cache.write_text("".join(json.dumps({"messages": list(ex.messages)}) + "\n" for ex in examples))
        ctx.artifact("dataset", cache)
    metrics = train_lora(ctx, examples)
    return {**metrics, "distilled_examples": len(examples)}


async def _answers(teacher: Any, config: Any, questions: list[str], ctx: RunContext) -> list[Any]:
    teacher = teacher or await resolve_teacher(config)
    return await ask_teacher(teacher, questions, config.system, config.max_new_tokens * 4, ctx)
